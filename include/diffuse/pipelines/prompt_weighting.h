// A1111-style weighted and long prompt encoding (stable-diffusion-webui's
// modules/sd_hijack_clip.py `FrozenCLIPEmbedderWithCustomWordsBase.forward`): the prompt is parsed
// for emphasis and BREAK, cut into 75-token chunks (prompt_parser.h), every chunk is run through
// the text encoder as its own 77-token CLIP input, each token's embedding is multiplied by its
// weight and the chunk is rescaled to its unweighted mean, and the chunks are concatenated along
// the token axis: [1, 77 * chunks, D]. The UNet's cross-attention accepts any context length.
// docs/prompt_syntax.md describes the syntax for users.
//
// Exactness: a prompt with no special syntax and at most 75 tokens gives exactly (bit for bit)
// the embeddings of diffusers' encode_prompt: one chunk with the ids of
// tokenizer(prompt, padding="max_length", truncation=True), weights all 1 (no rescaling is done).
//
// Negative prompts: classifier-free guidance concatenates the negative and positive embeddings
// into one batch, so both must have the same length. As A1111 does (its `pad_cond_uncond`), the
// one with fewer chunks is extended with empty chunks (bos, eos, pad ids: the encoding of "") —
// here through `min_chunks`, or both at once with encode_weighted_prompt_pair.
//
// Thread-safety: the functions only read the tokenizer and the model; they may run concurrently
// as far as the model's forward allows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/models/clip_text_model.h"
#include "diffuse/tokenizers/clip_tokenizer.h"
#include "diffuse/tokenizers/prompt_parser.h"

namespace diffuse {

struct PromptWeightingOptions {
  // false: the prompt is literal text (A1111's emphasis "None"); long prompts are still chunked.
  bool parse_emphasis = true;
  // A1111's "Original" emphasis rescales each chunk to its unweighted mean; false is its
  // "No norm" mode (z * weight only).
  bool restore_mean = true;
  // A1111's opts.comma_padding_backtrack (0 disables moving the words after the last comma).
  int64_t comma_padding_backtrack = 20;
  // The result has at least this many chunks; missing ones are empty chunks (see above).
  int64_t min_chunks = 1;
};

// The number of 77-token chunks `prompt` needs (before min_chunks padding), i.e. the chunk count
// of tokenize_prompt_chunks with chunk_length tokenizer.model_max_length() - 2. Throws
// diffuse::Error for a malformed weight or bad options.
int64_t count_prompt_chunks(const ClipTokenizer& tokenizer, std::string_view prompt,
                            const PromptWeightingOptions& options = {});

// Runs the chunks (all of length text_encoder.config().max_position_embeddings or less, equal
// lengths) through the text encoder as one batch and applies their weights:
// [1, chunks * L, D] in the encoder's output dtype. clip_skip follows diffusers:
// final_layer_norm(hidden_states[-(clip_skip + 1)]); none or 0 is last_hidden_state. Weights all
// 1.0 leave the encoder output untouched. Throws diffuse::Error for an empty chunk list, unequal
// lengths, a clip_skip outside [0, num_hidden_layers], or a chunk whose weighted mean is 0.
Tensor encode_prompt_chunks(const CLIPTextModel& text_encoder,
                            const std::vector<PromptChunk>& chunks,
                            std::optional<int64_t> clip_skip, bool restore_mean = true);

// SDXL's reading of the chunks (A1111's SDXL conditioner; diffusers' SDXL encode_prompt for a
// single chunk): hidden_states[-(2 + clip_skip)] without the final layer norm, weighted as
// above: [1, chunks * L, D]. `pooled`, when given, receives the first chunk's text_embeds
// ([1, projection_dim]; undefined for encoders without projection), as A1111 pools only the
// first chunk. Throws diffuse::Error as encode_prompt_chunks (clip_skip in [0, layers - 1]).
Tensor encode_prompt_chunks_xl(const CLIPTextModel& text_encoder,
                               const std::vector<PromptChunk>& chunks,
                               std::optional<int64_t> clip_skip, bool restore_mean = true,
                               Tensor* pooled = nullptr);

// parse + chunk, padded with empty chunks up to options.min_chunks (chunk length
// tokenizer.model_max_length() - 2).
std::vector<PromptChunk> weighted_prompt_chunks(const ClipTokenizer& tokenizer,
                                                const std::string& prompt,
                                                const PromptWeightingOptions& options = {});

// parse + chunk + encode_prompt_chunks, padded with empty chunks up to options.min_chunks:
// [1, 77 * chunks, D] for CLIP's 77-token context (chunk length tokenizer.model_max_length() - 2,
// which must not exceed the encoder's max_position_embeddings - 2). Examples: "a (cat:1.5)" is
// [1, 77, D]; a 200-token prompt is [1, 231, D]; "a BREAK b" is [1, 154, D].
Tensor encode_weighted_prompt(const ClipTokenizer& tokenizer, const CLIPTextModel& text_encoder,
                              const std::string& prompt, std::optional<int64_t> clip_skip,
                              const PromptWeightingOptions& options = {});

struct WeightedPromptEmbeds {
  Tensor prompt_embeds;           // [1, 77 * n, D]
  Tensor negative_prompt_embeds;  // [1, 77 * n, D], the same n
};

// Both prompts with the same number of chunks n = max(chunks of either, options.min_chunks), the
// shorter one padded with empty chunks. clip_skip applies to the prompt only, as diffusers'
// encode_prompt does (its negative embeddings are always last_hidden_state).
WeightedPromptEmbeds encode_weighted_prompt_pair(const ClipTokenizer& tokenizer,
                                                 const CLIPTextModel& text_encoder,
                                                 const std::string& prompt,
                                                 const std::string& negative_prompt,
                                                 std::optional<int64_t> clip_skip,
                                                 const PromptWeightingOptions& options = {});

}  // namespace diffuse
