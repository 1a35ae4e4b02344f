// The SDXL pipelines on a tiny SDXL model assembled from the reference data: diffusers' SDXL test
// UNet and VAE (reference/tiny-families, checked against diffusers in tiny_families_test.cpp),
// the tiny CLIP text encoder and tokenizer as text_encoder, and a random-weight
// CLIPTextModelWithProjection (hidden 32, projection 32) as text_encoder_2, as in diffusers'
// SDXL test components. There are no whole-pipeline reference runs for SDXL: the tests check
// encode_prompt against the encoders, the denoising loop against a loop written out here, and
// the properties diffusers' own SDXL tests check (the ensemble of expert denoisers gives the
// full run, inpainting keeps the unmasked region, errors).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "diffuse/formats/config.h"
#include "diffuse/loaders/random_weights.h"
#include "diffuse/ops.h"
#include "diffuse/pipelines/prompt_weighting.h"
#include "diffuse/pipelines/stable_diffusion_xl.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kEulerConfig =
    R"({"_class_name":"EulerDiscreteScheduler","beta_end":0.012,"beta_schedule":"scaled_linear",
        "beta_start":0.00085,"interpolation_type":"linear","num_train_timesteps":1000,
        "prediction_type":"epsilon","steps_offset":1,"timestep_spacing":"leading",
        "use_karras_sigmas":false})";

void write_json(const fs::path& p, const json& j) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << j.dump(2);
}

json component(const char* library, const char* cls) {
  return json::array({library, cls});
}

// Writes a random-weight model for `config` into `folder`.
void random_model(const json& config, const fs::path& folder, uint64_t seed) {
  const fs::path cfg = folder.string() + ".config.json";
  write_json(cfg, config);
  RandomWeightsOptions o;
  o.seed = seed;
  write_random_weights(cfg, folder, o);
}

class StableDiffusionXLTest : public ::testing::Test {
 protected:
  static fs::path root() {
    static const fs::path r =
        fs::path(::testing::TempDir()) / ("diffuse-sdxl-" + std::to_string(::getpid()));
    return r;
  }
  static fs::path base() { return root() / "base"; }
  static fs::path refiner() { return root() / "refiner"; }
  static bool available() {
    return fs::exists(family("tiny-sdxl-unet")) && !testing::reference_roots().empty();
  }
  static fs::path family(const std::string& name) {
    return testing::shared_dir() / "reference" / "tiny-families" / name;
  }

  static void SetUpTestSuite() {
    if (!available()) return;
    const fs::path tiny = testing::shared_dir() / "reference";
    fs::remove_all(root());
    // Base: CLIP-L-like + bigG-like encoders, the SDXL test UNet and VAE.
    const fs::path b = base();
    fs::create_directories(b);
    fs::create_directory_symlink(tiny / "base" / "tiny" / "pipeline" / "tokenizer",
                                 b / "tokenizer");
    fs::create_directory_symlink(tiny / "base" / "tiny" / "pipeline" / "text_encoder",
                                 b / "text_encoder");
    fs::create_directory_symlink(tiny / "extra" / "tiny" / "tokenizer_proj", b / "tokenizer_2");
    json te2 = testing::read_json(tiny / "extra" / "tiny" / "text_encoder_proj" / "config.json");
    te2["projection_dim"] = 32;
    random_model(te2, b / "text_encoder_2", 11);
    fs::create_directory_symlink(family("tiny-sdxl-unet"), b / "unet");
    fs::create_directory_symlink(family("tiny-sdxl-vae"), b / "vae");
    write_json(b / "scheduler" / "scheduler_config.json", json::parse(kEulerConfig));
    write_json(b / "model_index.json",
               {{"_class_name", "StableDiffusionXLPipeline"},
                {"force_zeros_for_empty_prompt", true},
                {"scheduler", component("diffusers", "EulerDiscreteScheduler")},
                {"text_encoder", component("transformers", "CLIPTextModel")},
                {"text_encoder_2", component("transformers", "CLIPTextModelWithProjection")},
                {"tokenizer", component("transformers", "CLIPTokenizer")},
                {"tokenizer_2", component("transformers", "CLIPTokenizer")},
                {"unet", component("diffusers", "UNet2DConditionModel")},
                {"vae", component("diffusers", "AutoencoderKL")}});

    // Refiner in the early layout: its only (bigG) encoder named text_encoder; the UNet reads
    // 32-wide text and 5 time ids (original size, crop, aesthetic score).
    const fs::path r = refiner();
    fs::create_directories(r);
    fs::create_directory_symlink(tiny / "extra" / "tiny" / "tokenizer_proj", r / "tokenizer");
    fs::create_directory_symlink(b / "text_encoder_2", r / "text_encoder");
    json unet = testing::read_json(family("tiny-sdxl-unet") / "config.json");
    unet["cross_attention_dim"] = 32;
    unet["projection_class_embeddings_input_dim"] = 5 * 8 + 32;
    random_model(unet, r / "unet", 12);
    fs::create_directory_symlink(family("tiny-sdxl-vae"), r / "vae");
    write_json(r / "scheduler" / "scheduler_config.json", json::parse(kEulerConfig));
    write_json(r / "model_index.json",
               {{"_class_name", "StableDiffusionXLImg2ImgPipeline"},
                {"force_zeros_for_empty_prompt", false},
                {"requires_aesthetics_score", true},
                {"scheduler", component("diffusers", "EulerDiscreteScheduler")},
                {"text_encoder", component("transformers", "CLIPTextModelWithProjection")},
                {"tokenizer", component("transformers", "CLIPTokenizer")},
                {"unet", component("diffusers", "UNet2DConditionModel")},
                {"vae", component("diffusers", "AutoencoderKL")}});
  }
  static void TearDownTestSuite() { fs::remove_all(root()); }

  void SetUp() override {
    if (!available())
      GTEST_SKIP() << "no tiny SDXL reference models under " << testing::shared_dir();
  }

  static StableDiffusionXLParams params() {
    StableDiffusionXLParams p;
    p.prompt = "a photo of a cat";
    p.num_inference_steps = 4;
    p.guidance_scale = 5.0;
    p.height = p.width = 32;
    p.seeds = {0};
    p.output_type = OutputType::latent;
    return p;
  }

  // hidden_states[-(2 + skip)] of one encoder, and its text_embeds.
  static std::pair<Tensor, Tensor> encode(const ClipTokenizer& tok, const CLIPTextModel& enc,
                                          const std::string& text, int64_t skip = 0) {
    const auto ids = tok.encode_padded(text, 77);
    const auto out = enc.forward(Tensor::from_vector(ids, {1, 77}, DType::i64), true);
    return {out.hidden_states[out.hidden_states.size() - 2 - static_cast<std::size_t>(skip)],
            out.text_embeds};
  }
};

TEST_F(StableDiffusionXLTest, LoadsBaseAndEarlyRefinerLayouts) {
  const auto b = StableDiffusionXLComponents::from_pretrained(base());
  EXPECT_TRUE(b.text_encoder && b.tokenizer && b.text_encoder_2 && b.tokenizer_2);
  EXPECT_TRUE(b.force_zeros_for_empty_prompt);
  EXPECT_FALSE(b.requires_aesthetics_score);
  EXPECT_EQ(b.vae_scale_factor(), 2);
  const auto r = StableDiffusionXLComponents::from_pretrained(refiner());
  EXPECT_FALSE(r.text_encoder || r.tokenizer);
  ASSERT_TRUE(r.text_encoder_2 && r.tokenizer_2);
  EXPECT_TRUE(r.text_encoder_2->config().with_projection);
  EXPECT_TRUE(r.requires_aesthetics_score);
  EXPECT_FALSE(r.force_zeros_for_empty_prompt);
  // An SD 1.x folder is not an SDXL pipeline.
  EXPECT_THROW(StableDiffusionXLComponents::from_pretrained(testing::reference_roots()[0] / "tiny" /
                                                            "pipeline"),
               Error);
}

TEST_F(StableDiffusionXLTest, EncodePromptConcatenatesPenultimateStatesOfBothEncoders) {
  const auto c = StableDiffusionXLComponents::from_pretrained(base());
  auto p = params();
  const auto e = encode_prompt(c, p, true);
  const auto [h1, pooled1] = encode(*c.tokenizer, *c.text_encoder, p.prompt);
  const auto [h2, pooled2] = encode(*c.tokenizer_2, *c.text_encoder_2, p.prompt);
  EXPECT_FALSE(pooled1.defined());
  EXPECT_TRUE(testing::all_close(e.prompt_embeds, ops::concat({h1, h2}, -1), 0.0));
  EXPECT_TRUE(testing::all_close(e.pooled_prompt_embeds, pooled2, 0.0));
  EXPECT_EQ(e.prompt_embeds.shape(), (Shape{1, 77, 64}));
  // No negative prompt + force_zeros_for_empty_prompt: zeros.
  EXPECT_TRUE(testing::all_close(e.negative_prompt_embeds, Tensor::full({1, 77, 64}, 0.0), 0.0));
  EXPECT_TRUE(testing::all_close(e.negative_pooled_prompt_embeds, Tensor::full({1, 32}, 0.0), 0.0));

  // An explicit empty negative prompt is encoded; prompt_2 feeds the second encoder only;
  // clip_skip reads one layer further back; several images repeat the embeddings.
  p.negative_prompt = "";
  p.prompt_2 = "a painting of a dog";
  p.clip_skip = 1;
  p.num_images_per_prompt = 2;
  const auto f = encode_prompt(c, p, true);
  const auto [s1, unused1] = encode(*c.tokenizer, *c.text_encoder, p.prompt, 1);
  const auto [s2, pooled_dog] = encode(*c.tokenizer_2, *c.text_encoder_2, *p.prompt_2, 1);
  const Tensor one = ops::concat({s1, s2}, -1);
  EXPECT_TRUE(testing::all_close(f.prompt_embeds, ops::concat({one, one}, 0), 0.0));
  EXPECT_TRUE(testing::all_close(f.pooled_prompt_embeds.chunk(2, 0)[1], pooled_dog, 0.0));
  const auto [n1, unused2] = encode(*c.tokenizer, *c.text_encoder, "");
  const auto [n2, pooled_empty] = encode(*c.tokenizer_2, *c.text_encoder_2, "");
  EXPECT_TRUE(
      testing::all_close(f.negative_prompt_embeds.chunk(2, 0)[0], ops::concat({n1, n2}, -1), 0.0));
  EXPECT_TRUE(
      testing::all_close(f.negative_pooled_prompt_embeds.chunk(2, 0)[0], pooled_empty, 0.0));
}

// The pipeline against the denoising loop written out: CFG batch, Euler scaling, the UNet with
// pooled embeddings and time ids (original 32x32, crop 0,0, target 32x32), guidance, step.
TEST_F(StableDiffusionXLTest, TextToImageMatchesTheLoopWrittenOut) {
  auto c = StableDiffusionXLComponents::from_pretrained(base());
  auto p = params();
  p.latents = Generator(5).randn({1, 4, 16, 16});
  const PipelineOutput out = StableDiffusionXLPipeline{c}(p);

  const auto e = encode_prompt(c, p, true);
  auto scheduler = make_scheduler("EulerDiscreteScheduler", json::parse(kEulerConfig));
  SetTimestepsArgs a;
  a.num_inference_steps = p.num_inference_steps;
  scheduler->set_timesteps(a);
  Tensor latents = ops::mul(p.latents, *scheduler->init_noise_sigma());
  UNet2DConditionInputs added;
  added.text_embeds = ops::concat({e.negative_pooled_prompt_embeds, e.pooled_prompt_embeds}, 0);
  const Tensor ids = Tensor::from_vector<float>({32, 32, 0, 0, 32, 32}, {1, 6});
  added.time_ids = ops::concat({ids, ids}, 0);
  const Tensor context = ops::concat({e.negative_prompt_embeds, e.prompt_embeds}, 0);
  for (const double t : scheduler->timesteps()) {
    const Tensor in = scheduler->scale_model_input(ops::concat({latents, latents}, 0), t);
    const auto pred =
        c.unet->forward(in, Tensor::from_vector<double>({t}, {}), context, added).chunk(2, 0);
    const Tensor guided = ops::add(pred[0], ops::mul(ops::sub(pred[1], pred[0]), 5.0));
    latents = scheduler->step(guided, t, latents, {}).prev_sample;
  }
  EXPECT_TRUE(testing::all_close(out.latents, latents, 1e-6));

  // The micro-conditioning reaches the UNet.
  p.original_size = SizeHW{64, 64};
  EXPECT_FALSE(testing::all_close(StableDiffusionXLPipeline{c}(p).latents, latents, 1e-4));

  // Decoding: the VAE of latents / scaling_factor, in [0, 1] NHWC.
  p.original_size.reset();
  p.output_type = OutputType::image;
  const PipelineOutput img = StableDiffusionXLPipeline{c}(p);
  const Tensor decoded = c.vae->decode(ops::div(latents, c.vae->config().scaling_factor));
  const Tensor expected =
      ops::clamp(ops::add(ops::mul(decoded, 0.5), 0.5), 0.0, 1.0).permute({0, 2, 3, 1});
  EXPECT_EQ(img.images.shape(), (Shape{1, 32, 32, 3}));
  EXPECT_TRUE(testing::all_close(img.images, expected.contiguous(), 1e-5));
}

// diffusers' test_stable_diffusion_two_xl_mixture_of_denoiser: the base stopped at
// denoising_end and the img2img pipeline started at the same denoising_start run exactly the
// full schedule's steps, so with the same UNet they give the full run's latents.
TEST_F(StableDiffusionXLTest, EnsembleOfExpertDenoisersGivesTheFullRun) {
  auto c = StableDiffusionXLComponents::from_pretrained(base());
  auto p = params();
  p.num_inference_steps = 10;
  const Tensor full = StableDiffusionXLPipeline{c}(p).latents;

  std::vector<double> seen;
  auto record = [&](const StepInfo& info) {
    seen.push_back(info.timestep);
    return true;
  };
  p.denoising_end = 0.6;
  p.callback = record;
  const Tensor first = StableDiffusionXLPipeline{c}(p).latents;
  EXPECT_EQ(seen, (std::vector<double>{901, 801, 701, 601, 501, 401}));  // t >= 400

  StableDiffusionXLImg2ImgParams q;
  static_cast<StableDiffusionXLParams&>(q) = params();
  q.num_inference_steps = 10;
  q.image_latents = first;
  q.denoising_start = 0.6;
  q.callback = record;
  seen.clear();
  const Tensor refined = StableDiffusionXLImg2ImgPipeline{c}(q).latents;
  EXPECT_EQ(seen, (std::vector<double>{301, 201, 101, 1}));
  EXPECT_TRUE(testing::all_close(refined, full, 1e-6));

  q.denoising_end = 0.5;  // start must precede end
  EXPECT_THROW(StableDiffusionXLImg2ImgPipeline{c}(q), Error);
}

TEST_F(StableDiffusionXLTest, RefinerUsesAestheticScores) {
  auto r = StableDiffusionXLComponents::from_pretrained(refiner());
  StableDiffusionXLImg2ImgParams q;
  static_cast<StableDiffusionXLParams&>(q) = params();
  q.image_latents = Generator(3).randn({1, 4, 16, 16});
  q.strength = 0.5;
  const Tensor a = StableDiffusionXLImg2ImgPipeline{r}(q).latents;
  EXPECT_EQ(a.shape(), (Shape{1, 4, 16, 16}));
  EXPECT_TRUE(testing::all_close(StableDiffusionXLImg2ImgPipeline{r}(q).latents, a, 0.0));
  q.aesthetic_score = 100.0;  // random weights: the time ids move the result only slightly
  EXPECT_FALSE(testing::all_close(StableDiffusionXLImg2ImgPipeline{r}(q).latents, a, 1e-6));

  // A refiner UNet without aesthetic scores, a base UNet with them: diffusers' messages (which
  // name the flag from the opposite point of view).
  r.requires_aesthetics_score = false;
  try {
    StableDiffusionXLImg2ImgPipeline{r}(q);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("disable `requires_aesthetics_score`"), std::string::npos)
        << e.what();
  }
  auto b = StableDiffusionXLComponents::from_pretrained(base());
  b.requires_aesthetics_score = true;
  StableDiffusionXLImg2ImgParams bq;
  static_cast<StableDiffusionXLParams&>(bq) = params();
  bq.image_latents = q.image_latents;
  try {
    StableDiffusionXLImg2ImgPipeline{b}(bq);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("enable `requires_aesthetics_score`"), std::string::npos)
        << e.what();
  }
}

TEST_F(StableDiffusionXLTest, ImageToImageFromPixels) {
  auto c = StableDiffusionXLComponents::from_pretrained(base());
  StableDiffusionXLImg2ImgParams q;
  static_cast<StableDiffusionXLParams&>(q) = params();
  q.height.reset();
  q.width.reset();
  q.image = Generator(4).rand({1, 32, 32, 3});
  q.num_images_per_prompt = 2;
  q.seeds = {1, 2};  // one generator per image
  const PipelineOutput two = StableDiffusionXLImg2ImgPipeline{c}(q);
  EXPECT_EQ(two.latents.shape(), (Shape{2, 4, 16, 16}));
  // Image 0 of a per-image generator list is the image of that seed alone.
  q.num_images_per_prompt = 1;
  q.seeds = {1};
  const PipelineOutput one = StableDiffusionXLImg2ImgPipeline{c}(q);
  EXPECT_TRUE(testing::all_close(two.latents.chunk(2, 0)[0], one.latents, 1e-5));
}

// A regular (4-channel) UNet with a mask that keeps everything: the last blend leaves exactly
// the image latents, i.e. the VAE posterior sample of the first draw of the generator.
TEST_F(StableDiffusionXLTest, InpaintingKeepsTheUnmaskedRegion) {
  auto c = StableDiffusionXLComponents::from_pretrained(base());
  StableDiffusionXLInpaintParams q;
  static_cast<StableDiffusionXLParams&>(q) = params();
  q.image = Generator(4).rand({1, 32, 32, 3});
  q.mask_image = Tensor::full({32, 32}, 0.0);
  q.seeds = {7};
  const Tensor out = StableDiffusionXLInpaintPipeline{c}(q).latents;
  Generator g(7);
  const auto posterior =
      c.vae->encode(ops::sub(ops::mul(q.image, 2.0), 1.0).permute({0, 3, 1, 2}).contiguous());
  const Tensor expected =
      ops::mul(posterior.sample(g.randn(posterior.mean.shape())), c.vae->config().scaling_factor);
  EXPECT_TRUE(testing::all_close(out, expected, 1e-6));

  // Masking everything changes the result.
  q.mask_image = Tensor::full({32, 32}, 1.0);
  EXPECT_FALSE(testing::all_close(StableDiffusionXLInpaintPipeline{c}(q).latents, expected, 1e-3));
}

TEST_F(StableDiffusionXLTest, NineChannelInpaintingUNet) {
  auto c = StableDiffusionXLComponents::from_pretrained(base());
  json unet = testing::read_json(family("tiny-sdxl-unet") / "config.json");
  unet["in_channels"] = 9;
  random_model(unet, root() / "unet9", 13);
  c.unet = std::make_shared<UNet2DConditionModel>(
      UNet2DConditionModel::from_pretrained(root() / "unet9"));
  StableDiffusionXLInpaintParams q;
  static_cast<StableDiffusionXLParams&>(q) = params();
  q.image = Generator(4).rand({1, 32, 32, 3});
  q.mask_image = ops::pad(Tensor::full({32, 16}, 1.0), {0, 16});  // left half repainted
  const Tensor a = StableDiffusionXLInpaintPipeline{c}(q).latents;
  EXPECT_EQ(a.shape(), (Shape{1, 4, 16, 16}));
  // Image latents without masked-image latents cannot feed a 9-channel UNet.
  StableDiffusionXLInpaintParams l = q;
  l.image = Tensor();
  l.image_latents = a;
  EXPECT_THROW(StableDiffusionXLInpaintPipeline{c}(l), Error);
  l.masked_image_latents = a;
  EXPECT_EQ(StableDiffusionXLInpaintPipeline{c}(l).latents.shape(), a.shape());
}

// A1111 prompt syntax on both encoders: a plain prompt is exactly diffusers' encode_prompt, a
// weight changes the embeddings, a long prompt gets two 77-token chunks on both encoders (and
// the negative prompt is padded to match), pooled from the first chunk.
TEST_F(StableDiffusionXLTest, PromptWeightingOnBothEncoders) {
  const auto c = StableDiffusionXLComponents::from_pretrained(base());
  auto p = params();
  p.negative_prompt = "blurry";
  const auto plain = encode_prompt(c, p, true);
  p.prompt_weighting = true;
  const auto same = encode_prompt(c, p, true);
  EXPECT_TRUE(testing::all_close(same.prompt_embeds, plain.prompt_embeds, 0.0));
  EXPECT_TRUE(testing::all_close(same.pooled_prompt_embeds, plain.pooled_prompt_embeds, 0.0));
  EXPECT_TRUE(testing::all_close(same.negative_prompt_embeds, plain.negative_prompt_embeds, 0.0));

  p.prompt = "a photo of a (cat:1.5)";
  const auto weighted = encode_prompt(c, p, true);
  EXPECT_EQ(weighted.prompt_embeds.shape(), plain.prompt_embeds.shape());
  EXPECT_FALSE(testing::all_close(weighted.prompt_embeds, plain.prompt_embeds, 1e-4));

  std::string long_prompt;  // just over one chunk for both tokenizers
  while (count_prompt_chunks(*c.tokenizer, long_prompt) < 2 ||
         count_prompt_chunks(*c.tokenizer_2, long_prompt) < 2)
    long_prompt += "red cat, ";
  p.prompt = long_prompt;
  const auto two = encode_prompt(c, p, true);
  EXPECT_EQ(two.prompt_embeds.shape(), (Shape{1, 154, 64}));
  EXPECT_EQ(two.negative_prompt_embeds.shape(), (Shape{1, 154, 64}));
  EXPECT_EQ(two.pooled_prompt_embeds.shape(), (Shape{1, 32}));
  // The pipeline runs with the longer context.
  p.num_inference_steps = 2;
  EXPECT_EQ(StableDiffusionXLPipeline{c}(p).latents.shape(), (Shape{1, 4, 16, 16}));
}

TEST_F(StableDiffusionXLTest, InvalidInputsAreErrors) {
  auto c = StableDiffusionXLComponents::from_pretrained(base());
  StableDiffusionXLPipeline pipe(c);
  auto p = params();
  p.prompt.clear();
  p.prompt_embeds = Tensor::full({1, 77, 64}, 0.1);
  EXPECT_THROW(pipe(p), Error);  // no pooled_prompt_embeds
  p.pooled_prompt_embeds = Tensor::full({1, 32}, 0.1);
  EXPECT_EQ(pipe(p).latents.shape(), (Shape{1, 4, 16, 16}));
  p.pooled_prompt_embeds = Tensor::full({1, 24}, 0.1);  // wrong width for the UNet
  EXPECT_THROW(pipe(p), Error);
  p = params();
  p.height = 36;  // not a multiple of 8
  EXPECT_THROW(pipe(p), Error);
  p = params();
  p.denoising_end = 0.0001;  // leaves no step
  EXPECT_THROW(pipe(p), Error);
  StableDiffusionXLImg2ImgParams q;
  static_cast<StableDiffusionXLParams&>(q) = params();
  EXPECT_THROW(StableDiffusionXLImg2ImgPipeline{c}(q), Error);  // neither image nor latents
  q.image_latents = Tensor::full({1, 3, 16, 16}, 0.0);          // wrong channel count
  EXPECT_THROW(StableDiffusionXLImg2ImgPipeline{c}(q), Error);
}

}  // namespace
}  // namespace diffuse
