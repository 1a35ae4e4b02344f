// The tiny model families of shared/reference/tiny-families (diffusers' own test dummies:
// SD and SDXL UNets and VAEs, and a 2-step DDIM + CFG run) against their reference_io tensors.
#include <gtest/gtest.h>

#include <filesystem>

#include "diffuse/formats/config.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/models/unet_2d_condition.h"
#include "diffuse/ops.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

constexpr double kAtol = 1e-5;  // single models in float32 (the reference README)

fs::path family(const std::string& name) {
  return testing::shared_dir() / "reference" / "tiny-families" / name;
}

#define SKIP_WITHOUT(dir) \
  if (!fs::exists((dir) / "reference_io.safetensors")) GTEST_SKIP() << "no " << (dir)

void check_unet(const std::string& name) {
  const fs::path dir = family(name);
  SKIP_WITHOUT(dir);
  const auto unet = UNet2DConditionModel::from_pretrained(dir);
  const auto io = SafetensorsFile::open(dir / "reference_io.safetensors");
  UNet2DConditionInputs extra;
  if (io.contains("in.text_embeds")) {
    extra.text_embeds = io.get("in.text_embeds");
    extra.time_ids = io.get("in.time_ids");
  }
  const Tensor out = unet.forward(io.get("in.sample"), io.get("in.timestep"),
                                  io.get("in.encoder_hidden_states"), extra);
  EXPECT_TRUE(testing::all_close(out, io.get("out.sample"), kAtol));
}

void check_vae(const std::string& name) {
  const fs::path dir = family(name);
  SKIP_WITHOUT(dir);
  const auto vae = AutoencoderKL::from_pretrained(dir);
  const auto io = SafetensorsFile::open(dir / "reference_io.safetensors");
  const auto posterior = vae.encode(io.get("in.image"));
  EXPECT_TRUE(testing::all_close(posterior.mean, io.get("out.latent_mean"), kAtol));
  EXPECT_TRUE(testing::all_close(posterior.logvar, io.get("out.latent_logvar"), kAtol));
  EXPECT_TRUE(
      testing::all_close(vae.decode(posterior.mean), io.get("out.decoded_from_mean"), kAtol));
}

TEST(TinyFamilies, SdUNet) {
  check_unet("tiny-sd-unet");
}
TEST(TinyFamilies, SdxlUNetWithTextTimeConditioning) {
  check_unet("tiny-sdxl-unet");
}
TEST(TinyFamilies, SdVae) {
  check_vae("tiny-sd-vae");
}
TEST(TinyFamilies, SdxlVae) {
  check_vae("tiny-sdxl-vae");
}

// tiny-sd-unet + tiny-sd-vae through StableDiffusionPipeline with given embeddings and latents:
// DDIM, 2 steps, CFG 6.0; every step's latents and the decoded image.
TEST(TinyFamilies, SdPipelineRunWithEmbeddings) {
  const fs::path dir = family("tiny-sd-pipeline-run");
  SKIP_WITHOUT(dir);
  const auto io = SafetensorsFile::open(dir / "reference_io.safetensors");
  StableDiffusionComponents c;
  c.unet = std::make_shared<UNet2DConditionModel>(
      UNet2DConditionModel::from_pretrained(family("tiny-sd-unet")));
  c.vae = std::make_shared<AutoencoderKL>(AutoencoderKL::from_pretrained(family("tiny-sd-vae")));
  c.scheduler = make_scheduler("DDIMScheduler", read_json_file(dir / "scheduler_config.json"));
  StableDiffusionPipeline pipe(c);

  StableDiffusionParams p;
  p.prompt_embeds = io.get("in.cond");
  p.negative_prompt_embeds = io.get("in.uncond");
  p.latents = io.get("in.latents");
  p.num_inference_steps = 2;
  p.guidance_scale = 6.0;
  p.height = p.width = 32;
  std::vector<Tensor> steps;
  p.callback = [&](const StepInfo& info) {
    steps.push_back(info.latents->clone());
    return true;
  };
  const PipelineOutput out = pipe(p);

  EXPECT_EQ(c.scheduler->timesteps(), io.get("in.timesteps").to(DType::f64).to_vector<double>());
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_TRUE(testing::all_close(steps[0], io.get("step0.latents"), 1e-4));
  EXPECT_TRUE(testing::all_close(steps[1], io.get("step1.latents"), 1e-4));
  const Tensor expected = io.get("out.image_01").permute({0, 2, 3, 1}).contiguous();
  EXPECT_TRUE(testing::all_close(out.images, expected, 1e-4));
}

}  // namespace
}  // namespace diffuse
