// Mirrors stable-diffusion-webui's modules/prompt_parser.py (parse_prompt_attention),
// modules/sd_hijack_clip.py (tokenize_line) and modules/sd_emphasis.py (EmphasisOriginal).
#include "diffuse/tokenizers/prompt_parser.h"

#include <charconv>
#include <cmath>
#include <optional>

#include "diffuse/core/error.h"
#include "src/tokenizers/unicode_text.h"

namespace diffuse {

namespace {

using tokenizers::unicode::decode_utf8;
using tokenizers::unicode::encode_utf8;

// A1111: round_bracket_multiplier = 1.1, square_bracket_multiplier = 1 / 1.1.
constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;

// Python's \w on str: letters, digits/numerics, underscore.
bool is_word_char(char32_t c) {
  return c == U'_' || tokenizers::unicode::is_letter(c) || tokenizers::unicode::is_number(c);
}

bool is_ascii_digit(char32_t c) {
  return c >= U'0' && c <= U'9';
}

// The working list of parse_prompt_attention: like A1111's res, with BREAK as a flag.
struct Piece {
  std::u32string text;
  double weight = 1.0;
  bool is_break = false;
};

// re.split(r"\s*\bBREAK\b\s*", text), appending parts and BREAK markers to `res`.
void append_text(std::u32string_view text, std::vector<Piece>& res) {
  static constexpr std::u32string_view kBreak = U"BREAK";
  std::size_t part_start = 0;
  std::size_t search = 0;
  while (search + kBreak.size() <= text.size()) {
    const std::size_t k = text.find(kBreak, search);
    if (k == std::u32string_view::npos) break;
    const std::size_t after = k + kBreak.size();
    const bool boundary_before = k == 0 || !is_word_char(text[k - 1]);
    const bool boundary_after = after == text.size() || !is_word_char(text[after]);
    if (!boundary_before || !boundary_after) {
      search = k + 1;
      continue;
    }
    // The match also takes the whitespace around the word (not before the previous match's end).
    std::size_t begin = k;
    while (begin > part_start && tokenizers::unicode::is_space(text[begin - 1])) --begin;
    std::size_t end = after;
    while (end < text.size() && tokenizers::unicode::is_space(text[end])) ++end;
    res.push_back({std::u32string(text.substr(part_start, begin - part_start)), 1.0, false});
    res.push_back({std::u32string(), 1.0, true});
    part_start = end;
    search = end;
  }
  res.push_back({std::u32string(text.substr(part_start)), 1.0, false});
}

// Python float() of the weight group [+-]?[.\d]+ (ASCII digits): one optional sign, at least one
// digit, at most one '.'.
std::optional<double> parse_weight(std::u32string_view s) {
  std::string ascii;
  for (char32_t c : s) ascii.push_back(static_cast<char>(c));
  std::size_t i = 0;
  bool negative = false;
  if (i < ascii.size() && (ascii[i] == '+' || ascii[i] == '-')) negative = ascii[i++] == '-';
  std::string number = ascii.substr(i);
  std::size_t digits = 0, dots = 0;
  for (char c : number) {
    if (c == '.') {
      ++dots;
    } else {
      ++digits;
    }
  }
  if (digits == 0 || dots > 1) return std::nullopt;
  if (number.front() == '.') number.insert(number.begin(), '0');
  if (number.back() == '.') number.pop_back();
  double value = 0;
  const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc() || ptr != number.data() + number.size()) return std::nullopt;
  return negative ? -value : value;
}

}  // namespace

std::vector<PromptFragment> parse_prompt_attention(std::string_view prompt) {
  const std::u32string text = decode_utf8(prompt);
  std::vector<Piece> res;
  std::vector<std::size_t> round_brackets;
  std::vector<std::size_t> square_brackets;

  auto multiply_range = [&](std::size_t start, double multiplier) {
    for (std::size_t p = start; p < res.size(); ++p) {
      if (!res[p].is_break) res[p].weight *= multiplier;
    }
  };

  // re_attention, alternative by alternative, in A1111's order.
  std::size_t pos = 0;
  const std::size_t n = text.size();
  while (pos < n) {
    const char32_t c = text[pos];
    if (c == U'\\') {
      // \( \) \[ \] \\ -> the character; a lone backslash -> nothing.
      if (pos + 1 < n && (text[pos + 1] == U'(' || text[pos + 1] == U')' || text[pos + 1] == U'[' ||
                          text[pos + 1] == U']' || text[pos + 1] == U'\\')) {
        res.push_back({std::u32string(1, text[pos + 1]), 1.0, false});
        pos += 2;
      } else {
        res.push_back({std::u32string(), 1.0, false});
        pos += 1;
      }
      continue;
    }
    if (c == U'(') {
      round_brackets.push_back(res.size());
      ++pos;
      continue;
    }
    if (c == U'[') {
      square_brackets.push_back(res.size());
      ++pos;
      continue;
    }
    if (c == U':') {
      // :([+-]?[.\d]+)\)
      std::size_t end = pos + 1;
      if (end < n && (text[end] == U'+' || text[end] == U'-')) ++end;
      const std::size_t run_begin = end;
      while (end < n && (text[end] == U'.' || is_ascii_digit(text[end]))) ++end;
      if (end > run_begin && end < n && text[end] == U')') {
        const std::u32string_view group(text.data() + pos + 1, end - pos - 1);
        if (!round_brackets.empty()) {
          const std::optional<double> weight = parse_weight(group);
          DIFFUSE_CHECK(weight.has_value(), "parse_prompt_attention: invalid weight '",
                        encode_utf8(group), "' at character ", pos + 1,
                        " of the prompt (expected a number such as 1.3)");
          multiply_range(round_brackets.back(), *weight);
          round_brackets.pop_back();
        } else {
          append_text(std::u32string_view(text.data() + pos, end + 1 - pos), res);
        }
        pos = end + 1;
        continue;
      }
      append_text(U":", res);
      ++pos;
      continue;
    }
    if (c == U')' && !round_brackets.empty()) {
      multiply_range(round_brackets.back(), kRoundMultiplier);
      round_brackets.pop_back();
      ++pos;
      continue;
    }
    if (c == U']' && !square_brackets.empty()) {
      multiply_range(square_brackets.back(), kSquareMultiplier);
      square_brackets.pop_back();
      ++pos;
      continue;
    }
    if (c == U')' || c == U']') {
      append_text(std::u32string_view(&text[pos], 1), res);
      ++pos;
      continue;
    }
    // [^\\()\[\]:]+
    std::size_t end = pos;
    while (end < n && text[end] != U'\\' && text[end] != U'(' && text[end] != U')' &&
           text[end] != U'[' && text[end] != U']' && text[end] != U':') {
      ++end;
    }
    append_text(std::u32string_view(text.data() + pos, end - pos), res);
    pos = end;
  }
  for (std::size_t start : round_brackets) multiply_range(start, kRoundMultiplier);
  for (std::size_t start : square_brackets) multiply_range(start, kSquareMultiplier);
  if (res.empty()) res.push_back({std::u32string(), 1.0, false});

  // Merge runs of identical weights (never across a BREAK).
  std::vector<PromptFragment> out;
  for (const Piece& p : res) {
    if (!out.empty() && !p.is_break && !out.back().is_break && out.back().weight == p.weight) {
      out.back().text += encode_utf8(p.text);
    } else {
      out.push_back({encode_utf8(p.text), p.weight, p.is_break});
    }
  }
  return out;
}

PromptChunk empty_prompt_chunk(const ClipTokenizer& tokenizer, int64_t chunk_length) {
  DIFFUSE_CHECK(chunk_length >= 1, "empty_prompt_chunk: chunk_length must be >= 1, got ",
                chunk_length);
  DIFFUSE_CHECK(tokenizer.pad_id() >= 0, "empty_prompt_chunk: the tokenizer has no pad token");
  PromptChunk chunk;
  chunk.ids.assign(static_cast<std::size_t>(chunk_length + 2), tokenizer.pad_id());
  chunk.ids[0] = tokenizer.bos_id();
  chunk.ids[1] = tokenizer.eos_id();
  chunk.weights.assign(chunk.ids.size(), 1.0f);
  return chunk;
}

std::vector<PromptChunk> tokenize_prompt_chunks(const ClipTokenizer& tokenizer,
                                                std::string_view prompt,
                                                const PromptChunkOptions& options) {
  const int64_t length = options.chunk_length;
  DIFFUSE_CHECK(length >= 1, "tokenize_prompt_chunks: chunk_length must be >= 1, got ", length);
  DIFFUSE_CHECK(options.comma_padding_backtrack >= 0,
                "tokenize_prompt_chunks: comma_padding_backtrack must be >= 0, got ",
                options.comma_padding_backtrack);
  DIFFUSE_CHECK(tokenizer.pad_id() >= 0, "tokenize_prompt_chunks: the tokenizer has no pad token");

  std::vector<PromptFragment> fragments;
  if (options.parse_emphasis) {
    fragments = parse_prompt_attention(prompt);
  } else {
    fragments.push_back({std::string(prompt), 1.0, false});
  }
  const int64_t comma = tokenizer.token_to_id(",</w>");

  std::vector<PromptChunk> chunks;
  std::vector<int64_t> ids;
  std::vector<float> weights;
  int64_t last_comma = -1;

  // Closes the current chunk: bos + tokens + eos + padding.
  auto next_chunk = [&]() {
    const std::size_t size = static_cast<std::size_t>(length) + 2;
    PromptChunk chunk;
    chunk.ids.reserve(size);
    chunk.weights.reserve(size);
    chunk.ids.push_back(tokenizer.bos_id());
    chunk.weights.push_back(1.0f);
    chunk.ids.insert(chunk.ids.end(), ids.begin(), ids.end());
    chunk.weights.insert(chunk.weights.end(), weights.begin(), weights.end());
    chunk.ids.push_back(tokenizer.eos_id());
    chunk.weights.push_back(1.0f);
    chunk.ids.resize(size, tokenizer.pad_id());
    chunk.weights.resize(size, 1.0f);
    chunks.push_back(std::move(chunk));
    ids.clear();
    weights.clear();
    last_comma = -1;
  };

  for (const PromptFragment& fragment : fragments) {
    if (fragment.is_break) {
      next_chunk();
      continue;
    }
    const float weight = static_cast<float>(fragment.weight);
    for (int64_t token : tokenizer.encode_without_special_tokens(fragment.text)) {
      const auto count = static_cast<int64_t>(ids.size());
      if (token == comma) {
        last_comma = count;
      } else if (options.comma_padding_backtrack != 0 && count == length && last_comma != -1 &&
                 count - last_comma <= options.comma_padding_backtrack) {
        // Move the words after the last comma to the next chunk.
        const auto cut = static_cast<std::size_t>(last_comma + 1);
        std::vector<int64_t> moved_ids(ids.begin() + static_cast<std::ptrdiff_t>(cut), ids.end());
        std::vector<float> moved_weights(weights.begin() + static_cast<std::ptrdiff_t>(cut),
                                         weights.end());
        ids.resize(cut);
        weights.resize(cut);
        next_chunk();
        ids = std::move(moved_ids);
        weights = std::move(moved_weights);
      }
      if (static_cast<int64_t>(ids.size()) == length) next_chunk();
      ids.push_back(token);
      weights.push_back(weight);
    }
  }
  if (!ids.empty() || chunks.empty()) next_chunk();
  return chunks;
}

namespace {

template <typename T, typename Field>
Tensor stack_chunks(const std::vector<PromptChunk>& chunks, Field field, const char* what) {
  DIFFUSE_CHECK(!chunks.empty(), what, ": no chunks");
  const std::size_t length = (chunks.front().*field).size();
  std::vector<T> flat;
  flat.reserve(chunks.size() * length);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto& values = chunks[i].*field;
    DIFFUSE_CHECK(values.size() == length, what, ": chunk ", i, " has ", values.size(),
                  " entries, chunk 0 has ", length);
    flat.insert(flat.end(), values.begin(), values.end());
  }
  return Tensor::from_vector(flat,
                             {static_cast<int64_t>(chunks.size()), static_cast<int64_t>(length)});
}

}  // namespace

Tensor prompt_chunk_ids(const std::vector<PromptChunk>& chunks) {
  return stack_chunks<int64_t>(chunks, &PromptChunk::ids, "prompt_chunk_ids");
}

Tensor prompt_chunk_weights(const std::vector<PromptChunk>& chunks) {
  return stack_chunks<float>(chunks, &PromptChunk::weights, "prompt_chunk_weights");
}

Tensor apply_prompt_weights(const Tensor& z, const Tensor& weights, bool restore_mean) {
  DIFFUSE_CHECK(z.defined() && z.dim() == 3, "apply_prompt_weights: z must be [chunks, tokens, ",
                "dim], got ", z.defined() ? shape_str(z.shape()) : std::string("undefined"));
  DIFFUSE_CHECK(is_floating(z.dtype()), "apply_prompt_weights: z must be floating point, got ",
                dtype_info(z.dtype()).name);
  DIFFUSE_CHECK(weights.defined() && weights.dim() == 2 && weights.size(0) == z.size(0) &&
                    weights.size(1) == z.size(1),
                "apply_prompt_weights: weights must be [", z.size(0), ", ", z.size(1), "], got ",
                weights.defined() ? shape_str(weights.shape()) : std::string("undefined"));
  const Tensor src = z.to(DType::f32).contiguous();
  const Tensor w = weights.to(DType::f32).contiguous();
  Tensor out = Tensor::empty(z.shape(), DType::f32);
  const int64_t chunks = z.size(0), tokens = z.size(1), dim = z.size(2);
  const float* s = src.data<float>();
  const float* wp = w.data<float>();
  float* d = out.data<float>();
  const int64_t per_chunk = tokens * dim;
  for (int64_t c = 0; c < chunks; ++c) {
    double original_sum = 0, weighted_sum = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      const float m = wp[c * tokens + t];
      for (int64_t k = 0; k < dim; ++k) {
        const int64_t i = c * per_chunk + t * dim + k;
        original_sum += s[i];
        d[i] = s[i] * m;
        weighted_sum += d[i];
      }
    }
    if (!restore_mean || per_chunk == 0) continue;
    const auto original_mean = static_cast<float>(original_sum / static_cast<double>(per_chunk));
    const auto new_mean = static_cast<float>(weighted_sum / static_cast<double>(per_chunk));
    DIFFUSE_CHECK(new_mean != 0.0f && std::isfinite(new_mean) && std::isfinite(original_mean),
                  "apply_prompt_weights: chunk ", c, " has weighted mean ", new_mean,
                  " (original mean ", original_mean, "); cannot restore the mean");
    const float scale = original_mean / new_mean;
    for (int64_t i = c * per_chunk; i < (c + 1) * per_chunk; ++i) d[i] *= scale;
  }
  return out.to(z.dtype());
}

}  // namespace diffuse
