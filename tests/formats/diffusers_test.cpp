#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>

#include "diffuse/formats/diffusers.h"
#include "diffuse/formats/safetensors.h"
#include "tests/formats/writers.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void touch_safetensors(const std::filesystem::path& p, const std::string& name, float value) {
  save_safetensors(p, {{name, Tensor::from_vector<float>({value}, {1})}});
}

TEST(Diffusers, AddVariantAsDiffusers) {
  EXPECT_EQ(add_variant("diffusion_pytorch_model.safetensors", "fp16"),
            "diffusion_pytorch_model.fp16.safetensors");
  EXPECT_EQ(add_variant("diffusion_pytorch_model.safetensors.index.json", "fp16"),
            "diffusion_pytorch_model.safetensors.index.fp16.json");
  EXPECT_EQ(add_variant("pytorch_model.bin", "ema"), "pytorch_model.ema.bin");
  EXPECT_EQ(add_variant("model.safetensors", ""), "model.safetensors");
}

TEST(Diffusers, ParsesModelIndex) {
  const auto m = parse_model_index(R"({"_class_name": "StableDiffusionPipeline",
      "_diffusers_version": "0.6.0", "unet": ["diffusers", "UNet2DConditionModel"],
      "safety_checker": [null, null], "requires_safety_checker": false,
      "text_encoder": ["transformers", "CLIPTextModel"]})",
                                   "model_index.json");
  EXPECT_EQ(m.class_name, "StableDiffusionPipeline");
  EXPECT_EQ(m.diffusers_version, "0.6.0");
  ASSERT_EQ(m.components.size(), 2u);
  EXPECT_EQ(m.components[0].name, "unet");
  EXPECT_EQ(m.components[0].library, "diffusers");
  EXPECT_EQ(m.components[1].class_name, "CLIPTextModel");
  EXPECT_EQ(m.absent, (std::vector<std::string>{"safety_checker"}));
  EXPECT_EQ(m.options.at("requires_safety_checker"), "false");

  const auto err = [](const std::string& json) {
    return error_of([&] { parse_model_index(json, "mi.json"); });
  };
  EXPECT_NE(err("{").find("mi.json: not valid JSON"), std::string::npos);
  EXPECT_NE(err("[1]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(err(R"({"unet": ["diffusers", "X"]})").find("_class_name"), std::string::npos);
  EXPECT_NE(err(R"({"_class_name": "P", "unet": ["diffusers"]})").find("[library, class]"),
            std::string::npos);
  EXPECT_NE(err(R"({"_class_name": "P", "unet": ["diffusers", 3]})").find("[library, class]"),
            std::string::npos);
  EXPECT_NE(err(R"({"_class_name": "P", "unet": ["diffusers", null]})").find("only one"),
            std::string::npos);
  EXPECT_NE(err(R"({"_class_name": "P", "../x": ["diffusers", "A"]})").find("plain folder"),
            std::string::npos);
  EXPECT_NE(err(std::string(100000, '[') + std::string(100000, ']')).find("nested deeper"),
            std::string::npos);
}

TEST(Diffusers, ReadsEveryRealModelIndexAndWeightIndex) {
  const auto root = testing::shared_dir() / "assets/model-configs";
  if (!std::filesystem::exists(root)) GTEST_SKIP() << "assets missing: " << root;
  int indexes = 0, weight_maps = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    std::ifstream in(e.path());
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    if (name == "model_index.json") {
      const auto m = parse_model_index(text, e.path().string());
      EXPECT_FALSE(m.class_name.empty()) << e.path();
      EXPECT_FALSE(m.components.empty()) << e.path();
      for (const auto& c : m.components) {
        // Every declared component that has files here has a config or tokenizer files.
        const auto folder = e.path().parent_path() / c.name;
        if (!std::filesystem::exists(folder) || c.name.find("tokenizer") != std::string::npos)
          continue;
        if (c.name == "feature_extractor" || c.name.starts_with("scheduler") ||
            std::filesystem::exists(folder / "config.json")) {
          EXPECT_NO_THROW(find_config_file(folder)) << folder;
        }
      }
      ++indexes;
    } else if (name.ends_with(".json") && name.find(".index") != std::string::npos) {
      const auto map = parse_weight_index(text, e.path().string());
      EXPECT_GT(map.size(), 10u) << e.path();
      ++weight_maps;
    }
  }
  EXPECT_GE(indexes, 15);
  EXPECT_GE(weight_maps, 5);
  // SD 1.5 declares the usual components.
  const auto sd15 = root / "runwayml/stable-diffusion-v1-5/model_index.json";
  if (std::filesystem::exists(sd15)) {
    std::ifstream in(sd15);
    const auto m = parse_model_index(std::string((std::istreambuf_iterator<char>(in)), {}), "sd15");
    std::vector<std::string> names;
    for (const auto& c : m.components) names.push_back(c.name);
    for (const char* n : {"unet", "vae", "text_encoder", "tokenizer", "scheduler"})
      EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  // The tokenizer folders of SD 1.5 hold tokenizer_config + special_tokens_map (vocab left out).
  const auto tok = root / "runwayml/stable-diffusion-v1-5/tokenizer";
  if (std::filesystem::exists(tok)) {
    EXPECT_NE(error_of([&] { find_tokenizer_files(tok); }).find("not a tokenizer folder"),
              std::string::npos);
  }
}

TEST(Diffusers, ResolvesWeightFilesAsDiffusers) {
  const auto dir = testing::temp_dir("weights");
  const auto err = error_of([&] { find_weight_files(dir); });
  EXPECT_NE(err.find("diffusion_pytorch_model.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("pytorch_model.bin"), std::string::npos) << err;

  testing::write_file(dir / "diffusion_pytorch_model.bin", "x");
  EXPECT_EQ(find_weight_files(dir).files.at(0).filename(), "diffusion_pytorch_model.bin");
  EXPECT_FALSE(find_weight_files(dir).safetensors);
  touch_safetensors(dir / "diffusion_pytorch_model.safetensors", "a", 1);
  EXPECT_EQ(find_weight_files(dir).files.at(0).filename(), "diffusion_pytorch_model.safetensors");
  // A variant picks its own files; a variant that is absent is an error naming it.
  touch_safetensors(dir / "diffusion_pytorch_model.fp16.safetensors", "a", 2);
  EXPECT_EQ(find_weight_files(dir, "fp16").files.at(0).filename(),
            "diffusion_pytorch_model.fp16.safetensors");
  EXPECT_NE(error_of([&] { find_weight_files(dir, "ema"); }).find("variant 'ema'"),
            std::string::npos);
  EXPECT_EQ(open_tensor_source(dir, "fp16")->get("a").item<float>(), 2.0f);
  EXPECT_EQ(open_tensor_source(dir)->get("a").item<float>(), 1.0f);

  // A sharded index wins over the single file; shards are combined.
  touch_safetensors(dir / "diffusion_pytorch_model-00001-of-00002.safetensors", "x", 3);
  touch_safetensors(dir / "diffusion_pytorch_model-00002-of-00002.safetensors", "y", 4);
  testing::write_file(dir / "diffusion_pytorch_model.safetensors.index.json",
                      R"({"metadata": {"total_size": 8}, "weight_map": {
                           "x": "diffusion_pytorch_model-00001-of-00002.safetensors",
                           "y": "diffusion_pytorch_model-00002-of-00002.safetensors"}})");
  const WeightFiles w = find_weight_files(dir);
  ASSERT_TRUE(w.index.has_value());
  EXPECT_EQ(w.files.size(), 2u);
  const auto src = open_tensor_source(dir);
  EXPECT_EQ(src->format(), "safetensors (sharded)");
  EXPECT_EQ(src->tensors().size(), 2u);
  EXPECT_EQ(src->get("y").item<float>(), 4.0f);
  EXPECT_EQ(src->info("x").file,
            (dir / "diffusion_pytorch_model-00001-of-00002.safetensors").string());

  // transformers names (text encoders).
  const auto te = testing::temp_dir("weights_te");
  touch_safetensors(te / "model.safetensors", "t", 5);
  EXPECT_EQ(find_weight_files(te).files.at(0).filename(), "model.safetensors");
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(te);
}

TEST(Diffusers, RejectsBrokenShardIndexes) {
  const auto dir = testing::temp_dir("shards");
  touch_safetensors(dir / "a.safetensors", "x", 1);
  const auto idx = dir / "model.safetensors.index.json";
  const auto expect = [&](const std::string& json, const std::string& needle) {
    testing::write_file(idx, json);
    const std::string e = error_of([&] { open_tensor_source(idx); });
    EXPECT_NE(e.find(needle), std::string::npos) << e;
    EXPECT_NE(e.find(idx.string()), std::string::npos) << e;
  };
  expect(R"({"weight_map": {"x": "missing.safetensors"}})", "is missing");
  expect(R"({"weight_map": {"y": "a.safetensors"}})", "does not hold it");
  expect(R"({"weight_map": {"x": "../a.safetensors"}})", "not a plain file name");
  expect(R"({"weight_map": {"x": 3}})", "not a file name string");
  expect(R"({"metadata": {}})", "weight_map");
  expect("{", "not valid JSON");
  std::filesystem::remove_all(dir);
}

TEST(Diffusers, OpensTinyPipelineFolder) {
  const auto root = testing::shared_dir() / "reference/base/tiny/pipeline";
  if (!std::filesystem::exists(root)) GTEST_SKIP() << "reference missing: " << root;
  const auto f = DiffusersPipelineFolder::open(root);
  EXPECT_EQ(f.index().class_name, "StableDiffusionPipeline");
  EXPECT_EQ(f.index().components.size(), 5u);
  EXPECT_EQ(f.component("unet").class_name, "UNet2DConditionModel");
  EXPECT_EQ(f.component("text_encoder").library, "transformers");
  EXPECT_EQ(f.find("safety_checker"), nullptr);
  EXPECT_NE(error_of([&] { f.component("prior"); }).find("has no component 'prior'"),
            std::string::npos);
  EXPECT_EQ(f.config_path("scheduler").filename(), "scheduler_config.json");
  EXPECT_EQ(f.config_path("unet").filename(), "config.json");
  EXPECT_EQ(f.weight_files("text_encoder").files.at(0).filename(), "model.safetensors");
  const auto unet = f.open_weights("unet");
  EXPECT_GT(unet->tensors().size(), 10u);
  EXPECT_TRUE(unet->contains("conv_in.weight"));
  const auto tok = f.tokenizer_files("tokenizer");
  EXPECT_TRUE(tok.vocab_json && tok.merges_txt && tok.special_tokens_map_json);
  EXPECT_FALSE(tok.spiece_model.has_value());
  // The folder opens as a tensor source through its component folders only.
  EXPECT_THROW(open_tensor_source(root), Error);
}

}  // namespace
}  // namespace diffuse
