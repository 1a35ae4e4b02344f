// ClipTokenizer beyond the golden file: ftfy's documented fixes, Python's lower-casing, special-
// token configurations (SD 2.x pad_token "!"), malformed folders and hostile prompts.
#include <atomic>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "diffuse/tokenizers/clip_tokenizer.h"
#include "src/tokenizers/text_fix.h"
#include "src/tokenizers/unicode_text.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using tokenizers::unicode::decode_utf8;
using tokenizers::unicode::encode_utf8;

std::string fix(const std::string& s) {
  return encode_utf8(tokenizers::ftfy_fix_text(decode_utf8(s)));
}

// ---- ftfy.fix_text: the examples of ftfy's own documentation ----------------------------------

TEST(FtfyFixText, DocumentedExamples) {
  EXPECT_EQ(fix("Broken text&hellip; it&#x2019;s \xef\xac\x82ubberi\xef\xac\x81\x63!"),
            "Broken text\xe2\x80\xa6 it's flubberific!");
  EXPECT_EQ(fix("HTML entities &lt;3"), "HTML entities <3");
  EXPECT_EQ(fix("<em>HTML entities &lt;3</em>"), "<em>HTML entities &lt;3</em>");
  EXPECT_EQ(fix("\xef\xbb\xbfParty like\nit&rsquo;s 1999!"), "Party like\nit's 1999!");
  // Full-width letters and the ideographic space.
  EXPECT_EQ(fix("\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xb5\xef\xbc\xa4\xe3\x80\x80\xef\xbc\xae\xef\xbc"
                "\xaf\xef\xbc\xa9\xef\xbc\xb3\xef\xbc\xa5\xef\xbc\xb3"),
            "LOUD NOISES");
  EXPECT_EQ(fix("\x01\x1b[36;44mI'm blue, da ba dee\x1b[0m"), "I'm blue, da ba dee");
  // "uÌˆnicode" is mojibake (fix_encoding, not implemented); a combining diaeresis is composed.
  EXPECT_EQ(fix("u\xcc\x88nicode"), "\xc3\xbcnicode");
}

TEST(FtfyFixText, EntitiesControlsAndQuotes) {
  EXPECT_EQ(fix("&amp;amp;"), "&");                                  // repeated until stable
  EXPECT_EQ(fix("&AMP; &NTILDE; &ntilde;"), "& \xc3\x91 \xc3\xb1");  // upper-cased variants
  EXPECT_EQ(fix("&#59;"), "&#59;");  // decodes to ';' -> kept, as ftfy does
  EXPECT_EQ(fix("&#x1F600;"), "\xf0\x9f\x98\x80");
  EXPECT_EQ(fix("&#128;"), "\xe2\x82\xac");  // 0x80 read as Windows-1252
  EXPECT_EQ(fix("a&#1;b"), "ab");            // forbidden code point dropped
  EXPECT_EQ(fix("&#99999999999999999999;"), "\xef\xbf\xbd");
  EXPECT_EQ(fix("&#12ab; &bogus; &;"), "&#12ab; &bogus; &;");
  EXPECT_EQ(fix("x\xc2\x85y"), "x\xe2\x80\xa6y");  // C1 control U+0085 -> '...' (Windows-1252)
  EXPECT_EQ(fix("a\r\nb\rc\xe2\x80\xa8"
                "d"),
            "a\nb\nc\nd");
  EXPECT_EQ(fix("\xca\xbc\xe2\x80\x98\xe2\x80\x9b\xe2\x80\x9c\xe2\x80\x9f"), "'''\"\"");
  EXPECT_EQ(fix("\xc7\x84 \xef\xac\x85"), "D\xc5\xbd \xc5\xbft");  // ligature table, not NFKC
  EXPECT_EQ(fix("\xef\xbd\xb6\xef\xbe\x9e"), "\xe3\x82\xac");      // half-width ｶﾞ -> ガ (NFC)
  // '<' on a line switches entity decoding off from that line on.
  EXPECT_EQ(fix("&amp;\n<b>&amp;\n&amp;"), "&\n<b>&amp;\n&amp;");
}

TEST(ClipTextHelpers, PythonLowerAndWhitespace) {
  auto lower = [](const std::string& s) {
    return encode_utf8(tokenizers::unicode::python_lower(decode_utf8(s)));
  };
  // Expected strings are Python 3.11's str.lower().
  EXPECT_EQ(lower("\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3\xce\x91\xce\xa3"),
            "\xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83\xce\xb1\xcf\x82");
  EXPECT_EQ(lower("\xce\xa3"), "\xcf\x83");
  EXPECT_EQ(lower("\xce\x91\xce\xa3.\xce\x92"), "\xce\xb1\xcf\x83.\xce\xb2");
  EXPECT_EQ(lower("\xc4\xb0stanbul"), "i\xcc\x87stanbul");
  EXPECT_EQ(encode_utf8(tokenizers::whitespace_clean(
                decode_utf8(" \t a \xe3\x80\x80 b \x1c c \xe2\x80\xa8 "))),
            "a b c");
}

TEST(ClipTextHelpers, InvalidUtf8BecomesReplacementCharacters) {
  // Python: bytes.decode("utf-8", "replace"), one U+FFFD per maximal ill-formed subpart.
  const std::string r = "\xef\xbf\xbd";
  EXPECT_EQ(tokenizers::unicode::sanitize_utf8("caf\xc3"), "caf" + r);
  EXPECT_EQ(tokenizers::unicode::sanitize_utf8("a\xe2\x82z"), "a" + r + "z");
  EXPECT_EQ(tokenizers::unicode::sanitize_utf8("\xc0\xaf"), r + r);          // overlong
  EXPECT_EQ(tokenizers::unicode::sanitize_utf8("\xed\xa0\x80"), r + r + r);  // surrogate
  EXPECT_EQ(tokenizers::unicode::sanitize_utf8("\xf4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(tokenizers::unicode::sanitize_utf8("ok \xf0\x9f\x98\x80"), "ok \xf0\x9f\x98\x80");
}

// ---- Tokenizer folders --------------------------------------------------------------------------

fs::path reference_tokenizer(const std::string& name) {
  for (const auto& root : testing::reference_roots()) {
    const fs::path p = root / "tokenizers" / name;
    if (fs::exists(p / "vocab.json")) return p;
  }
  return {};
}

// A scratch folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("diffuse_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
  }

 private:
  fs::path path_;
};

// A tiny vocabulary: bytes a, b, c (plain and word-final), the merge "a b" and the specials.
void write_small_tokenizer(const TempDir& dir) {
  dir.write("vocab.json",
            R"({"a": 0, "b": 1, "c": 2, "a</w>": 3, "b</w>": 4, "c</w>": 5, "ab</w>": 6,)"
            R"( "<|startoftext|>": 7, "<|endoftext|>": 8})");
  dir.write("merges.txt", "#version: 0.2\na b</w>\n");
}

std::string error_of(const fs::path& folder) {
  try {
    (void)ClipTokenizer::from_folder(folder);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ClipTokenizer, SmallHandWrittenFolder) {
  TempDir dir;
  write_small_tokenizer(dir);
  const ClipTokenizer tok = ClipTokenizer::from_folder(dir.path());
  EXPECT_EQ(tok.bos_id(), 7);
  EXPECT_EQ(tok.eos_id(), 8);
  EXPECT_EQ(tok.pad_id(), 8);
  EXPECT_EQ(tok.vocab_size(), 9);
  EXPECT_EQ(tok.model_max_length(), 77);  // no tokenizer_config.json
  EXPECT_EQ(tok.encode("AB ab c"), (std::vector<int64_t>{7, 6, 6, 5, 8}));
  EXPECT_EQ(tok.encode("ba"), (std::vector<int64_t>{7, 1, 3, 8}));
  // Unknown bytes map to unk (= <|endoftext|>).
  EXPECT_EQ(tok.encode("d"), (std::vector<int64_t>{7, 8, 8}));
  EXPECT_EQ(tok.encode_padded("ab", 5), (std::vector<int64_t>{7, 6, 8, 8, 8}));
  EXPECT_EQ(tok.encode_padded("a b c", 4), (std::vector<int64_t>{7, 3, 4, 8}));
  EXPECT_THROW((void)tok.encode_padded("a", 1), Error);
  EXPECT_EQ(tok.id_to_token(6), "ab</w>");
  EXPECT_EQ(tok.token_to_id("c</w>"), 5);
  EXPECT_EQ(tok.token_to_id("zz"), -1);
  EXPECT_THROW((void)tok.id_to_token(9), Error);
}

TEST(ClipTokenizer, MalformedFoldersNameTheFile) {
  {
    TempDir dir;
    EXPECT_NE(error_of(dir.path()).find("vocab.json"), std::string::npos);
    EXPECT_NE(error_of(dir.path() / "missing").find("not a directory"), std::string::npos);
  }
  {
    TempDir dir;
    write_small_tokenizer(dir);
    dir.write("vocab.json", "{\"a\": 0,");
    const std::string e = error_of(dir.path());
    EXPECT_NE(e.find("vocab.json"), std::string::npos) << e;
    EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
  }
  {
    TempDir dir;
    write_small_tokenizer(dir);
    dir.write("vocab.json", R"({"a": "zero"})");
    EXPECT_NE(error_of(dir.path()).find("id of 'a'"), std::string::npos);
    dir.write("vocab.json", R"({"a": -3})");
    EXPECT_NE(error_of(dir.path()).find("vocab.json"), std::string::npos);
    dir.write("vocab.json", R"(["a", "b"])");
    EXPECT_NE(error_of(dir.path()).find("JSON object"), std::string::npos);
  }
  {
    TempDir dir;
    write_small_tokenizer(dir);
    fs::remove(dir.path() / "merges.txt");
    EXPECT_NE(error_of(dir.path()).find("merges.txt"), std::string::npos);
    dir.write("merges.txt", "#version: 0.2\na b</w>\na b c\n");
    const std::string e = error_of(dir.path());
    EXPECT_NE(e.find("merges.txt line 3"), std::string::npos) << e;
  }
  {
    TempDir dir;
    write_small_tokenizer(dir);
    dir.write("tokenizer_config.json", R"({"bos_token": 5})");
    const std::string e = error_of(dir.path());
    EXPECT_NE(e.find("tokenizer_config.json"), std::string::npos) << e;
    EXPECT_NE(e.find("bos_token"), std::string::npos) << e;
    dir.write("tokenizer_config.json", R"({"model_max_length": "long"})");
    EXPECT_NE(error_of(dir.path()).find("model_max_length"), std::string::npos);
    dir.write("tokenizer_config.json", "not json");
    EXPECT_NE(error_of(dir.path()).find("tokenizer_config.json"), std::string::npos);
    dir.write("tokenizer_config.json", R"({"eos_token": null})");
    EXPECT_NE(error_of(dir.path()).find("eos_token"), std::string::npos);
  }
  {
    TempDir dir;
    write_small_tokenizer(dir);
    dir.write("special_tokens_map.json", R"({"pad_token": {"content": 3}})");
    EXPECT_NE(error_of(dir.path()).find("special_tokens_map.json"), std::string::npos);
  }
}

TEST(ClipTokenizer, AddedTokensAndStripFlags) {
  TempDir dir;
  write_small_tokenizer(dir);
  // A new token with rstrip: eats the whitespace on its right; it gets the next free id.
  dir.write("special_tokens_map.json",
            R"({"additional_special_tokens": [{"content": "<x>", "rstrip": true}]})");
  const ClipTokenizer tok = ClipTokenizer::from_folder(dir.path());
  EXPECT_EQ(tok.token_to_id("<x>"), 9);
  EXPECT_EQ(tok.vocab_size(), 10);
  EXPECT_EQ(tok.encode("a<x>   b"), (std::vector<int64_t>{7, 3, 9, 4, 8}));
  EXPECT_EQ(tok.tokens("<x>"),
            (std::vector<std::string>{"<|startoftext|>", "<x>", "<|endoftext|>"}));
  // Literal special tokens are split out before any text processing, case-sensitively.
  EXPECT_EQ(tok.encode("a<|endoftext|>b"), (std::vector<int64_t>{7, 3, 8, 4, 8}));
}

TEST(ClipTokenizer, NewStyleConfigIgnoresSpecialTokensMap) {
  TempDir dir;
  write_small_tokenizer(dir);
  dir.write("tokenizer_config.json",
            R"({"added_tokens_decoder": {"20": {"content": "<y>", "special": true}},)"
            R"( "pad_token": "c</w>", "model_max_length": 1e30})");
  dir.write("special_tokens_map.json", R"({"pad_token": "a</w>"})");
  const ClipTokenizer tok = ClipTokenizer::from_folder(dir.path());
  EXPECT_EQ(tok.pad_id(), 5);
  EXPECT_EQ(tok.token_to_id("<y>"), 20);
  EXPECT_EQ(tok.model_max_length(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(tok.encode("b<y>"), (std::vector<int64_t>{7, 4, 20, 8}));
}

// SD 2.x / SDXL tokenizer_2: pad_token "!" is a special token, so transformers splits every '!'
// out of the text and maps it to id 0 (diffusers issue #4153 shows these ids for "! !! !!!").
TEST(ClipTokenizer, Sd2PadTokenSplitsExclamationMarks) {
  const fs::path assets = testing::shared_dir() / "assets" / "clip-tokenizer";
  if (!fs::exists(assets / "vocab.json") || !fs::exists(assets / "sd2")) {
    GTEST_SKIP() << "shared/assets/clip-tokenizer (with sd2/) not found";
  }
  TempDir dir;
  fs::copy_file(assets / "vocab.json", dir.path() / "vocab.json");
  fs::copy_file(assets / "merges.txt", dir.path() / "merges.txt");
  fs::copy_file(assets / "sd2" / "tokenizer_config.json", dir.path() / "tokenizer_config.json");
  fs::copy_file(assets / "sd2" / "special_tokens_map.json", dir.path() / "special_tokens_map.json");
  const ClipTokenizer sd2 = ClipTokenizer::from_folder(dir.path());
  EXPECT_EQ(sd2.pad_id(), 0);
  std::vector<int64_t> expected(77, 0);
  expected[0] = 49406;
  expected[7] = 49407;
  EXPECT_EQ(sd2.encode_padded("! !! !!!"), expected);

  const ClipTokenizer sd1 = ClipTokenizer::from_folder(assets);
  EXPECT_EQ(sd1.pad_id(), 49407);
  EXPECT_EQ(sd1.encode("! !! !!!"), (std::vector<int64_t>{49406, 256, 748, 995, 49407}));
}

TEST(ClipTokenizer, HostilePromptsDoNotCrash) {
  const fs::path folder = reference_tokenizer("clip-vit-large-patch14");
  if (folder.empty()) GTEST_SKIP() << "reference tokenizers not found";
  const ClipTokenizer tok = ClipTokenizer::from_folder(folder);
  // Invalid UTF-8 is read as U+FFFD, what Python would see after decode(errors="replace").
  EXPECT_EQ(tok.encode("caf\xc3\xff"), tok.encode("caf\xef\xbf\xbd\xef\xbf\xbd"));
  EXPECT_EQ(tok.encode(std::string_view("a\0b", 3)), tok.encode("ab"));  // NUL is a control char
  std::mt19937 rng(1234);
  for (int i = 0; i < 200; ++i) {
    std::string s(static_cast<std::size_t>(rng() % 64), '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xFF);
    const auto ids = tok.encode(s);
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids.front(), tok.bos_id());
    EXPECT_EQ(ids.back(), tok.eos_id());
    for (int64_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
  }
  // A long word: BPE is quadratic per word but bounded; a 20 000-character prompt stays fast.
  const auto long_ids = tok.encode(std::string(20000, 'x') + " &amp;amp;amp;");
  EXPECT_GT(long_ids.size(), 2u);
}

// CLIPTokenizer.bpe written the way transformers writes it (rescan the word, merge every occurrence
// of the best pair, repeat), to check the heap-based merge of the library on the real vocabulary.
std::vector<std::string> python_bpe(
    const std::string& word, const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> w;
  for (char c : word) w.emplace_back(1, c);
  w.back() += "</w>";
  while (w.size() > 1) {
    int best = -1;
    std::pair<std::string, std::string> best_pair;
    for (std::size_t i = 0; i + 1 < w.size(); ++i) {
      const auto it = ranks.find({w[i], w[i + 1]});
      if (it != ranks.end() && (best < 0 || it->second < best)) {
        best = it->second;
        best_pair = it->first;
      }
    }
    if (best < 0) break;
    std::vector<std::string> merged;
    for (std::size_t i = 0; i < w.size();) {
      if (i + 1 < w.size() && w[i] == best_pair.first && w[i + 1] == best_pair.second) {
        merged.push_back(w[i] + w[i + 1]);
        i += 2;
      } else {
        merged.push_back(w[i++]);
      }
    }
    w = std::move(merged);
  }
  return w;
}

TEST(ClipTokenizer, HeapMergeEqualsPythonMergeLoop) {
  const fs::path folder = reference_tokenizer("clip-vit-large-patch14");
  if (folder.empty()) GTEST_SKIP() << "reference tokenizers not found";
  const ClipTokenizer tok = ClipTokenizer::from_folder(folder);
  std::map<std::pair<std::string, std::string>, int> ranks;
  std::ifstream merges(folder / "merges.txt");
  std::string line;
  std::getline(merges, line);  // #version
  for (int rank = 0; rank < 48894 && std::getline(merges, line); ++rank) {
    const auto space = line.find(' ');
    ranks.emplace(std::make_pair(line.substr(0, space), line.substr(space + 1)), rank);
  }
  ASSERT_EQ(ranks.size(), 48894u);
  std::mt19937 rng(7);
  int compared = 0;
  for (int i = 0; i < 300; ++i) {
    // Lower-case ASCII words (one regex match, untouched by ftfy), some with few distinct letters
    // so that the same pair occurs many times.
    const int alphabet = i % 3 == 0 ? 2 : 26;
    std::string word(1 + rng() % 48, 'a');
    for (char& c : word) c = static_cast<char>('a' + rng() % static_cast<unsigned>(alphabet));
    std::vector<int64_t> expected{tok.bos_id()};
    for (const auto& piece : python_bpe(word, ranks)) expected.push_back(tok.token_to_id(piece));
    expected.push_back(tok.eos_id());
    EXPECT_EQ(tok.encode(word), expected) << word;
    ++compared;
  }
  EXPECT_EQ(compared, 300);
}

TEST(ClipTokenizer, ConcurrentEncodingGivesIdenticalResults) {
  const fs::path folder = reference_tokenizer("clip-vit-large-patch14");
  if (folder.empty()) GTEST_SKIP() << "reference tokenizers not found";
  const ClipTokenizer tok = ClipTokenizer::from_folder(folder);
  const std::vector<std::string> prompts = {"a photo of an astronaut riding a horse on mars",
                                            "masterpiece, best quality, ultra-detailed",
                                            "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e caf\xc3\xa9"};
  std::vector<std::vector<int64_t>> expected;
  for (const auto& p : prompts) expected.push_back(tok.encode(p));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::size_t k = static_cast<std::size_t>(i + t) % prompts.size();
        if (tok.encode(prompts[k] + " " + std::to_string(i)) !=
            tok.encode(prompts[k] + " " + std::to_string(i))) {
          ++mismatches;
        }
        if (tok.encode(prompts[k]) != expected[k]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace diffuse
