// The Stable Diffusion pipelines against diffusers: every run of tiny/pipeline_io.json and
// tiny/inpaint_io.json of every reference root, whatever its kind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "diffuse/formats/safetensors.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

// Whole pipelines in float32: the reference README's tolerance (about 1e-4 absolute) for images
// in [0, 1]. Final latents are not normalized: with Karras sigmas they start at sigma_max ~ 14.6
// times the noise and end near +-30, and float32 rounding differences of the UNet, amplified by
// the guidance scale, scale with the whole tensor's magnitude; they get the absolute tolerance
// plus 2e-5 of the tensor's largest |value| (the tensor-scale rule of the scheduler tests).
constexpr double kAtol = 1e-4;
constexpr double kLatentRtol = 2e-5;

// "name (description)" -> name.
std::string tensor_name(const nlohmann::json& v) {
  const std::string s = v.get<std::string>();
  return s.substr(0, s.find(' '));
}

std::optional<uint64_t> run_seed(const nlohmann::json& run) {
  if (run.contains("seed") && !run["seed"].is_null()) return run["seed"].get<uint64_t>();
  if (run.contains("generator") && run["generator"].is_string()) {
    // "torch.Generator('cpu').manual_seed(1234)"
    const std::string g = run["generator"].get<std::string>();
    const std::string key = "manual_seed(";
    const auto at = g.find(key);
    if (at != std::string::npos) return std::stoull(g.substr(at + key.size()));
  }
  return std::nullopt;
}

void fill_common(StableDiffusionParams& p, const nlohmann::json& run, const SafetensorsFile& io) {
  p.prompt = run.at("prompt").get<std::string>();
  if (run.contains("negative_prompt") && !run["negative_prompt"].is_null())
    p.negative_prompt = run["negative_prompt"].get<std::string>();
  p.num_inference_steps = run.at("num_inference_steps").get<int64_t>();
  p.guidance_scale = run.at("guidance_scale").get<double>();
  p.guidance_rescale = run.value("guidance_rescale", 0.0);
  p.num_images_per_prompt = run.value("num_images_per_prompt", int64_t{1});
  if (run.contains("clip_skip") && !run["clip_skip"].is_null())
    p.clip_skip = run["clip_skip"].get<int64_t>();
  if (run.contains("height")) p.height = run["height"].get<int64_t>();
  if (run.contains("width")) p.width = run["width"].get<int64_t>();
  if (run.contains("latents") && !run["latents"].is_null())
    p.latents = io.get(tensor_name(run["latents"]));
  if (const auto seed = run_seed(run)) p.seeds = {*seed};
}

void check_run(StableDiffusionComponents& components, const nlohmann::json& run,
               const SafetensorsFile& io) {
  const std::string name = run.at("name").get<std::string>();
  SCOPED_TRACE(name + " (" + run.value("kind", std::string("golden")) + ")");
  components.scheduler =
      make_scheduler(run.at("scheduler").get<std::string>(), run.at("scheduler_config"));
  const std::string pipeline = run.at("pipeline").get<std::string>();
  PipelineOutput out;
  if (pipeline == "StableDiffusionPipeline") {
    StableDiffusionParams p;
    fill_common(p, run, io);
    out = StableDiffusionPipeline(components)(p);
  } else if (pipeline == "StableDiffusionImg2ImgPipeline") {
    Img2ImgParams p;
    fill_common(p, run, io);
    p.image = io.get(tensor_name(run.at("init_image")));
    p.strength = run.at("strength").get<double>();
    out = StableDiffusionImg2ImgPipeline(components)(p);
  } else if (pipeline == "StableDiffusionInpaintPipeline") {
    InpaintParams p;
    fill_common(p, run, io);
    p.image = io.get(tensor_name(run.at("init_image")));
    p.mask_image = io.get(tensor_name(run.at("mask_image")));
    p.strength = run.value("strength", 1.0);
    out = StableDiffusionInpaintPipeline(components)(p);
  } else {
    ADD_FAILURE() << "unknown pipeline " << pipeline;
    return;
  }
  const Tensor expected = io.get(tensor_name(run.at("image")));
  EXPECT_TRUE(testing::all_close(out.images, expected, kAtol)) << "image";
  if (run.contains("latents_out")) {
    const Tensor expected_latents = io.get(tensor_name(run["latents_out"]));
    double scale = 0;
    for (const double v : expected_latents.to_vector<double>())
      scale = std::max(scale, std::fabs(v));
    EXPECT_TRUE(testing::all_close(out.latents, expected_latents, kAtol + kLatentRtol * scale))
        << "latents_out";
  }
  // encode_prompt on its own where the run records it.
  if (run.contains("prompt_embeds") && run["prompt_embeds"].is_string()) {
    const auto e = encode_prompt(components, run.at("prompt").get<std::string>(), 1, true,
                                 run["negative_prompt"].is_null()
                                     ? std::nullopt
                                     : std::optional(run["negative_prompt"].get<std::string>()),
                                 run.contains("clip_skip") && !run["clip_skip"].is_null()
                                     ? std::optional(run["clip_skip"].get<int64_t>())
                                     : std::nullopt);
    EXPECT_TRUE(
        testing::all_close(e.prompt_embeds, io.get(tensor_name(run["prompt_embeds"])), 1e-5));
    EXPECT_TRUE(testing::all_close(e.negative_prompt_embeds,
                                   io.get(tensor_name(run["negative_prompt_embeds"])), 1e-5));
  }
}

TEST(StableDiffusionPipelines, MatchDiffusersOnEveryReferenceRun) {
  int files = 0, runs = 0;
  for (const fs::path& root : testing::reference_roots()) {
    for (const char* file : {"pipeline_io.json", "inpaint_io.json"}) {
      const fs::path json = root / "tiny" / file;
      if (!fs::exists(json)) continue;
      const nlohmann::json meta = testing::read_json(json);
      auto components = StableDiffusionComponents::from_pretrained(
          root / "tiny" / meta.at("pipeline_dir").get<std::string>());
      const auto io = SafetensorsFile::open(fs::path(json).replace_extension(".safetensors"));
      for (const auto& run : meta.at("runs")) {
        check_run(components, run, io);
        ++runs;
      }
      ++files;
    }
  }
  if (files == 0) GTEST_SKIP() << "no tiny pipeline reference data under " << testing::shared_dir();
  std::printf("Stable Diffusion pipelines: %d runs from %d files checked\n", runs, files);
}

TEST(StableDiffusionPipelines, BadArgumentsAreErrors) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  StableDiffusionPipeline pipe =
      StableDiffusionPipeline::from_pretrained(roots[0] / "tiny" / "pipeline");
  StableDiffusionParams p;
  p.prompt = "a cat";
  p.num_inference_steps = 1;
  p.height = 60;  // not a multiple of 8
  EXPECT_THROW(pipe(p), Error);
  p.height = 64;
  p.latents = Tensor::zeros({1, 4, 8, 8});
  EXPECT_THROW(pipe(p), Error);
  p.latents = Tensor();
  p.seeds = {1, 2, 3};  // three seeds for one image
  EXPECT_THROW(pipe(p), Error);
  p.seeds = {1};
  p.callback = [](const StepInfo&) { return false; };
  EXPECT_THROW(pipe(p), Error);
}

TEST(StableDiffusionPipelines, SameSeedSameImage) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  StableDiffusionPipeline pipe =
      StableDiffusionPipeline::from_pretrained(roots[0] / "tiny" / "pipeline");
  StableDiffusionParams p;
  p.prompt = "a cat";
  p.num_inference_steps = 2;
  p.seeds = {7};
  p.output_type = OutputType::latent;
  const auto a = pipe(p), b = pipe(p);
  EXPECT_TRUE(testing::all_close(a.latents, b.latents, 0.0));
  p.seeds = {8};
  EXPECT_FALSE(testing::all_close(pipe(p).latents, a.latents, 1e-3));
}

// diffusers' generator lists in image-to-image: the image is repeated before encoding, so image
// i draws its posterior sample and its noise from generator i alone.
TEST(StableDiffusionPipelines, Img2ImgWithOneSeedPerImage) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  StableDiffusionImg2ImgPipeline pipe(
      StableDiffusionComponents::from_pretrained(roots[0] / "tiny" / "pipeline"));
  Img2ImgParams p;
  p.prompt = "a cat";
  p.num_inference_steps = 4;
  p.image = Generator(3).rand({1, 32, 32, 3});
  p.num_images_per_prompt = 2;
  p.seeds = {5, 6};
  p.output_type = OutputType::latent;
  const Tensor two = pipe(p).latents;
  p.num_images_per_prompt = 1;
  for (int64_t i = 0; i < 2; ++i) {
    p.seeds = {static_cast<uint64_t>(5 + i)};
    EXPECT_TRUE(testing::all_close(two.narrow(0, i, 1), pipe(p).latents, 1e-5)) << "image " << i;
  }
}

}  // namespace
}  // namespace diffuse
