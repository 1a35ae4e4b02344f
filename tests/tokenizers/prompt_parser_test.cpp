// A1111 prompt syntax: parse_prompt_attention against the examples of A1111's own docstring,
// chunking of long / BREAK / comma prompts, and the mean-restoring weighting.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "diffuse/tokenizers/prompt_parser.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

using Fragments = std::vector<PromptFragment>;

PromptFragment text(const std::string& t, double w) {
  return {t, w, false};
}
PromptFragment brk() {
  return {"", 1.0, true};
}

// ---- parse_prompt_attention ---------------------------------------------------------------------

// The doctests of parse_prompt_attention in stable-diffusion-webui modules/prompt_parser.py;
// weights are compared exactly (same double operations in the same order).
TEST(ParsePromptAttention, A1111DocstringExamples) {
  EXPECT_EQ(parse_prompt_attention("normal text"), (Fragments{text("normal text", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("an (important) word"),
            (Fragments{text("an ", 1.0), text("important", 1.1), text(" word", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("(unbalanced"), (Fragments{text("unbalanced", 1.1)}));
  EXPECT_EQ(parse_prompt_attention("\\(literal\\]"), (Fragments{text("(literal]", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("(unnecessary)(parens)"),
            (Fragments{text("unnecessaryparens", 1.1)}));
  EXPECT_EQ(parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            (Fragments{text("a ", 1.0), text("house", 1.5730000000000004), text(" ", 1.1),
                       text("on", 1.0), text(" a ", 1.1), text("hill", 0.55), text(", sun, ", 1.1),
                       text("sky", 1.4641000000000006), text(".", 1.1)}));
}

TEST(ParsePromptAttention, NestingAndExplicitWeights) {
  const auto two = parse_prompt_attention("((word))");
  ASSERT_EQ(two.size(), 1u);
  EXPECT_DOUBLE_EQ(two[0].weight, 1.1 * 1.1);
  const auto square = parse_prompt_attention("[word]");
  ASSERT_EQ(square.size(), 1u);
  EXPECT_EQ(square[0].weight, 1.0 / 1.1);
  EXPECT_EQ(parse_prompt_attention("(word:1.3)"), (Fragments{text("word", 1.3)}));
  EXPECT_EQ(parse_prompt_attention("(a:.5) (b:2.) (c:-1) (d:+0.25)"),
            (Fragments{text("a", 0.5), text(" ", 1.0), text("b", 2.0), text(" ", 1.0),
                       text("c", -1.0), text(" ", 1.0), text("d", 0.25)}));
  EXPECT_EQ(parse_prompt_attention("(a:0)"), (Fragments{text("a", 0.0)}));
  // Weights of explicit and implicit brackets multiply.
  EXPECT_EQ(parse_prompt_attention("((a:2))")[0].weight, 2.0 * 1.1);
}

TEST(ParsePromptAttention, EscapesAndUnbalancedBrackets) {
  EXPECT_EQ(parse_prompt_attention("a \\(b\\) \\[c\\] d\\\\e"),
            (Fragments{text("a (b) [c] d\\e", 1.0)}));
  // A lone backslash is dropped (A1111's "\\" alternative yields text[1:] == "").
  EXPECT_EQ(parse_prompt_attention("x\\y"), (Fragments{text("xy", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("a) b] c"), (Fragments{text("a) b] c", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("word:1.3) x"), (Fragments{text("word:1.3) x", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("[unclosed (both"),
            (Fragments{text("unclosed ", 1.0 / 1.1), text("both", 1.1 * (1.0 / 1.1))}));
  EXPECT_EQ(parse_prompt_attention("a: b"), (Fragments{text("a: b", 1.0)}));
  EXPECT_EQ(parse_prompt_attention(""), (Fragments{text("", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("()"), (Fragments{text("", 1.0)}));
  EXPECT_THROW(parse_prompt_attention("(a:1.2.3)"), Error);
  EXPECT_THROW(parse_prompt_attention("(a:.)"), Error);
  // Without an open '(' a malformed weight is just text, as in A1111.
  EXPECT_EQ(parse_prompt_attention("a:1.2.3)"), (Fragments{text("a:1.2.3)", 1.0)}));
}

TEST(ParsePromptAttention, Break) {
  EXPECT_EQ(parse_prompt_attention("a BREAK b"),
            (Fragments{text("a", 1.0), brk(), text("b", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("a, BREAK, b"),
            (Fragments{text("a,", 1.0), brk(), text(", b", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("BREAK"), (Fragments{text("", 1.0), brk(), text("", 1.0)}));
  // Only the whole upper-case word.
  EXPECT_EQ(parse_prompt_attention("aBREAK break BREAKs"),
            (Fragments{text("aBREAK break BREAKs", 1.0)}));
  EXPECT_EQ(parse_prompt_attention("a BREAK BREAK b"),
            (Fragments{text("a", 1.0), brk(), text("", 1.0), brk(), text("b", 1.0)}));
  // Inside brackets BREAK still breaks; the text around it keeps the bracket's weight.
  EXPECT_EQ(parse_prompt_attention("(a BREAK b)"),
            (Fragments{text("a", 1.1), brk(), text("b", 1.1)}));
}

// ---- tokenize_prompt_chunks ---------------------------------------------------------------------

fs::path reference_tokenizer(const std::string& name) {
  for (const auto& root : testing::reference_roots()) {
    const fs::path p = root / "tokenizers" / name;
    if (fs::exists(p / "vocab.json")) return p;
  }
  return {};
}

// The real CLIP vocabulary, loaded once for all tests of this file (nullptr when absent).
const ClipTokenizer* clip_l() {
  static const std::unique_ptr<ClipTokenizer> tok = []() -> std::unique_ptr<ClipTokenizer> {
    const fs::path folder = reference_tokenizer("clip-vit-large-patch14");
    if (folder.empty()) return nullptr;
    return std::make_unique<ClipTokenizer>(ClipTokenizer::from_folder(folder));
  }();
  return tok.get();
}

class PromptChunks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (clip_l() == nullptr) GTEST_SKIP() << "reference tokenizer clip-vit-large-patch14 not found";
  }
  const ClipTokenizer& tok() const { return *clip_l(); }
  int64_t id(const std::string& word) const { return tok().encode_without_special_tokens(word)[0]; }
};

// Without special syntax and with at most 75 tokens the chunk is what diffusers feeds CLIP.
TEST_F(PromptChunks, PlainPromptEqualsEncodePadded) {
  for (const std::string prompt : {"a photo of an astronaut riding a horse on mars", "", "   ",
                                   "A painting of a squirrel eating a burger",
                                   "\xe2\x80\x9c"
                                   "curly quotes\xe2\x80\x9d and \xe2\x80\x98single\xe2\x80\x99",
                                   "numbers 1234567890 3.14159 1e-5 2024-01-31, a: b; c",
                                   "<|startoftext|> literal special tokens <|endoftext|>"}) {
    const auto chunks = tokenize_prompt_chunks(tok(), prompt);
    ASSERT_EQ(chunks.size(), 1u) << prompt;
    EXPECT_EQ(chunks[0].ids, tok().encode_padded(prompt, 77)) << prompt;
    EXPECT_EQ(chunks[0].weights, std::vector<float>(77, 1.0f)) << prompt;
  }
}

TEST_F(PromptChunks, TwoHundredTokensGiveThreeChunks) {
  std::string prompt;
  for (int i = 0; i < 200; ++i) prompt += "cat ";
  ASSERT_EQ(tok().encode_without_special_tokens(prompt).size(), 200u);
  const auto chunks = tokenize_prompt_chunks(tok(), prompt);
  ASSERT_EQ(chunks.size(), 3u);
  const int64_t cat = id("cat"), bos = tok().bos_id(), eos = tok().eos_id(), pad = tok().pad_id();
  std::vector<int64_t> full(77, cat);
  full.front() = bos;
  full.back() = eos;
  EXPECT_EQ(chunks[0].ids, full);
  EXPECT_EQ(chunks[1].ids, full);
  std::vector<int64_t> last(77, pad);
  last[0] = bos;
  for (int i = 1; i <= 50; ++i) last[static_cast<std::size_t>(i)] = cat;
  last[51] = eos;
  EXPECT_EQ(chunks[2].ids, last);
  const Tensor ids = prompt_chunk_ids(chunks);
  EXPECT_EQ(ids.shape(), (Shape{3, 77}));
  EXPECT_EQ(ids.dtype(), DType::i64);
  EXPECT_EQ(ids.to_vector<int64_t>()[77 * 2 + 51], eos);
  const Tensor weights = prompt_chunk_weights(chunks);
  EXPECT_EQ(weights.shape(), (Shape{3, 77}));
  EXPECT_EQ(weights.dtype(), DType::f32);
}

TEST_F(PromptChunks, CommaBacktrackMovesTheLastClauseToTheNextChunk) {
  // 60 x "cat", ",", 20 x "dog": the chunk fills up 14 tokens after the comma (<= 20), so the
  // 14 dogs move to the second chunk.
  std::string prompt;
  for (int i = 0; i < 60; ++i) prompt += "cat ";
  prompt += ",";
  for (int i = 0; i < 20; ++i) prompt += " dog";
  const int64_t cat = id("cat"), dog = id("dog"), comma = id(","), bos = tok().bos_id(),
                eos = tok().eos_id(), pad = tok().pad_id();
  const auto chunks = tokenize_prompt_chunks(tok(), prompt);
  ASSERT_EQ(chunks.size(), 2u);
  std::vector<int64_t> first{bos};
  first.insert(first.end(), 60, cat);
  first.push_back(comma);
  first.push_back(eos);
  first.resize(77, pad);
  EXPECT_EQ(chunks[0].ids, first);
  std::vector<int64_t> second{bos};
  second.insert(second.end(), 20, dog);
  second.push_back(eos);
  second.resize(77, pad);
  EXPECT_EQ(chunks[1].ids, second);

  // With the backtrack disabled the chunk is cut at 75 tokens.
  PromptChunkOptions no_backtrack;
  no_backtrack.comma_padding_backtrack = 0;
  const auto cut = tokenize_prompt_chunks(tok(), prompt, no_backtrack);
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(cut[0].ids[61], comma);
  EXPECT_EQ(cut[0].ids[75], dog);
  EXPECT_EQ(cut[1].ids[6], dog);
  EXPECT_EQ(cut[1].ids[7], eos);

  // A comma further back than 20 tokens does not move anything.
  std::string far = "cat ,";
  for (int i = 0; i < 80; ++i) far += " dog";
  const auto kept = tokenize_prompt_chunks(tok(), far);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].ids[75], dog);
}

TEST_F(PromptChunks, BreakStartsANewChunk) {
  const auto chunks = tokenize_prompt_chunks(tok(), "a red cat BREAK a blue dog");
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].ids, tok().encode_padded("a red cat"));
  EXPECT_EQ(chunks[1].ids, tok().encode_padded("a blue dog"));
  // A leading BREAK closes an empty chunk first, as A1111 does.
  const auto lead = tokenize_prompt_chunks(tok(), "BREAK cat");
  ASSERT_EQ(lead.size(), 2u);
  EXPECT_EQ(lead[0].ids, empty_prompt_chunk(tok()).ids);
  EXPECT_EQ(lead[1].ids, tok().encode_padded("cat"));
  // With emphasis parsing off, BREAK and brackets are plain text.
  PromptChunkOptions plain;
  plain.parse_emphasis = false;
  const auto raw = tokenize_prompt_chunks(tok(), "(a) BREAK b", plain);
  ASSERT_EQ(raw.size(), 1u);
  EXPECT_EQ(raw[0].ids, tok().encode_padded("(a) BREAK b"));
}

TEST_F(PromptChunks, WeightsFollowTheTokens) {
  const auto chunks = tokenize_prompt_chunks(tok(), "a (red:1.5) [cat], ((dog))");
  ASSERT_EQ(chunks.size(), 1u);
  const auto& c = chunks[0];
  EXPECT_EQ(c.ids, tok().encode_padded("a red cat, dog"));
  const std::vector<float> expected_head = {
      1.0f, 1.0f, 1.5f, static_cast<float>(1 / 1.1), 1.0f, static_cast<float>(1.1 * 1.1), 1.0f};
  ASSERT_EQ(c.weights.size(), 77u);
  for (std::size_t i = 0; i < expected_head.size(); ++i) {
    EXPECT_EQ(c.weights[i], expected_head[i]) << "position " << i;
  }
  for (std::size_t i = expected_head.size(); i < 77; ++i) EXPECT_EQ(c.weights[i], 1.0f);
}

TEST_F(PromptChunks, TinyVocabularyAndOptionChecks) {
  const fs::path folder = reference_tokenizer("tiny-clip-1000");
  if (folder.empty()) GTEST_SKIP() << "tiny-clip-1000 not found";
  const ClipTokenizer tiny = ClipTokenizer::from_folder(folder);
  const std::string prompt = "masterpiece, best quality, 8k wallpaper";
  const auto chunks = tokenize_prompt_chunks(tiny, prompt);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].ids, tiny.encode_padded(prompt));
  PromptChunkOptions bad;
  bad.chunk_length = 0;
  EXPECT_THROW(tokenize_prompt_chunks(tiny, prompt, bad), Error);
  bad.chunk_length = 75;
  bad.comma_padding_backtrack = -1;
  EXPECT_THROW(tokenize_prompt_chunks(tiny, prompt, bad), Error);
  EXPECT_THROW(prompt_chunk_ids({}), Error);
}

// ---- apply_prompt_weights -----------------------------------------------------------------------

TEST(ApplyPromptWeights, MultipliesThenRestoresTheMeanPerChunk) {
  const int64_t chunks = 2, tokens = 3, dim = 4;
  std::vector<float> z(static_cast<std::size_t>(chunks * tokens * dim));
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = 0.25f * static_cast<float>(i) - 1.0f;
  const std::vector<float> w = {1.0f, 1.5f, 0.5f, 1.0f, 2.0f, 1.0f};
  const Tensor zt = Tensor::from_vector(z, {chunks, tokens, dim});
  const Tensor wt = Tensor::from_vector(w, {chunks, tokens});

  const auto plain = apply_prompt_weights(zt, wt, /*restore_mean=*/false).to_vector<float>();
  const auto restored = apply_prompt_weights(zt, wt).to_vector<float>();
  for (int64_t c = 0; c < chunks; ++c) {
    double before = 0, after = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t k = 0; k < dim; ++k) {
        const std::size_t i = static_cast<std::size_t>((c * tokens + t) * dim + k);
        const float weighted = z[i] * w[static_cast<std::size_t>(c * tokens + t)];
        EXPECT_EQ(plain[i], weighted);
        before += z[i];
        after += weighted;
      }
    }
    const float scale = static_cast<float>(before / 12) / static_cast<float>(after / 12);
    double restored_sum = 0;
    for (int64_t i = c * 12; i < (c + 1) * 12; ++i) {
      const auto k = static_cast<std::size_t>(i);
      EXPECT_EQ(restored[k], plain[k] * scale);
      restored_sum += restored[k];
    }
    EXPECT_NEAR(restored_sum / 12, before / 12, 1e-5);  // the mean is what it was
  }
  // All weights 1: unchanged.
  const auto same =
      apply_prompt_weights(zt, Tensor::full({chunks, tokens}, 1.0)).to_vector<float>();
  EXPECT_EQ(same, z);
}

TEST(ApplyPromptWeights, KeepsTheDtypeAndChecksArguments) {
  const Tensor z = Tensor::full({1, 2, 3}, 0.5, DType::bf16);
  const Tensor w = Tensor::from_vector(std::vector<float>{2.0f, 1.0f}, {1, 2});
  const Tensor out = apply_prompt_weights(z, w);
  EXPECT_EQ(out.dtype(), DType::bf16);
  EXPECT_EQ(out.shape(), (Shape{1, 2, 3}));
  EXPECT_THROW(apply_prompt_weights(Tensor::zeros({2, 3}), w), Error);
  EXPECT_THROW(apply_prompt_weights(Tensor::zeros({1, 3, 3}), w), Error);
  EXPECT_THROW(apply_prompt_weights(Tensor::zeros({1, 2, 3}, DType::i32), w), Error);
  // A zero mean after weighting cannot be restored.
  EXPECT_THROW(apply_prompt_weights(Tensor::zeros({1, 2, 3}), w), Error);
}

}  // namespace
}  // namespace diffuse
