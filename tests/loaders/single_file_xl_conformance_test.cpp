// The tiny SDXL reference UNet (shared/reference/tiny-families/tiny-sdxl-unet, made by diffusers
// v0.30.3) written under its original LDM names (model.diffusion_model.*, label_emb.0 for the
// text_time embedding) and loaded back through ldm_unet_source: the output must be bitwise the
// one of the diffusers-named file, and match diffusers' reference output.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "diffuse/formats/config.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/loaders/single_file.h"
#include "src/loaders/remapped_source.h"
#include "tests/loaders/helpers.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> tiny_sdxl_unet_dirs() {
  std::vector<fs::path> candidates = {testing::shared_dir() / "reference" / "tiny-families" /
                                      "tiny-sdxl-unet"};
  for (const fs::path& r : testing::reference_roots()) {
    candidates.push_back(r / "tiny-sdxl-unet");
    candidates.push_back(r / "tiny-families" / "tiny-sdxl-unet");
  }
  std::vector<fs::path> found;
  std::set<fs::path> seen;
  for (const fs::path& c : candidates) {
    std::error_code ec;
    if (!fs::exists(c / "config.json", ec)) continue;
    const fs::path canonical = fs::canonical(c, ec);
    if (seen.insert(canonical).second) found.push_back(c);
  }
  return found;
}

TEST(SingleFileXlConformance, TinySdxlUnetThroughTheLdmLayout) {
  const auto dirs = tiny_sdxl_unet_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no tiny-sdxl-unet reference model";
  for (const fs::path& dir : dirs) {
    SCOPED_TRACE(dir.string());
    const nlohmann::json config_json = read_json_file(dir / "config.json");
    const auto config = UNet2DConditionConfig::from_json(config_json);
    const loaders::KeyMap map = loaders::unet_key_map(config);
    const auto diffusers = open_tensor_source(dir / "diffusion_pytorch_model.safetensors");

    // 1. The reference weights under LDM names, beside a VAE-like stray key the UNet ignores.
    std::vector<std::pair<std::string, Tensor>> ldm;
    std::set<std::string> names;
    for (const TensorInfo& i : diffusers->tensors()) {
      const auto l = map.to_ldm(i.name, nullptr);
      ASSERT_TRUE(l.has_value()) << i.name << " has no LDM name";
      ASSERT_TRUE(names.insert(*l).second) << "two tensors map to " << *l;
      ldm.emplace_back("model.diffusion_model." + *l, diffusers->get(i.name));
    }
    ASSERT_TRUE(names.count("label_emb.0.0.weight"));
    ASSERT_TRUE(names.count("input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"));
    ldm.emplace_back("first_stage_model.encoder.conv_in.bias", Tensor::zeros({4}));
    const fs::path out = testing::temp_dir("loaders_xl_conformance");
    save_safetensors(out / "tiny_sdxl_unet_ldm.safetensors", ldm);

    // 2. Load both ways.
    const auto file = open_tensor_source(out / "tiny_sdxl_unet_ldm.safetensors");
    const auto mapped = ldm_unet_source(file, config);
    EXPECT_EQ(mapped->tensors().size(), diffusers->tensors().size());
    WeightLoader w(mapped, DType::f32);
    const UNet2DConditionModel from_ldm(config, w);
    EXPECT_TRUE(w.unused().empty());
    const auto reference = UNet2DConditionModel::from_pretrained(dir);

    // 3. Run diffusers' recorded inputs.
    const auto io = open_tensor_source(dir / "reference_io.safetensors");
    UNet2DConditionInputs in;
    in.text_embeds = io->get("in.text_embeds");
    in.time_ids = io->get("in.time_ids");
    const Tensor sample = io->get("in.sample");
    const Tensor t = io->get("in.timestep");
    const Tensor ehs = io->get("in.encoder_hidden_states");
    const Tensor a = from_ldm.forward(sample, t, ehs, in);
    loader_tests::expect_identical(a, reference.forward(sample, t, ehs, in), "unet");
    EXPECT_TRUE(testing::all_close(a, io->get("out.sample"), 1e-4, 1e-4));
    fs::remove_all(out);
  }
}

}  // namespace
}  // namespace diffuse
