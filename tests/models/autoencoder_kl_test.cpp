// AutoencoderKL against diffusers: every tiny/vae_io.json case of every reference root, plus
// tiling and slicing against the untiled model.
#include <gtest/gtest.h>

#include <filesystem>

#include "diffuse/formats/safetensors.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/ops.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

constexpr double kAtol = 1e-4;

TEST(AutoencoderKL, MatchesDiffusersOnEveryReferenceCase) {
  int files = 0, cases = 0;
  for (const fs::path& root : testing::reference_roots()) {
    const fs::path json = root / "tiny" / "vae_io.json";
    if (!fs::exists(json)) continue;
    const nlohmann::json meta = testing::read_json(json);
    const auto vae =
        AutoencoderKL::from_pretrained(root / "tiny" / meta.at("model_dir").get<std::string>());
    const auto io = SafetensorsFile::open(root / "tiny" / "vae_io.safetensors");
    for (const auto& c : meta.at("encode")) {
      const auto post = vae.encode(io.get(c.at("image").get<std::string>()));
      EXPECT_TRUE(testing::all_close(post.mean, io.get(c.at("mean").get<std::string>()), kAtol));
      EXPECT_TRUE(
          testing::all_close(post.logvar, io.get(c.at("logvar").get<std::string>()), kAtol));
      if (c.contains("std")) {
        EXPECT_TRUE(testing::all_close(post.std, io.get(c.at("std").get<std::string>()), kAtol));
      }
      ++cases;
    }
    for (const auto& c : meta.at("decode")) {
      const Tensor image = vae.decode(io.get(c.at("latents").get<std::string>()));
      EXPECT_TRUE(testing::all_close(image, io.get(c.at("image").get<std::string>()), kAtol))
          << c.at("image");
      ++cases;
    }
    ++files;
  }
  if (files == 0) GTEST_SKIP() << "no tiny VAE reference data under " << testing::shared_dir();
  std::printf("AutoencoderKL: %d cases from %d files checked\n", cases, files);
}

TEST(AutoencoderKL, TiledAndSlicedAgreeWithWholeInterior) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  auto vae = AutoencoderKL::from_pretrained(roots[0] / "tiny" / "pipeline" / "vae");
  Generator g(3);
  const Tensor latents = g.randn({2, 4, 24, 40});
  const Tensor whole = vae.decode(latents);
  vae.enable_slicing();
  EXPECT_TRUE(testing::all_close(vae.decode(latents), whole, 1e-5));
  vae.set_tile_size(32);  // 16-latent tiles, 12-latent steps: 2 x 3 tiles
  vae.enable_tiling();
  const Tensor tiled = vae.decode(latents);
  ASSERT_EQ(tiled.shape(), whole.shape());
  // Tiles see less context near their borders, so tiling changes pixels; away from seams the
  // receptive field of this tiny VAE stays inside one tile and results agree closely.
  const Tensor a = tiled.narrow(2, 0, 8).narrow(3, 0, 8);
  const Tensor b = whole.narrow(2, 0, 8).narrow(3, 0, 8);
  const auto d = testing::compare(a, b);
  EXPECT_LT(d.max_abs, 0.5) << testing::describe(d, a, b);
  // Tiled encode keeps the latent shape.
  const Tensor image = g.rand({1, 3, 80, 48});
  const auto post = vae.encode(image);
  EXPECT_EQ(post.mean.shape(), (Shape{1, 4, 40, 24}));
}

}  // namespace
}  // namespace diffuse
