// encode_weighted_prompt on the tiny reference pipeline (tiny/pipeline of the first reference root
// that has one): exact equality with diffusers' encode_prompt for plain prompts, A1111's weighting
// formula, 75-token chunks, BREAK, negative-prompt padding, and the pipeline wiring.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/pipelines/prompt_weighting.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

std::optional<fs::path> tiny_pipeline() {
  for (const fs::path& root : testing::reference_roots())
    if (fs::exists(root / "tiny" / "pipeline" / "model_index.json"))
      return root / "tiny" / "pipeline";
  return std::nullopt;
}

// Tokenizer + text encoder of the tiny pipeline, loaded once for the whole suite.
class PromptWeighting : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = tiny_pipeline();
    if (!dir) return;
    components_ = new StableDiffusionComponents();
    components_->tokenizer =
        std::make_shared<ClipTokenizer>(ClipTokenizer::from_folder(*dir / "tokenizer"));
    components_->text_encoder =
        std::make_shared<CLIPTextModel>(CLIPTextModel::from_pretrained(*dir / "text_encoder"));
  }
  static void TearDownTestSuite() {
    delete components_;
    components_ = nullptr;
  }
  void SetUp() override {
    if (components_ == nullptr)
      GTEST_SKIP() << "no tiny/pipeline reference data under " << testing::shared_dir();
  }

  const ClipTokenizer& tok() const { return *components_->tokenizer; }
  const CLIPTextModel& enc() const { return *components_->text_encoder; }
  int64_t dim() const { return enc().config().hidden_size; }

  // The text encoder's last_hidden_state for explicit ids: [1, L, D].
  Tensor encode_ids(const std::vector<int64_t>& ids) const {
    return enc()
        .forward(Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())}, DType::i64))
        .last_hidden_state;
  }

  // Rows [first, first + count) of a [1, L, D] tensor as [1, count, D].
  static Tensor rows(const Tensor& t, int64_t first, int64_t count) {
    return t.narrow(1, first, count).contiguous();
  }

  // A prompt without commas, syntax or BREAK of exactly `n` tokens.
  std::string prompt_of_tokens(int64_t n) const {
    const std::vector<std::string> words = {"cat", "dog", "house", "tree", "red", "blue", "sky"};
    std::string prompt;
    for (std::size_t i = 0;; ++i) {
      const std::string next = prompt + (prompt.empty() ? "" : " ") + words[i % words.size()];
      const auto count = static_cast<int64_t>(tok().encode_without_special_tokens(next).size());
      if (count > n) break;
      prompt = next;
      if (count == n) return prompt;
    }
    // The last word was several tokens: pad with single-token words to hit n exactly.
    while (static_cast<int64_t>(tok().encode_without_special_tokens(prompt).size()) < n)
      prompt += " a";
    EXPECT_EQ(static_cast<int64_t>(tok().encode_without_special_tokens(prompt).size()), n);
    return prompt;
  }

  static StableDiffusionComponents* components_;
};

StableDiffusionComponents* PromptWeighting::components_ = nullptr;

// Bitwise equality (same shape, every element identical).
::testing::AssertionResult identical(const Tensor& a, const Tensor& b) {
  const auto d = testing::compare(a, b);
  if (!d.shape_mismatch && !d.nonfinite_mismatch && d.max_abs == 0.0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << testing::describe(d, a, b);
}

TEST_F(PromptWeighting, PlainPromptsEqualDiffusersEncodePromptExactly) {
  for (const std::string prompt : {"a photo of an astronaut riding a horse on mars", "",
                                   "A Cat: sitting, on a mat!", "painting of a cat by someone"}) {
    for (const std::optional<int64_t> clip_skip :
         {std::optional<int64_t>{}, std::optional<int64_t>{1}}) {
      SCOPED_TRACE("prompt '" + prompt + "' clip_skip " + std::to_string(clip_skip.value_or(0)));
      const Tensor weighted = encode_weighted_prompt(tok(), enc(), prompt, clip_skip);
      const PromptEmbeds plain =
          encode_prompt(*components_, prompt, 1, false, std::nullopt, clip_skip);
      ASSERT_EQ(weighted.shape(), (Shape{1, 77, dim()}));
      EXPECT_TRUE(identical(weighted, plain.prompt_embeds));
    }
  }
  // Exactly 75 tokens is still one chunk, equal to diffusers.
  const std::string p75 = prompt_of_tokens(75);
  EXPECT_TRUE(identical(
      encode_weighted_prompt(tok(), enc(), p75, std::nullopt),
      encode_prompt(*components_, p75, 1, false, std::nullopt, std::nullopt).prompt_embeds));
}

TEST_F(PromptWeighting, EmphasisScalesTokenRowsThenRestoresTheChunkMean) {
  // "a (cat:1.5)" has the ids of "a cat"; the cat tokens get weight 1.5.
  const std::vector<int64_t> ids = tok().encode_padded("a cat", 77);
  const auto chunks = tokenize_prompt_chunks(tok(), "a (cat:1.5)");
  ASSERT_EQ(chunks.size(), 1u);
  ASSERT_EQ(chunks[0].ids, ids);
  const auto n_a = static_cast<int64_t>(tok().encode_without_special_tokens("a").size());
  const auto n_cat = static_cast<int64_t>(tok().encode_without_special_tokens("cat").size());
  std::vector<double> w(77, 1.0);
  for (int64_t t = 1 + n_a; t < 1 + n_a + n_cat; ++t) w[static_cast<std::size_t>(t)] = 1.5;

  const Tensor z = encode_ids(ids);  // the unweighted encoding [1, 77, D]
  const std::vector<float> zv = z.to_vector<float>();
  const int64_t d = dim();
  // A1111 (sd_hijack_clip.py process_tokens): z *= w; z *= mean(z_before) / mean(z_after).
  double sum = 0, weighted_sum = 0;
  for (int64_t t = 0; t < 77; ++t)
    for (int64_t k = 0; k < d; ++k) {
      sum += zv[static_cast<std::size_t>(t * d + k)];
      weighted_sum += zv[static_cast<std::size_t>(t * d + k)] * w[static_cast<std::size_t>(t)];
    }
  const double scale = sum / weighted_sum;
  ASSERT_GT(std::abs(scale - 1.0), 1e-4) << "the weight must move the mean for this test to bite";
  std::vector<float> expected(zv.size()), unnormalized(zv.size());
  for (int64_t t = 0; t < 77; ++t)
    for (int64_t k = 0; k < d; ++k) {
      const auto i = static_cast<std::size_t>(t * d + k);
      unnormalized[i] = static_cast<float>(zv[i] * w[static_cast<std::size_t>(t)]);
      expected[i] = static_cast<float>(zv[i] * w[static_cast<std::size_t>(t)] * scale);
    }

  const Tensor out = encode_weighted_prompt(tok(), enc(), "a (cat:1.5)", std::nullopt);
  ASSERT_EQ(out.shape(), (Shape{1, 77, d}));
  // Float rounding of the products and of the f32 scale: a few ulps of values of order 1.
  EXPECT_TRUE(testing::all_close(out, Tensor::from_vector(expected, {1, 77, d}), 1e-6, 1e-6));
  // The mean is restored.
  double out_sum = 0;
  for (float v : out.to_vector<float>()) out_sum += v;
  EXPECT_NEAR(out_sum / static_cast<double>(77 * d), sum / static_cast<double>(77 * d), 1e-6);

  // Without mean restoration the cat rows are exactly z * 1.5 and every other row is untouched.
  PromptWeightingOptions no_norm;
  no_norm.restore_mean = false;
  const Tensor raw = encode_weighted_prompt(tok(), enc(), "a (cat:1.5)", std::nullopt, no_norm);
  EXPECT_TRUE(identical(raw, Tensor::from_vector(unnormalized, {1, 77, d})));
  EXPECT_TRUE(identical(rows(raw, 0, 1 + n_a), rows(z, 0, 1 + n_a)));

  // Nested and de-emphasis forms reach the same formula: ((cat)) = 1.21, [cat] = 1 / 1.1.
  const auto c2 = tokenize_prompt_chunks(tok(), "a ((cat))");
  const auto c3 = tokenize_prompt_chunks(tok(), "a [cat]");
  EXPECT_NEAR(c2[0].weights[static_cast<std::size_t>(1 + n_a)], 1.21, 1e-6);
  EXPECT_NEAR(c3[0].weights[static_cast<std::size_t>(1 + n_a)], 1.0 / 1.1, 1e-6);
  EXPECT_FALSE(identical(encode_weighted_prompt(tok(), enc(), "a ((cat))", std::nullopt), z));
  // Literal-text mode ignores the syntax: "\(cat\)" and parse_emphasis=false both keep weight 1.
  PromptWeightingOptions literal;
  literal.parse_emphasis = false;
  EXPECT_TRUE(identical(encode_weighted_prompt(tok(), enc(), "a (cat)", std::nullopt, literal),
                        encode_ids(tok().encode_padded("a (cat)", 77))));
}

TEST_F(PromptWeighting, A200TokenPromptGivesThreeChunks) {
  const std::string prompt = prompt_of_tokens(200);
  const auto chunks = tokenize_prompt_chunks(tok(), prompt);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(count_prompt_chunks(tok(), prompt), 3);
  const Tensor out = encode_weighted_prompt(tok(), enc(), prompt, std::nullopt);
  ASSERT_EQ(out.shape(), (Shape{1, 231, dim()}));
  // Each 77-row block is its chunk encoded on its own (bos + 75 tokens + eos, padded). The chunks
  // run as one batch; the batched GEMMs may round differently from a single run, hence 1e-5.
  for (std::size_t c = 0; c < 3; ++c) {
    SCOPED_TRACE("chunk " + std::to_string(c));
    EXPECT_EQ(chunks[c].ids.front(), tok().bos_id());
    EXPECT_TRUE(testing::all_close(rows(out, static_cast<int64_t>(c) * 77, 77),
                                   encode_ids(chunks[c].ids), 1e-5));
  }
  // The last chunk holds the remaining 50 tokens, then eos and padding.
  EXPECT_EQ(chunks[2].ids[51], tok().eos_id());
  // diffusers would truncate: its embeddings are the first chunk's only, and they differ from ours
  // only past the first block.
  const Tensor truncated =
      encode_prompt(*components_, prompt, 1, false, std::nullopt, std::nullopt).prompt_embeds;
  EXPECT_TRUE(testing::all_close(rows(out, 0, 77), truncated, 1e-5));
}

TEST_F(PromptWeighting, BreakStartsANewChunk) {
  const Tensor out = encode_weighted_prompt(tok(), enc(), "a cat BREAK a (dog:1.2)", std::nullopt);
  ASSERT_EQ(out.shape(), (Shape{1, 154, dim()}));
  EXPECT_TRUE(testing::all_close(
      rows(out, 0, 77), encode_weighted_prompt(tok(), enc(), "a cat", std::nullopt), 1e-5));
  EXPECT_TRUE(testing::all_close(
      rows(out, 77, 77), encode_weighted_prompt(tok(), enc(), "a (dog:1.2)", std::nullopt), 1e-5));
  // BREAK with nothing before it still gives an (all-padding) first chunk, as in A1111.
  EXPECT_EQ(encode_weighted_prompt(tok(), enc(), "BREAK a dog", std::nullopt).size(1), 154);
}

TEST_F(PromptWeighting, NegativePromptIsPaddedToTheSameChunkCount) {
  const std::string long_prompt = prompt_of_tokens(100);  // 2 chunks
  const Tensor empty = encode_weighted_prompt(tok(), enc(), "", std::nullopt);

  // Long positive, short negative: the negative gets an empty second chunk.
  const auto e = encode_weighted_prompt_pair(tok(), enc(), long_prompt, "blurry", std::nullopt);
  ASSERT_EQ(e.prompt_embeds.shape(), (Shape{1, 154, dim()}));
  ASSERT_EQ(e.negative_prompt_embeds.shape(), (Shape{1, 154, dim()}));
  EXPECT_TRUE(testing::all_close(rows(e.negative_prompt_embeds, 0, 77),
                                 encode_weighted_prompt(tok(), enc(), "blurry", std::nullopt),
                                 1e-5));
  EXPECT_TRUE(testing::all_close(rows(e.negative_prompt_embeds, 77, 77), empty, 1e-5));

  // Short positive, long negative: the positive is padded instead.
  const auto r = encode_weighted_prompt_pair(tok(), enc(), "a cat", long_prompt, std::nullopt);
  ASSERT_EQ(r.prompt_embeds.shape(), (Shape{1, 154, dim()}));
  EXPECT_TRUE(testing::all_close(rows(r.prompt_embeds, 77, 77), empty, 1e-5));

  // Through the pipeline's encode_prompt: CFG batch shapes line up, num_images_per_prompt repeats.
  const PromptEmbeds p = encode_prompt(*components_, long_prompt, 2, true, std::string("blurry"),
                                       std::nullopt, {}, {}, true);
  EXPECT_EQ(p.prompt_embeds.shape(), (Shape{2, 154, dim()}));
  EXPECT_EQ(p.negative_prompt_embeds.shape(), (Shape{2, 154, dim()}));
  EXPECT_TRUE(
      identical(rows(p.negative_prompt_embeds.narrow(0, 1, 1), 0, 154), e.negative_prompt_embeds));
  const PromptEmbeds q =
      encode_prompt(*components_, "a cat", 1, true, long_prompt, std::nullopt, {}, {}, true);
  EXPECT_EQ(q.prompt_embeds.shape(), (Shape{1, 154, dim()}));
  EXPECT_TRUE(identical(q.prompt_embeds, r.prompt_embeds));
  // A negative given as embeddings sets the chunk count of the positive.
  const PromptEmbeds s = encode_prompt(*components_, "a cat", 1, true, std::nullopt, std::nullopt,
                                       {}, e.negative_prompt_embeds, true);
  EXPECT_EQ(s.prompt_embeds.shape(), (Shape{1, 154, dim()}));
  // Plain prompts with weighting on equal diffusers' encode_prompt, negative included.
  const PromptEmbeds on = encode_prompt(*components_, "a cat", 1, true, std::string("blurry"),
                                        std::optional<int64_t>{1}, {}, {}, true);
  const PromptEmbeds off = encode_prompt(*components_, "a cat", 1, true, std::string("blurry"),
                                         std::optional<int64_t>{1});
  EXPECT_TRUE(identical(on.prompt_embeds, off.prompt_embeds));
  EXPECT_TRUE(identical(on.negative_prompt_embeds, off.negative_prompt_embeds));
}

TEST_F(PromptWeighting, MinChunksPadsWithEmptyChunks) {
  PromptWeightingOptions o;
  o.min_chunks = 3;
  const Tensor out = encode_weighted_prompt(tok(), enc(), "a cat", std::nullopt, o);
  ASSERT_EQ(out.shape(), (Shape{1, 231, dim()}));
  const Tensor empty = encode_weighted_prompt(tok(), enc(), "", std::nullopt);
  EXPECT_TRUE(testing::all_close(rows(out, 154, 77), empty, 1e-5));
  EXPECT_FALSE(testing::all_close(rows(out, 0, 77), empty, 1e-5));
}

TEST_F(PromptWeighting, BadInputIsAnError) {
  PromptWeightingOptions o;
  o.min_chunks = 0;
  EXPECT_THROW(encode_weighted_prompt(tok(), enc(), "a cat", std::nullopt, o), Error);
  EXPECT_THROW(encode_weighted_prompt(tok(), enc(), "a (cat:1.2.3)", std::nullopt), Error);
  const int64_t layers = enc().config().num_hidden_layers;
  EXPECT_THROW(encode_weighted_prompt(tok(), enc(), "a cat", layers + 1), Error);
  EXPECT_THROW(encode_weighted_prompt(tok(), enc(), "a cat", -1), Error);
  EXPECT_THROW(encode_prompt_chunks(enc(), {}, std::nullopt), Error);
}

// The flag reaches the whole pipeline: with it, a plain prompt gives the same latents as without
// it and "(cat:1.0)" is read as syntax (same latents as "cat"; literal text would differ); a
// weighted prompt with BREAK runs with a 154-token context.
TEST(PromptWeightingPipeline, FlagIsWiredThroughThePipeline) {
  const auto dir = tiny_pipeline();
  if (!dir) GTEST_SKIP() << "no tiny/pipeline reference data under " << testing::shared_dir();
  StableDiffusionPipeline pipe = StableDiffusionPipeline::from_pretrained(*dir);
  StableDiffusionParams p;
  p.prompt = "a cat";
  p.negative_prompt = "blurry";
  p.num_inference_steps = 2;
  p.height = 32;
  p.width = 32;
  p.seeds = {7};
  p.output_type = OutputType::latent;
  const Tensor off = pipe(p).latents;
  p.prompt = "a (cat:1.0)";
  const Tensor literal = pipe(p).latents;
  EXPECT_FALSE(testing::all_close(literal, off, 1e-6)) << "literal parentheses must differ";
  p.prompt_weighting = true;
  EXPECT_TRUE(identical(pipe(p).latents, off));
  p.prompt = "a cat";
  EXPECT_TRUE(identical(pipe(p).latents, off));
  p.prompt = "a (cat:1.4) BREAK sitting on a mat";
  const Tensor weighted = pipe(p).latents;
  ASSERT_EQ(weighted.shape(), off.shape());
  EXPECT_FALSE(testing::all_close(weighted, off, 1e-6));
}

}  // namespace
}  // namespace diffuse
