// A random-weight model with the real SD 1.5 shapes (the public configs in
// shared/assets/model-configs): written as a diffusers folder and as an original LDM single file
// of the same weights, loaded both ways, the whole pipeline gives identical images. About 2 GB
// of bf16 files are written to the test's temporary folder; labelled `large`.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>

#include "diffuse/formats/safetensors.h"
#include "diffuse/loaders/random_weights.h"
#include "diffuse/loaders/single_file.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "tests/loaders/helpers.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

TEST(RealShapes, Sd15FromPretrainedAndFromSingleFileGiveTheSameImage) {
  const fs::path configs =
      testing::shared_dir() / "assets" / "model-configs" / "runwayml" / "stable-diffusion-v1-5";
  const fs::path vocab = testing::shared_dir() / "assets" / "clip-tokenizer";
  if (!fs::exists(configs / "model_index.json") || !fs::exists(vocab / "vocab.json"))
    GTEST_SKIP() << "no SD 1.5 configs / CLIP vocabulary under " << testing::shared_dir();
  const fs::path tmp =
      fs::path(::testing::TempDir()) / ("diffuse-sd15-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  const fs::path folder = tmp / "stable-diffusion-v1-5";
  RandomWeightsOptions ro;
  ro.dtype = DType::bf16;
  write_random_weights(configs, folder, ro);
  for (const char* f : {"vocab.json", "merges.txt"})
    fs::copy_file(vocab / f, folder / "tokenizer" / f, fs::copy_options::overwrite_existing);
  // The real shapes: SD 1.5's UNet has 859 520 964 parameters.
  EXPECT_EQ(
      loader_tests::count_params(
          SafetensorsFile::open(folder / "unet" / "diffusion_pytorch_model.safetensors").entries()),
      859520964);
  const fs::path single = tmp / "sd15.safetensors";
  save_single_file(folder, single);

  StableDiffusionParams p;
  p.prompt = "a photo of a cat";
  p.height = p.width = 64;  // 8x8 latents: every block runs, in seconds
  p.num_inference_steps = 2;
  p.seeds = {1};
  ModelOptions mo;
  mo.weight_dtype = DType::bf16;
  mo.compute_dtype = DType::bf16;
  // One model at a time keeps the peak memory at one model's.
  Tensor from_folder, from_single;
  {
    StableDiffusionPipeline pipe(StableDiffusionComponents::from_pretrained(folder, mo));
    from_folder = pipe(p).images;
  }
  {
    StableDiffusionPipeline pipe(from_single_file(single, mo, folder / "tokenizer"));
    from_single = pipe(p).images;
  }
  EXPECT_EQ(from_folder.shape(), (Shape{1, 64, 64, 3}));
  EXPECT_TRUE(testing::all_close(from_single, from_folder, 0.0));
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace diffuse
