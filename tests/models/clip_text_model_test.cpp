// CLIPTextModel(WithProjection) against transformers: every tiny/clip*_io.json case of every
// reference root.
#include <gtest/gtest.h>

#include <filesystem>

#include "diffuse/formats/safetensors.h"
#include "diffuse/models/clip_text_model.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

// Single encoder outputs in float32 (issue 5: within 1e-5).
constexpr double kAtol = 1e-5;

void check(const CLIPTextModel& model, const SafetensorsFile& io, const std::string& prefix,
           int& cases) {
  const std::string ids_name = prefix + "input_ids";
  if (!io.contains(ids_name)) return;
  const auto out = model.forward(io.get(ids_name), true);
  SCOPED_TRACE(prefix);
  EXPECT_TRUE(
      testing::all_close(out.last_hidden_state, io.get(prefix + "last_hidden_state"), kAtol));
  EXPECT_TRUE(testing::all_close(out.pooler_output, io.get(prefix + "pooler_output"), kAtol));
  if (io.contains(prefix + "text_embeds")) {
    EXPECT_TRUE(testing::all_close(out.text_embeds, io.get(prefix + "text_embeds"), kAtol));
  }
  const Tensor& m2 = out.hidden_states[out.hidden_states.size() - 2];
  if (io.contains(prefix + "hidden_states_m2")) {
    EXPECT_TRUE(testing::all_close(m2, io.get(prefix + "hidden_states_m2"), kAtol));
  }
  if (io.contains(prefix + "penultimate_after_final_layer_norm")) {
    EXPECT_TRUE(testing::all_close(model.final_layer_norm(m2),
                                   io.get(prefix + "penultimate_after_final_layer_norm"), kAtol));
  }
  ++cases;
}

TEST(CLIPTextModel, MatchesTransformersOnEveryReferenceCase) {
  int files = 0, cases = 0;
  for (const fs::path& root : testing::reference_roots()) {
    const fs::path tiny = root / "tiny";
    if (!fs::is_directory(tiny)) continue;
    for (const auto& entry : fs::directory_iterator(tiny)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("clip", 0) != 0 || entry.path().extension() != ".json") continue;
      const nlohmann::json meta = testing::read_json(entry.path());
      SCOPED_TRACE(entry.path().string());
      const auto model =
          CLIPTextModel::from_pretrained(tiny / meta.at("model_dir").get<std::string>());
      EXPECT_EQ(model.config().with_projection,
                meta.value("model_class", "CLIPTextModel") == "CLIPTextModelWithProjection");
      const auto io =
          SafetensorsFile::open(fs::path(entry.path()).replace_extension(".safetensors"));
      for (const char* prefix : {"", "short/", "noeos/"}) check(model, io, prefix, cases);
      ++files;
    }
  }
  if (files == 0) GTEST_SKIP() << "no tiny CLIP reference data under " << testing::shared_dir();
  std::printf("CLIPTextModel: %d input sets from %d files checked\n", cases, files);
}

TEST(CLIPTextModel, RejectsBadInput) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  const auto model =
      CLIPTextModel::from_pretrained(roots[0] / "tiny" / "pipeline" / "text_encoder");
  EXPECT_THROW(model.forward(Tensor::zeros({1, 78}, DType::i64)), Error);
  EXPECT_THROW(model.forward(Tensor::zeros({1, 5}, DType::f32)), Error);
  EXPECT_THROW(model.forward(Tensor::full({1, 3}, 5000, DType::i64)), Error);  // id >= vocab
}

}  // namespace
}  // namespace diffuse

namespace diffuse {
namespace {

TEST(CLIPTextModel, Bf16WeightsAndCompute) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference data";
  const fs::path tiny = roots[0] / "tiny";
  ModelOptions options;
  options.weight_dtype = DType::bf16;
  options.compute_dtype = DType::bf16;
  const auto model = CLIPTextModel::from_pretrained(tiny / "pipeline" / "text_encoder", options);
  const auto io = SafetensorsFile::open(tiny / "clip_io.safetensors");
  const auto out = model.forward(io.get("input_ids"));
  const Tensor expected = io.get("last_hidden_state");
  const auto d = testing::compare(out.last_hidden_state, expected);
  EXPECT_LT(d.max_abs, 0.1) << testing::describe(d, out.last_hidden_state, expected);
}

}  // namespace
}  // namespace diffuse
