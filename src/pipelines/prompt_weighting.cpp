// A1111's FrozenCLIPEmbedderWithCustomWordsBase.forward / process_tokens
// (stable-diffusion-webui modules/sd_hijack_clip.py) on top of prompt_parser.h.
#include "diffuse/pipelines/prompt_weighting.h"

#include <algorithm>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

PromptChunkOptions chunk_options(const ClipTokenizer& tokenizer,
                                 const PromptWeightingOptions& options) {
  // diffusers pads to tokenizer.model_max_length (77 for CLIP); a chunk is that minus bos/eos, so a
  // single chunk has exactly the ids diffusers feeds the encoder.
  const int64_t context = tokenizer.model_max_length();
  DIFFUSE_CHECK(context >= 3,
                "encode_weighted_prompt: the tokenizer's model_max_length must be >= 3 ",
                "(bos + at least one token + eos), got ", context);
  PromptChunkOptions o;
  o.parse_emphasis = options.parse_emphasis;
  o.chunk_length = context - 2;
  o.comma_padding_backtrack = options.comma_padding_backtrack;
  return o;
}

std::vector<PromptChunk> padded_chunks(const ClipTokenizer& tokenizer, const std::string& prompt,
                                       const PromptWeightingOptions& options, int64_t min_chunks) {
  const PromptChunkOptions o = chunk_options(tokenizer, options);
  std::vector<PromptChunk> chunks = tokenize_prompt_chunks(tokenizer, prompt, o);
  while (static_cast<int64_t>(chunks.size()) < min_chunks)
    chunks.push_back(empty_prompt_chunk(tokenizer, o.chunk_length));
  return chunks;
}

bool all_weights_one(const std::vector<PromptChunk>& chunks) {
  return std::all_of(chunks.begin(), chunks.end(), [](const PromptChunk& c) {
    return std::all_of(c.weights.begin(), c.weights.end(), [](float w) { return w == 1.0f; });
  });
}

}  // namespace

int64_t count_prompt_chunks(const ClipTokenizer& tokenizer, std::string_view prompt,
                            const PromptWeightingOptions& options) {
  return static_cast<int64_t>(
      tokenize_prompt_chunks(tokenizer, prompt, chunk_options(tokenizer, options)).size());
}

namespace {

// The chunks' ids through the encoder as one batch: [chunks, L] ids, the encoder output.
struct ChunkBatch {
  Tensor input_ids;
  int64_t n = 0, length = 0;
};
ChunkBatch chunk_batch(const std::vector<PromptChunk>& chunks, const char* what) {
  DIFFUSE_CHECK(!chunks.empty(), what, ": expected at least one chunk, got none");
  ChunkBatch b;
  b.input_ids = prompt_chunk_ids(chunks);  // checks equal lengths
  b.n = b.input_ids.size(0);
  b.length = b.input_ids.size(1);
  return b;
}

// Weights (unless all 1: that keeps plain prompts bit-identical to diffusers; the rescale would
// multiply by mean/mean = 1.0, but there is no reason to rely on it) and the chunks side by side.
Tensor weighted(Tensor z, const std::vector<PromptChunk>& chunks, const ChunkBatch& b,
                bool restore_mean) {
  if (!all_weights_one(chunks))
    z = apply_prompt_weights(z, prompt_chunk_weights(chunks), restore_mean);
  return z.contiguous().reshape({1, b.n * b.length, z.size(2)});
}

void check_skip(int64_t skip, int64_t max_skip, int64_t layers, const char* what) {
  DIFFUSE_CHECK(skip >= 0 && skip <= max_skip, what, ": clip_skip must be in [0, ", max_skip,
                "] for a text encoder with ", layers, " layers, got ", skip);
}

}  // namespace

Tensor encode_prompt_chunks(const CLIPTextModel& text_encoder,
                            const std::vector<PromptChunk>& chunks,
                            std::optional<int64_t> clip_skip, bool restore_mean) {
  const ChunkBatch b = chunk_batch(chunks, "encode_prompt_chunks");
  const int64_t layers = text_encoder.config().num_hidden_layers;
  const int64_t skip = clip_skip.value_or(0);
  check_skip(skip, layers, layers, "encode_prompt_chunks");

  // diffusers' convention (pipeline_stable_diffusion.py encode_prompt): clip_skip k takes
  // hidden_states[-(k + 1)] through final_layer_norm. A1111's "Clip skip: N" is k = N - 1.
  Tensor z;
  if (skip == 0) {
    z = text_encoder.forward(b.input_ids).last_hidden_state;
  } else {
    const CLIPTextOutput out = text_encoder.forward(b.input_ids, true);
    const auto states = static_cast<int64_t>(out.hidden_states.size());
    z = text_encoder.final_layer_norm(
        out.hidden_states[static_cast<std::size_t>(states - 1 - skip)]);
  }
  return weighted(z, chunks, b, restore_mean);
}

Tensor encode_prompt_chunks_xl(const CLIPTextModel& text_encoder,
                               const std::vector<PromptChunk>& chunks,
                               std::optional<int64_t> clip_skip, bool restore_mean,
                               Tensor* pooled) {
  const ChunkBatch b = chunk_batch(chunks, "encode_prompt_chunks_xl");
  const int64_t layers = text_encoder.config().num_hidden_layers;
  const int64_t skip = clip_skip.value_or(0);
  check_skip(skip, layers - 1, layers, "encode_prompt_chunks_xl");
  const CLIPTextOutput out = text_encoder.forward(b.input_ids, true);
  const auto states = static_cast<int64_t>(out.hidden_states.size());
  if (pooled != nullptr)
    *pooled = out.text_embeds.defined() ? out.text_embeds.narrow(0, 0, 1).contiguous() : Tensor();
  return weighted(out.hidden_states[static_cast<std::size_t>(states - 2 - skip)], chunks, b,
                  restore_mean);
}

std::vector<PromptChunk> weighted_prompt_chunks(const ClipTokenizer& tokenizer,
                                                const std::string& prompt,
                                                const PromptWeightingOptions& options) {
  DIFFUSE_CHECK(options.min_chunks >= 1, "weighted_prompt_chunks: min_chunks must be >= 1, got ",
                options.min_chunks);
  return padded_chunks(tokenizer, prompt, options, options.min_chunks);
}

Tensor encode_weighted_prompt(const ClipTokenizer& tokenizer, const CLIPTextModel& text_encoder,
                              const std::string& prompt, std::optional<int64_t> clip_skip,
                              const PromptWeightingOptions& options) {
  DIFFUSE_CHECK(options.min_chunks >= 1, "encode_weighted_prompt: min_chunks must be >= 1, got ",
                options.min_chunks);
  const int64_t context = tokenizer.model_max_length();
  const int64_t positions = text_encoder.config().max_position_embeddings;
  DIFFUSE_CHECK(context <= positions, "encode_weighted_prompt: the tokenizer's model_max_length (",
                context, ") exceeds the text encoder's max_position_embeddings (", positions, ")");
  return encode_prompt_chunks(text_encoder,
                              padded_chunks(tokenizer, prompt, options, options.min_chunks),
                              clip_skip, options.restore_mean);
}

WeightedPromptEmbeds encode_weighted_prompt_pair(const ClipTokenizer& tokenizer,
                                                 const CLIPTextModel& text_encoder,
                                                 const std::string& prompt,
                                                 const std::string& negative_prompt,
                                                 std::optional<int64_t> clip_skip,
                                                 const PromptWeightingOptions& options) {
  PromptWeightingOptions o = options;
  o.min_chunks = std::max({options.min_chunks, count_prompt_chunks(tokenizer, prompt, options),
                           count_prompt_chunks(tokenizer, negative_prompt, options)});
  WeightedPromptEmbeds e;
  e.prompt_embeds = encode_weighted_prompt(tokenizer, text_encoder, prompt, clip_skip, o);
  e.negative_prompt_embeds =
      encode_weighted_prompt(tokenizer, text_encoder, negative_prompt, std::nullopt, o);
  return e;
}

}  // namespace diffuse
