// Conformance: ClipTokenizer against transformers' CLIPTokenizer (ftfy 6.3.1 active) on every
// case of tokenizers/tokenizer_golden.json in every reference root, for every tokenizer listed
// there (the real 49 408-entry CLIP vocabulary and the tiny 1 000-entry one).
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "diffuse/tokenizers/clip_tokenizer.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

TEST(ClipTokenizerConformance, GoldenIdsOfEveryReferenceRoot) {
  int roots = 0, tokenizers = 0, cases = 0, matched = 0;
  for (const auto& root : testing::reference_roots()) {
    const auto golden_path = root / "tokenizers" / "tokenizer_golden.json";
    if (!std::filesystem::exists(golden_path)) continue;
    ++roots;
    const nlohmann::json golden = testing::read_json(golden_path);
    ASSERT_TRUE(golden.contains("tokenizers")) << golden_path;
    for (const auto& [name, spec] : golden["tokenizers"].items()) {
      SCOPED_TRACE(golden_path.string() + " / " + name);
      ++tokenizers;
      const ClipTokenizer tok = ClipTokenizer::from_folder(root / "tokenizers" / name);
      EXPECT_EQ(tok.vocab_size(), spec.at("vocab_size").get<int64_t>());
      EXPECT_EQ(tok.bos_id(), spec.at("bos_token_id").get<int64_t>());
      EXPECT_EQ(tok.eos_id(), spec.at("eos_token_id").get<int64_t>());
      EXPECT_EQ(tok.pad_id(), spec.at("pad_token_id").get<int64_t>());
      EXPECT_EQ(tok.model_max_length(), spec.at("model_max_length").get<int64_t>());
      const int64_t max_length = spec.at("model_max_length").get<int64_t>();
      for (const auto& c : spec.at("cases")) {
        ++cases;
        const std::string prompt = c.at("prompt").get<std::string>();
        SCOPED_TRACE("prompt: \"" + escape(prompt) + "\"");
        const auto expected_tokens = c.at("tokens").get<std::vector<std::string>>();
        const auto expected_ids = c.at("ids").get<std::vector<int64_t>>();
        const auto expected_padded = c.at("ids_max_length_77").get<std::vector<int64_t>>();
        const auto tokens = tok.tokens(prompt);
        const auto ids = tok.encode(prompt);
        const auto padded = tok.encode_padded(prompt, max_length);
        EXPECT_EQ(tokens, expected_tokens);
        EXPECT_EQ(ids, expected_ids);
        EXPECT_EQ(padded, expected_padded);
        if (tokens == expected_tokens && ids == expected_ids && padded == expected_padded) {
          ++matched;
        }
      }
    }
  }
  std::printf("tokenizer conformance: %d roots, %d tokenizers, %d/%d cases identical\n", roots,
              tokenizers, matched, cases);
  if (roots == 0) GTEST_SKIP() << "no reference root has tokenizers/tokenizer_golden.json";
  EXPECT_EQ(matched, cases);
}

}  // namespace
}  // namespace diffuse
