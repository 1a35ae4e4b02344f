// Mirrors transformers' models/clip/tokenization_clip.py (CLIPTokenizer, the slow tokenizer)
// and the parts of tokenization_utils.py (PreTrainedTokenizer.tokenize, added tokens) it relies on.
#include "diffuse/tokenizers/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
#include <queue>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"
#include "src/tokenizers/text_fix.h"
#include "src/tokenizers/unicode_text.h"

namespace diffuse {

namespace {

using tokenizers::unicode::append_utf8;
using tokenizers::unicode::decode_utf8;
using tokenizers::unicode::encode_utf8;

// CLIPTokenizer reads merges.txt lines [1, 49152 - 256 - 2 + 1): the vocabulary of OpenAI CLIP has
// 49152 entries minus the 256 byte symbols and the 2 special tokens.
constexpr std::size_t kMaxMerges = 49152 - 256 - 2;
// Vocabulary ids beyond this are rejected: the id -> string table is dense.
constexpr int64_t kMaxVocabId = 1 << 24;
// The merge cache is emptied when it grows past this many words (transformers' never shrinks; a
// server tokenizing arbitrary prompts must not grow without bound).
constexpr std::size_t kMaxCacheEntries = 1 << 16;
constexpr int64_t kDefaultModelMaxLength = 77;  // CLIP's context length

constexpr std::string_view kStartOfText = "<|startoftext|>";
constexpr std::string_view kEndOfText = "<|endoftext|>";

struct AddedToken {
  std::string content;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DIFFUSE_CHECK(in.good(), "ClipTokenizer: cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  DIFFUSE_CHECK(!in.bad(), "ClipTokenizer: error while reading ", path.string());
  return ss.str();
}

nlohmann::json read_json(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    DIFFUSE_FAIL("ClipTokenizer: ", path.string(), " is not valid JSON: ", e.what());
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the 68 others
// (controls, space, 0x7F..0xA0, 0xAD) for U+0100.. in byte order, so no symbol is whitespace.
std::array<std::string, 256> make_byte_symbols() {
  std::array<std::string, 256> table;
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
    append_utf8(table[static_cast<std::size_t>(b)], cp);
  }
  return table;
}

const std::array<std::string, 256>& byte_symbols() {
  static const std::array<std::string, 256> table = make_byte_symbols();
  return table;
}

// Python str.lstrip()/rstrip() on UTF-8 text.
std::string strip_left(const std::string& s) {
  const std::u32string u = decode_utf8(s);
  std::size_t i = 0;
  while (i < u.size() && tokenizers::unicode::is_space(u[i])) ++i;
  return encode_utf8(std::u32string_view(u).substr(i));
}

std::string strip_right(const std::string& s) {
  const std::u32string u = decode_utf8(s);
  std::size_t n = u.size();
  while (n > 0 && tokenizers::unicode::is_space(u[n - 1])) --n;
  return encode_utf8(std::u32string_view(u).substr(0, n));
}

// The regex module's IGNORECASE compares by simple case folding: only U+017F (long s) folds onto
// one of the ASCII letters of CLIP's pattern once the text is lower-cased (U+212A KELVIN SIGN is
// already 'k' after lower()).
bool ci_equal(char32_t c, char ascii_lower) {
  return c == static_cast<char32_t>(ascii_lower) || (ascii_lower == 's' && c == 0x17F);
}

bool ci_starts_with(std::u32string_view text, std::size_t pos, std::string_view pattern) {
  if (text.size() - pos < pattern.size()) return false;
  for (std::size_t k = 0; k < pattern.size(); ++k) {
    if (!ci_equal(text[pos + k], pattern[k])) return false;
  }
  return true;
}

// Length of CLIP's pattern match at `pos`, or 0 when the character there is whitespace (skipped
// by re.findall).
std::size_t match_at(std::u32string_view t, std::size_t pos) {
  using tokenizers::unicode::is_letter;
  using tokenizers::unicode::is_number;
  using tokenizers::unicode::is_space;
  // <\|startoftext\|>|<\|endoftext\|>
  if (ci_starts_with(t, pos, kStartOfText)) return kStartOfText.size();
  if (ci_starts_with(t, pos, kEndOfText)) return kEndOfText.size();
  // 's|'t|'re|'ve|'m|'ll|'d
  if (t[pos] == U'\'') {
    for (std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
      if (ci_starts_with(t, pos + 1, suffix)) return 1 + suffix.size();
    }
  }
  // [\p{L}]+
  std::size_t end = pos;
  while (end < t.size() && is_letter(t[end])) ++end;
  if (end > pos) return end - pos;
  // [\p{N}]
  if (is_number(t[pos])) return 1;
  // [^\s\p{L}\p{N}]+
  while (end < t.size() && !is_space(t[end]) && !is_letter(t[end]) && !is_number(t[end])) ++end;
  return end - pos;
}

}  // namespace

struct ClipTokenizer::Impl {
  std::filesystem::path folder;
  std::unordered_map<std::string, int64_t> encoder;      // vocab.json
  std::vector<std::string> decoder;                      // id -> string (vocab and added tokens)
  std::unordered_map<std::string, int64_t> merge_ranks;  // "first second" -> rank
  std::vector<AddedToken> added;                         // split out of the text before BPE
  std::unordered_map<std::string, int64_t> added_encoder;
  int64_t bos = -1, eos = -1, pad = -1, unk = -1;
  int64_t model_max_length = kDefaultModelMaxLength;
  int64_t size = 0;  // len(tokenizer)

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  int64_t id_of(const std::string& token) const {
    if (auto it = added_encoder.find(token); it != added_encoder.end()) return it->second;
    if (auto it = encoder.find(token); it != encoder.end()) return it->second;
    DIFFUSE_CHECK(unk >= 0, "ClipTokenizer: token '", token, "' is not in the vocabulary of ",
                  folder.string(), " and the tokenizer has no unk_token");
    return unk;
  }

  int64_t rank_of(const std::string& first, const std::string& second, std::string& key) const {
    key.assign(first).append(" ").append(second);
    const auto it = merge_ranks.find(key);
    return it == merge_ranks.end() ? -1 : it->second;
  }

  // CLIPTokenizer.bpe's merge loop: repeatedly take the adjacent pair of lowest rank and merge all
  // its non-overlapping occurrences left to right, until no pair has a rank. Python rescans the
  // whole word per merge (quadratic: a 20 000-letter word takes a minute); here a heap ordered by
  // (rank, position) visits the same merges in the same order: all occurrences of the lowest rank
  // are popped together (positions ascending, stale entries revalidated), and a merge can only
  // create pairs containing the longer merged symbol, never another pair of the rank being merged.
  std::vector<std::string> merge_word(const std::string& word_symbols) const {
    struct Symbol {
      std::string text;
      int prev = -1, next = -1;
      bool alive = true;
    };
    std::vector<Symbol> sym;
    for (char32_t cp : decode_utf8(word_symbols)) {
      sym.emplace_back();
      append_utf8(sym.back().text, cp);
    }
    sym.back().text += "</w>";
    const int n = static_cast<int>(sym.size());
    for (int i = 0; i < n; ++i) {
      sym[static_cast<std::size_t>(i)].prev = i - 1;
      sym[static_cast<std::size_t>(i)].next = i + 1 < n ? i + 1 : -1;
    }
    using Entry = std::pair<int64_t, int>;  // (rank, position of the left symbol)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    std::string key;
    auto push_pair = [&](int left) {
      if (left < 0) return;
      const int right = sym[static_cast<std::size_t>(left)].next;
      if (right < 0) return;
      const int64_t rank = rank_of(sym[static_cast<std::size_t>(left)].text,
                                   sym[static_cast<std::size_t>(right)].text, key);
      if (rank >= 0) heap.emplace(rank, left);
    };
    for (int i = 0; i + 1 < n; ++i) push_pair(i);
    std::vector<int> pass;
    while (!heap.empty()) {
      const int64_t rank = heap.top().first;
      pass.clear();
      while (!heap.empty() && heap.top().first == rank) {
        pass.push_back(heap.top().second);
        heap.pop();
      }
      for (int left : pass) {
        Symbol& a = sym[static_cast<std::size_t>(left)];
        if (!a.alive || a.next < 0) continue;
        Symbol& b = sym[static_cast<std::size_t>(a.next)];
        if (rank_of(a.text, b.text, key) != rank) continue;  // stale: the pair changed
        a.text += b.text;
        b.alive = false;
        a.next = b.next;
        if (b.next >= 0) sym[static_cast<std::size_t>(b.next)].prev = left;
        push_pair(a.prev);
        push_pair(left);
      }
    }
    std::vector<std::string> word;
    for (int i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
      word.push_back(std::move(sym[static_cast<std::size_t>(i)].text));
    }
    return word;
  }

  // CLIPTokenizer.bpe for one pre-tokenized word (already in byte symbols), mapped to ids.
  std::vector<int64_t> bpe_ids(const std::string& word_symbols) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      if (auto it = cache.find(word_symbols); it != cache.end()) return it->second;
    }
    std::vector<int64_t> ids;
    if (word_symbols == kStartOfText || word_symbols == kEndOfText) {
      ids.push_back(id_of(word_symbols));  // CLIPTokenizer seeds its cache with these two
    } else {
      for (const std::string& piece : merge_word(word_symbols)) ids.push_back(id_of(piece));
    }
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(word_symbols, ids);
    return ids;
  }

  // CLIPTokenizer._tokenize for text between added tokens, appended to `out` as ids.
  void tokenize_text(const std::string& text, std::vector<int64_t>& out) const {
    std::u32string t = tokenizers::ftfy_fix_text(decode_utf8(text));
    t = tokenizers::whitespace_clean(t);
    t = tokenizers::unicode::python_lower(t);
    const auto& symbols = byte_symbols();
    std::string word;
    std::size_t pos = 0;
    while (pos < t.size()) {
      const std::size_t len = match_at(t, pos);
      if (len == 0) {
        ++pos;
        continue;
      }
      const std::string utf8 = encode_utf8(std::u32string_view(t).substr(pos, len));
      word.clear();
      for (unsigned char b : utf8) word += symbols[b];
      const std::vector<int64_t> ids = bpe_ids(word);
      out.insert(out.end(), ids.begin(), ids.end());
      pos += len;
    }
  }

  const AddedToken* find_added(const std::string& s) const {
    for (const AddedToken& t : added) {
      if (t.content == s) return &t;
    }
    return nullptr;
  }

  // PreTrainedTokenizer.tokenize + convert_tokens_to_ids (no bos/eos).
  std::vector<int64_t> tokenize(std::string_view raw) const {
    const std::string text = tokenizers::unicode::sanitize_utf8(raw);
    // 1. Split around added tokens: leftmost match, longest among those starting there.
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t pos = 0; pos < text.size();) {
      std::size_t best = 0;
      for (const AddedToken& t : added) {
        if (t.content.size() > best && text.compare(pos, t.content.size(), t.content) == 0) {
          best = t.content.size();
        }
      }
      if (best == 0) {
        ++pos;
        continue;
      }
      // (transformers' Trie.cut_text never yields empty pieces)
      if (pos > start) parts.push_back(text.substr(start, pos - start));
      parts.push_back(text.substr(pos, best));
      pos += best;
      start = pos;
    }
    if (start < text.size()) parts.push_back(text.substr(start));
    // 2. The added tokens' whitespace handling, in the order transformers applies it (left and
    // right are the neighbours as they were before this token's own edits).
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const AddedToken* tok = find_added(parts[i]);
      if (tok == nullptr) continue;
      const std::optional<std::string> left =
          i > 0 ? std::optional<std::string>(parts[i - 1]) : std::nullopt;
      const std::optional<std::string> right =
          i + 1 < parts.size() ? std::optional<std::string>(parts[i + 1]) : std::nullopt;
      if (tok->rstrip && right && !right->empty()) parts[i + 1] = strip_left(*right);
      if (tok->lstrip && left && !left->empty()) parts[i - 1] = strip_right(*left);
      if (tok->single_word && left && !left->empty() && left->back() != ' ') {
        parts[i - 1] += parts[i];
        parts[i].clear();
      } else if (tok->single_word && right && !right->empty() && right->front() != ' ') {
        parts[i] += *right;
        parts[i + 1].clear();
      }
    }
    // 3. Added tokens map to their ids; everything else goes through ftfy + regex + BPE.
    std::vector<int64_t> ids;
    for (const std::string& part : parts) {
      if (part.empty()) continue;
      if (auto it = added_encoder.find(part); it != added_encoder.end()) {
        ids.push_back(it->second);
      } else {
        tokenize_text(part, ids);
      }
    }
    return ids;
  }
};

namespace {

// A special-token value of tokenizer_config.json / special_tokens_map.json: a string or an
// AddedToken object {"content": ..., "lstrip": ..., ...}; null means "no such token".
std::optional<AddedToken> parse_token(const nlohmann::json& value,
                                      const std::filesystem::path& file, const std::string& key) {
  if (value.is_null()) return std::nullopt;
  AddedToken token;
  if (value.is_string()) {
    token.content = value.get<std::string>();
    return token;
  }
  DIFFUSE_CHECK(value.is_object() && value.contains("content") && value["content"].is_string(),
                "ClipTokenizer: ", file.string(), ": '", key,
                "' must be a string or an object with a string 'content', got ", value.dump());
  token.content = value["content"].get<std::string>();
  auto flag = [&](const char* name, bool& dst) {
    if (!value.contains(name)) return;
    DIFFUSE_CHECK(value[name].is_boolean(), "ClipTokenizer: ", file.string(), ": '", key, ".", name,
                  "' must be a boolean, got ", value[name].dump());
    dst = value[name].get<bool>();
  };
  flag("lstrip", token.lstrip);
  flag("rstrip", token.rstrip);
  flag("single_word", token.single_word);
  return token;
}

void load_vocab(const std::filesystem::path& path,
                std::unordered_map<std::string, int64_t>& encoder,
                std::vector<std::string>& decoder) {
  const nlohmann::json vocab = read_json(path);
  DIFFUSE_CHECK(vocab.is_object(), "ClipTokenizer: ", path.string(),
                " must be a JSON object {token: id}, got ", vocab.type_name());
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    DIFFUSE_CHECK(
        id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < kMaxVocabId,
        "ClipTokenizer: ", path.string(), ": id of '", token, "' must be an integer in [0, ",
        kMaxVocabId, "), got ", id.dump());
    const int64_t i = id.get<int64_t>();
    encoder[token] = i;
    max_id = std::max(max_id, i);
  }
  decoder.assign(static_cast<std::size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : encoder) decoder[static_cast<std::size_t>(id)] = token;
}

void load_merges(const std::filesystem::path& path,
                 std::unordered_map<std::string, int64_t>& merge_ranks) {
  std::string text = read_file(path);
  // merges_handle.read().strip().split("\n")[1 : 48894 + 1]
  const auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  std::size_t b = 0, e = text.size();
  while (b < e && is_ws(text[b])) ++b;
  while (e > b && is_ws(text[e - 1])) --e;
  std::size_t line_no = 0, rank = 0;
  std::size_t pos = b;
  while (pos <= e && rank < kMaxMerges) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos || nl > e) nl = e;
    const std::string_view line(text.data() + pos, nl - pos);
    ++line_no;
    pos = nl + 1;
    if (line_no == 1) continue;  // "#version: 0.2" (skipped whatever it says, like CLIPTokenizer)
    std::vector<std::string_view> fields;
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && is_ws(line[i])) ++i;
      std::size_t j = i;
      while (j < line.size() && !is_ws(line[j])) ++j;
      if (j > i) fields.push_back(line.substr(i, j - i));
      i = j;
    }
    DIFFUSE_CHECK(fields.size() == 2, "ClipTokenizer: ", path.string(), " line ", line_no,
                  ": expected two space-separated symbols, got '", std::string(line), "'");
    std::string key(fields[0]);
    key.append(" ").append(fields[1]);
    merge_ranks[key] = static_cast<int64_t>(rank++);  // a repeated merge keeps its last rank
    if (nl == e) break;
  }
}

}  // namespace

ClipTokenizer ClipTokenizer::from_folder(const std::filesystem::path& folder) {
  auto impl = std::make_unique<Impl>();
  impl->folder = folder;
  DIFFUSE_CHECK(std::filesystem::is_directory(folder), "ClipTokenizer: ", folder.string(),
                " is not a directory (expected a tokenizer folder with vocab.json and merges.txt)");
  load_vocab(folder / "vocab.json", impl->encoder, impl->decoder);
  load_merges(folder / "merges.txt", impl->merge_ranks);

  // Special tokens: CLIPTokenizer's defaults, then tokenizer_config.json, then (legacy format)
  // special_tokens_map.json on top.
  std::optional<AddedToken> bos = AddedToken{std::string(kStartOfText)};
  std::optional<AddedToken> eos = AddedToken{std::string(kEndOfText)};
  std::optional<AddedToken> unk = AddedToken{std::string(kEndOfText)};
  std::optional<AddedToken> pad = AddedToken{std::string(kEndOfText)};
  std::vector<AddedToken> additional;
  std::vector<std::pair<int64_t, AddedToken>> added_with_ids;

  auto read_specials = [&](const nlohmann::json& j, const std::filesystem::path& file) {
    const std::pair<const char*, std::optional<AddedToken>*> slots[] = {
        {"bos_token", &bos}, {"eos_token", &eos}, {"unk_token", &unk}, {"pad_token", &pad}};
    for (const auto& [key, slot] : slots) {
      if (j.contains(key)) *slot = parse_token(j[key], file, key);
    }
    if (j.contains("additional_special_tokens")) {
      const auto& list = j["additional_special_tokens"];
      DIFFUSE_CHECK(list.is_array(), "ClipTokenizer: ", file.string(),
                    ": 'additional_special_tokens' must be a list, got ", list.dump());
      additional.clear();
      for (const auto& v : list) {
        if (auto t = parse_token(v, file, "additional_special_tokens")) additional.push_back(*t);
      }
    }
  };

  bool has_added_tokens_decoder = false;
  const auto config_path = folder / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    const nlohmann::json config = read_json(config_path);
    DIFFUSE_CHECK(config.is_object(), "ClipTokenizer: ", config_path.string(),
                  " must be a JSON object, got ", config.type_name());
    read_specials(config, config_path);
    if (config.contains("model_max_length")) {
      const auto& m = config["model_max_length"];
      DIFFUSE_CHECK(m.is_number() && m.get<double>() >= 1, "ClipTokenizer: ", config_path.string(),
                    ": 'model_max_length' must be a positive number, got ", m.dump());
      // transformers writes 1e30 for "no limit".
      const double v = m.get<double>();
      impl->model_max_length =
          v >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(v);
    }
    if (config.contains("added_tokens_decoder")) {
      has_added_tokens_decoder = true;
      const auto& dec = config["added_tokens_decoder"];
      DIFFUSE_CHECK(dec.is_object(), "ClipTokenizer: ", config_path.string(),
                    ": 'added_tokens_decoder' must be an object {id: token}, got ", dec.dump());
      for (const auto& [id_str, value] : dec.items()) {
        int64_t id = -1;
        try {
          std::size_t used = 0;
          id = std::stoll(id_str, &used);
          if (used != id_str.size()) id = -1;
        } catch (const std::exception&) {
          id = -1;
        }
        DIFFUSE_CHECK(id >= 0 && id < kMaxVocabId, "ClipTokenizer: ", config_path.string(),
                      ": 'added_tokens_decoder' key '", id_str, "' must be a token id in [0, ",
                      kMaxVocabId, ")");
        auto t = parse_token(value, config_path, "added_tokens_decoder." + id_str);
        DIFFUSE_CHECK(t.has_value(), "ClipTokenizer: ", config_path.string(),
                      ": 'added_tokens_decoder.", id_str, "' must not be null");
        added_with_ids.emplace_back(id, *t);
      }
    }
  }
  if (!has_added_tokens_decoder) {
    const auto map_path = folder / "special_tokens_map.json";
    if (std::filesystem::exists(map_path)) {
      const nlohmann::json map = read_json(map_path);
      DIFFUSE_CHECK(map.is_object(), "ClipTokenizer: ", map_path.string(),
                    " must be a JSON object, got ", map.type_name());
      read_specials(map, map_path);
    }
    const auto legacy_path = folder / "added_tokens.json";
    if (std::filesystem::exists(legacy_path)) {
      const nlohmann::json legacy = read_json(legacy_path);
      DIFFUSE_CHECK(legacy.is_object(), "ClipTokenizer: ", legacy_path.string(),
                    " must be a JSON object {token: id}, got ", legacy.type_name());
      for (const auto& [token, id] : legacy.items()) {
        DIFFUSE_CHECK(
            id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < kMaxVocabId,
            "ClipTokenizer: ", legacy_path.string(), ": id of '", token,
            "' must be an integer in [0, ", kMaxVocabId, "), got ", id.dump());
        added_with_ids.emplace_back(id.get<int64_t>(), AddedToken{token});
      }
    }
  }

  // Added tokens with explicit ids first, then the special tokens that are not among them
  // (PreTrainedTokenizer.__init__ -> _add_tokens): an existing vocabulary entry keeps its id, a
  // new string gets the next free id.
  auto register_token = [&](const AddedToken& t, int64_t id) {
    if (t.content.empty()) return;
    if (impl->added_encoder.count(t.content) != 0) return;
    impl->added_encoder[t.content] = id;
    impl->added.push_back(t);
    if (static_cast<std::size_t>(id) >= impl->decoder.size()) {
      impl->decoder.resize(static_cast<std::size_t>(id) + 1);
    }
    impl->decoder[static_cast<std::size_t>(id)] = t.content;
  };
  for (const auto& [id, t] : added_with_ids) register_token(t, id);
  std::vector<AddedToken> specials;
  for (const auto* slot : {&bos, &eos, &unk, &pad}) {
    if (slot->has_value()) specials.push_back(**slot);
  }
  specials.insert(specials.end(), additional.begin(), additional.end());
  // len(get_vocab()): distinct strings of the vocabulary and the added tokens so far.
  auto distinct_strings = [&]() {
    std::size_t n = impl->encoder.size();
    for (const auto& [content, id] : impl->added_encoder) {
      if (impl->encoder.count(content) == 0) ++n;
    }
    return static_cast<int64_t>(n);
  };
  int64_t next_id = distinct_strings();
  for (const AddedToken& t : specials) {
    if (t.content.empty() || impl->added_encoder.count(t.content) != 0) continue;
    if (auto it = impl->encoder.find(t.content); it != impl->encoder.end()) {
      register_token(t, it->second);
    } else {
      register_token(t, next_id++);
    }
  }
  auto id_of_special = [&](const std::optional<AddedToken>& t) -> int64_t {
    if (!t.has_value() || t->content.empty()) return -1;
    return impl->added_encoder.at(t->content);
  };
  impl->bos = id_of_special(bos);
  impl->eos = id_of_special(eos);
  impl->unk = id_of_special(unk);
  impl->pad = id_of_special(pad);
  DIFFUSE_CHECK(impl->bos >= 0 && impl->eos >= 0, "ClipTokenizer: ", folder.string(),
                ": bos_token and eos_token must be set (CLIP needs both)");

  impl->size = distinct_strings();
  return ClipTokenizer(std::move(impl));
}

ClipTokenizer::ClipTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;
ClipTokenizer::~ClipTokenizer() = default;

std::vector<int64_t> ClipTokenizer::encode_without_special_tokens(std::string_view text) const {
  return impl_->tokenize(text);
}

std::vector<int64_t> ClipTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  ids.push_back(impl_->bos);
  const std::vector<int64_t> body = impl_->tokenize(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(impl_->eos);
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode_padded(std::string_view text, int64_t max_length) const {
  DIFFUSE_CHECK(max_length >= 2, "ClipTokenizer::encode_padded: max_length must be >= 2 (room for ",
                "bos and eos), got ", max_length);
  std::vector<int64_t> body = impl_->tokenize(text);
  // truncation=True ("longest_first"): keep the first max_length - 2 tokens.
  if (static_cast<int64_t>(body.size()) > max_length - 2) {
    body.resize(static_cast<std::size_t>(max_length - 2));
  }
  std::vector<int64_t> ids;
  ids.reserve(static_cast<std::size_t>(max_length));
  ids.push_back(impl_->bos);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(impl_->eos);
  if (static_cast<int64_t>(ids.size()) < max_length) {
    DIFFUSE_CHECK(impl_->pad >= 0, "ClipTokenizer::encode_padded: the tokenizer in ",
                  impl_->folder.string(), " has no pad_token, cannot pad to ", max_length);
    ids.resize(static_cast<std::size_t>(max_length), impl_->pad);
  }
  return ids;
}

std::vector<std::string> ClipTokenizer::tokens(std::string_view text) const {
  std::vector<std::string> out;
  for (int64_t id : encode(text)) out.push_back(id_to_token(id));
  return out;
}

const std::string& ClipTokenizer::id_to_token(int64_t id) const {
  DIFFUSE_CHECK(id >= 0 && id < static_cast<int64_t>(impl_->decoder.size()),
                "ClipTokenizer::id_to_token: id ", id, " is outside the vocabulary [0, ",
                impl_->decoder.size(), ")");
  return impl_->decoder[static_cast<std::size_t>(id)];
}

int64_t ClipTokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  if (auto it = impl_->added_encoder.find(key); it != impl_->added_encoder.end()) return it->second;
  if (auto it = impl_->encoder.find(key); it != impl_->encoder.end()) return it->second;
  return -1;
}

int64_t ClipTokenizer::bos_id() const {
  return impl_->bos;
}
int64_t ClipTokenizer::eos_id() const {
  return impl_->eos;
}
int64_t ClipTokenizer::pad_id() const {
  return impl_->pad;
}
int64_t ClipTokenizer::unk_id() const {
  return impl_->unk;
}
int64_t ClipTokenizer::vocab_size() const {
  return impl_->size;
}
int64_t ClipTokenizer::model_max_length() const {
  return impl_->model_max_length;
}

}  // namespace diffuse
