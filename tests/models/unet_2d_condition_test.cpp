// UNet2DConditionModel against diffusers: every tiny/unet*_io.json case of every reference root.
#include <gtest/gtest.h>

#include <filesystem>

#include "diffuse/formats/safetensors.h"
#include "diffuse/models/unet_2d_condition.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

// Whole-model outputs in float32: diffusers' README tolerance for models (1e-4 absolute).
constexpr double kAtol = 1e-4;

Tensor timestep_tensor(const nlohmann::json& t) {
  if (t.is_array()) return Tensor::from_vector(t.get<std::vector<float>>(), {int64_t(t.size())});
  if (t.is_number_integer()) return Tensor::from_vector<int64_t>({t.get<int64_t>()}, {});
  return Tensor::from_vector<float>({t.get<float>()}, {});
}

TEST(UNet2DConditionModel, MatchesDiffusersOnEveryReferenceCase) {
  int files = 0, cases = 0;
  for (const fs::path& root : testing::reference_roots()) {
    const fs::path tiny = root / "tiny";
    if (!fs::is_directory(tiny)) continue;
    for (const auto& entry : fs::directory_iterator(tiny)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("unet", 0) != 0 || entry.path().extension() != ".json") continue;
      const nlohmann::json meta = testing::read_json(entry.path());
      const fs::path model_dir = tiny / meta.at("model_dir").get<std::string>();
      SCOPED_TRACE(entry.path().string());
      const auto model = UNet2DConditionModel::from_pretrained(model_dir);
      const auto io =
          SafetensorsFile::open(fs::path(entry.path()).replace_extension(".safetensors"));
      for (const auto& c : meta.at("cases")) {
        UNet2DConditionInputs inputs;
        if (c.contains("added_cond_kwargs")) {
          inputs.text_embeds = io.get(c["added_cond_kwargs"]["text_embeds"].get<std::string>());
          inputs.time_ids = io.get(c["added_cond_kwargs"]["time_ids"].get<std::string>());
        }
        const Tensor out = model.forward(
            io.get(c.at("sample").get<std::string>()), timestep_tensor(c.at("timestep")),
            io.get(c.at("encoder_hidden_states").get<std::string>()), inputs);
        const Tensor expected = io.get(c.at("out").get<std::string>());
        EXPECT_TRUE(testing::all_close(out, expected, kAtol))
            << "case " << c.at("out") << " (" << c.value("timestep_desc", "") << ")";
        ++cases;
      }
      ++files;
    }
  }
  if (files == 0) GTEST_SKIP() << "no tiny UNet reference data under " << testing::shared_dir();
  std::printf("UNet2DConditionModel: %d cases from %d files checked\n", cases, files);
}

TEST(UNet2DConditionConfig, RejectsBadConfigs) {
  nlohmann::json j = {{"down_block_types", {"DownBlock2D"}},
                      {"up_block_types", {"UpBlock2D", "UpBlock2D"}},
                      {"block_out_channels", {32}}};
  EXPECT_THROW(UNet2DConditionConfig::from_json(j), Error);
  j = {{"num_attention_heads", 8}};
  EXPECT_THROW(UNet2DConditionConfig::from_json(j), Error);
  j = {{"in_channels", "four"}};
  EXPECT_THROW(UNet2DConditionConfig::from_json(j), Error);
  j = {{"down_block_types",
        {"SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"}}};
  EXPECT_THROW(UNet2DConditionConfig::from_json(j), Error);
}

TEST(UNet2DConditionModel, MissingWeightIsNamed) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  const fs::path dir = roots[0] / "tiny" / "pipeline" / "unet";
  const auto config = UNet2DConditionConfig::from_json(testing::read_json(dir / "config.json"));
  auto source = std::make_shared<MemoryTensorSource>("empty");
  try {
    UNet2DConditionModel model(config, WeightLoader(source, DType::f32));
    FAIL() << "no error for a source without tensors";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("time_embedding.linear_1.weight"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace diffuse

namespace diffuse {
namespace {

// bf16 weights and bf16 compute (f32 accumulation): same model, bf16-level agreement with the
// f32 reference (bf16 keeps 8 significant bits, so errors of a few 1e-2 after ~40 layers).
TEST(UNet2DConditionModel, Bf16WeightsAndCompute) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  const fs::path tiny = roots[0] / "tiny";
  ModelOptions options;
  options.weight_dtype = DType::bf16;
  options.compute_dtype = DType::bf16;
  const auto model = UNet2DConditionModel::from_pretrained(tiny / "pipeline" / "unet", options);
  const nlohmann::json meta = testing::read_json(tiny / "unet_io.json");
  const auto io = SafetensorsFile::open(tiny / "unet_io.safetensors");
  const auto& c = meta.at("cases").at(0);
  const Tensor out =
      model.forward(io.get(c.at("sample").get<std::string>()), timestep_tensor(c.at("timestep")),
                    io.get(c.at("encoder_hidden_states").get<std::string>()));
  const Tensor expected = io.get(c.at("out").get<std::string>());
  EXPECT_EQ(out.dtype(), DType::f32);
  const auto d = testing::compare(out, expected);
  EXPECT_LT(d.max_abs, 0.1) << testing::describe(d, out, expected);
  EXPECT_GT(d.max_abs, 0.0);  // really ran in reduced precision
}

}  // namespace
}  // namespace diffuse
