// A1111 / ComfyUI-style prompt syntax: emphasis weights, BREAK, and prompts longer than one
// CLIP context, encoded as 75-token chunks (stable-diffusion-webui's modules/prompt_parser.py
// `parse_prompt_attention` and modules/sd_hijack_clip.py `tokenize_line`). docs/prompt_syntax.md
// has the user-facing description.
//
// Syntax (weights multiply; nesting multiplies again):
//   (text)        weight x 1.1          ((text)) x 1.21, (((text))) x 1.331
//   [text]        weight / 1.1          [[text]] / 1.21
//   (text:1.3)    weight x 1.3 (any [+-]?digits-and-one-dot number; 0 and negatives allowed)
//   \( \) \[ \]   literal brackets;  \\  a literal backslash;  a lone '\' is dropped
//   BREAK         (upper case, as a whole word) ends the current 75-token chunk
//   anything else is text with weight 1.0, including ':' that is not part of "(text:number)".
// Unbalanced brackets behave as in A1111: an unclosed '(' or '[' applies its factor up to the end
// of the prompt, an unmatched ')' or ']' is kept as text, "text:1.3)" without an open '(' is
// text. A weight that is not a number ("(a:1.2.3)") is an error (A1111 raises too).
// Differences from A1111, on purpose: BREAK inside brackets still breaks (A1111 multiplies its
// marker weight and then feeds the word "BREAK" to CLIP); ids after the closing eos are pad ids
// even when the prompt itself contains "<|endoftext|>" (diffusers' padding). Prompt editing
// ("[a:b:0.5]", "[a|b]"), AND, and extra-network tags ("<lora:name:1>") are not interpreted here:
// they stay text.
//
// Chunking (tokenize_prompt_chunks): fragments are tokenized one by one (no bos/eos) and packed
// into chunks of 75 tokens, each wrapped as bos + 75 + eos = 77 ids, short chunks padded with
// pad ids (weight 1.0 for bos, eos and padding). When a chunk is full and the last comma is at
// most comma_padding_backtrack (20) tokens back, the tokens after that comma move to the next
// chunk. A prompt without special syntax and with at most 75 tokens gives exactly one chunk equal
// to ClipTokenizer::encode_padded(prompt, 77), the ids diffusers uses.
//
// Weighting (apply_prompt_weights): A1111's "Original" emphasis, z *= weight per token, then
// z *= mean(z before) / mean(z after), per chunk.
//
// All functions are pure and thread-safe (the tokenizer's own contract applies).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/tokenizers/clip_tokenizer.h"

namespace diffuse {

// One piece of a parsed prompt: text with its weight, or a BREAK marker (text empty, weight 1).
struct PromptFragment {
  std::string text;
  double weight = 1.0;
  bool is_break = false;

  bool operator==(const PromptFragment&) const = default;
};

// parse_prompt_attention: the prompt's fragments in order, neighbouring fragments of identical
// weight merged; never empty (an empty prompt gives one fragment {"", 1.0}). Invalid UTF-8 is
// replaced by U+FFFD. Weights are computed in double like A1111 (e.g. "(((house:1.3))" gives
// 1.3 * 1.1 * 1.1 = 1.5730000000000004). Throws diffuse::Error for a non-numeric weight.
std::vector<PromptFragment> parse_prompt_attention(std::string_view prompt);

// One CLIP input of chunk_length + 2 ids with one weight per id.
struct PromptChunk {
  std::vector<int64_t> ids;
  std::vector<float> weights;
};

struct PromptChunkOptions {
  // false: the whole prompt is one fragment of weight 1 (A1111's emphasis "None").
  bool parse_emphasis = true;
  // Tokens per chunk between bos and eos (75 for CLIP's 77-token context).
  int64_t chunk_length = 75;
  // A1111's opts.comma_padding_backtrack; 0 disables moving text after the last comma.
  int64_t comma_padding_backtrack = 20;
};

// tokenize_line: the prompt as one or more chunks (at least one). BREAK starts a new chunk even
// when the current one is empty (giving an all-padding chunk, as A1111). Throws diffuse::Error for
// options out of range (chunk_length < 1, comma_padding_backtrack < 0) or a bad weight.
std::vector<PromptChunk> tokenize_prompt_chunks(const ClipTokenizer& tokenizer,
                                                std::string_view prompt,
                                                const PromptChunkOptions& options = {});

// A chunk with no prompt tokens: bos, eos, then pad ids; weights 1. Used to give a positive and a
// negative prompt the same number of chunks.
PromptChunk empty_prompt_chunk(const ClipTokenizer& tokenizer, int64_t chunk_length = 75);

// Stacks chunks into tensors: ids int64 [chunks, L] and weights f32 [chunks, L]. All chunks must
// have the same length L (throws diffuse::Error otherwise, or when `chunks` is empty).
Tensor prompt_chunk_ids(const std::vector<PromptChunk>& chunks);
Tensor prompt_chunk_weights(const std::vector<PromptChunk>& chunks);

// A1111's emphasis on text-encoder outputs. z: [chunks, L, D] (f32, f16 or bf16; computed in f32,
// returned in z's dtype, new storage), weights: [chunks, L]. Each chunk c becomes
// z[c] * weights[c][:, None], and with restore_mean also times mean(z[c]) / mean(z[c] * w) so the
// overall mean is unchanged (means accumulated in double, products rounded to f32 like torch).
// Throws diffuse::Error for mismatched shapes, a non-floating z, or (restore_mean) a chunk whose
// weighted mean is 0 or not finite.
Tensor apply_prompt_weights(const Tensor& z, const Tensor& weights, bool restore_mean = true);

}  // namespace diffuse
