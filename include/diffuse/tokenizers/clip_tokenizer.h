// CLIP byte-level BPE tokenizer: the same ids as transformers' slow `CLIPTokenizer` (with ftfy
// installed) for the tokenizer folders of SD 1.x/2.x/XL/3 and Flux (`tokenizer/`, `tokenizer_2/`).
//
// Pipeline of encode(), as transformers runs it:
//   1. Invalid UTF-8 in the input is replaced by U+FFFD (a Python str cannot hold invalid UTF-8;
//      this is what bytes.decode("utf-8", "replace") would hand transformers).
//   2. The text is split around "added tokens" written literally in it (bos, eos, unk, pad,
//      additional special tokens, `added_tokens_decoder` entries): leftmost-longest, case-
//      sensitive, honoring each token's lstrip/rstrip/single_word flags. A literal
//      "<|endoftext|>" therefore becomes the eos id; with SD 2.x's pad_token "!" every '!' becomes
//      id 0, exactly as transformers does (diffusers issue #4153).
//   3. Every other piece: ftfy fix_text (see src/tokenizers/text_fix.h for the subset: HTML
//      entities, C1 controls, Latin ligatures, full/half-width forms, curly quotes, line breaks,
//      terminal escapes, control characters, NFC; not the mojibake repair), whitespace collapsed
//      and stripped, Python str.lower(), then CLIP's pre-tokenizer
//      `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//      (case-insensitive; letters/numbers by Unicode general category via utf8proc).
//   4. Each match: UTF-8 bytes -> GPT-2 byte-to-unicode symbols, the last one suffixed "</w>",
//      merged greedily by merge rank; unknown pieces map to the unk id.
//   5. bos + ids + eos.
//
// Thread-safety: a ClipTokenizer is immutable after from_folder() except for its internal BPE
// merge cache, which is guarded by a mutex; all const member functions may be called
// concurrently. The object is movable, not copyable.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace diffuse {

class ClipTokenizer {
 public:
  // Loads a Hugging Face CLIP tokenizer folder: vocab.json and merges.txt (required),
  // tokenizer_config.json and special_tokens_map.json (optional; special tokens default to
  // CLIPTokenizer's: bos "<|startoftext|>", eos = pad = unk "<|endoftext|>"), added_tokens.json
  // (optional, legacy). As in transformers, special_tokens_map.json overrides tokenizer_config.json
  // unless the config carries `added_tokens_decoder` (the newer single-file format); only the
  // first 48 894 merges are used (CLIPTokenizer's 49152 - 256 - 2). `model_max_length` comes from
  // tokenizer_config.json (77 when absent: CLIP's context length). Throws diffuse::Error naming the
  // file (and line or key) when a file is missing, unreadable or malformed, or when a special token
  // is not a string.
  static ClipTokenizer from_folder(const std::filesystem::path& folder);

  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;
  ~ClipTokenizer();

  // tok(text).input_ids: bos + token ids + eos, not truncated. Any bytes are accepted.
  std::vector<int64_t> encode(std::string_view text) const;
  // tok(text, padding="max_length", max_length=max_length, truncation=True).input_ids, what the
  // SD pipelines feed the text encoder: bos + at most max_length - 2 token ids + eos, then pad ids
  // up to max_length. Requires max_length >= 2 (throws diffuse::Error otherwise).
  std::vector<int64_t> encode_padded(std::string_view text, int64_t max_length = 77) const;
  // tok(text, add_special_tokens=False).input_ids: token ids without bos/eos, not truncated.
  std::vector<int64_t> encode_without_special_tokens(std::string_view text) const;
  // convert_ids_to_tokens(encode(text)): the vocabulary strings (byte-level symbols, "</w>" marks
  // a word end), bos and eos included.
  std::vector<std::string> tokens(std::string_view text) const;

  // The vocabulary string of `id`; throws diffuse::Error when id is out of range.
  const std::string& id_to_token(int64_t id) const;
  // The id of a vocabulary string, or -1 when it is not in the vocabulary.
  int64_t token_to_id(std::string_view token) const;

  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t pad_id() const;
  int64_t unk_id() const;
  // len(tokenizer): vocab.json entries plus added tokens that are not in it.
  int64_t vocab_size() const;
  int64_t model_max_length() const;

 private:
  struct Impl;
  explicit ClipTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
