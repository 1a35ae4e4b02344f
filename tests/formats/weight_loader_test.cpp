#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "diffuse/formats/safetensors.h"
#include "diffuse/formats/weight_loader.h"
#include "tests/formats/writers.h"

namespace diffuse {
namespace {

std::shared_ptr<MemoryTensorSource> make_source() {
  auto s = std::make_shared<MemoryTensorSource>("unet.safetensors");
  std::vector<float> w(4 * 2 * 3 * 3);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f;
  s->insert("down_blocks.0.resnets.1.conv1.weight", Tensor::from_vector(w, {4, 2, 3, 3}));
  s->insert("down_blocks.0.resnets.1.conv1.bias", Tensor::from_vector<float>({1, 2, 3, 4}, {4}));
  s->insert("conv_in.weight", Tensor::from_vector<float>({1, 2}, {2}, DType::f16));
  s->insert("position_ids", Tensor::from_vector<int64_t>({0, 1, 2}, {1, 3}));
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(WeightLoader, ScopesChecksShapesAndConverts) {
  WeightLoader w(make_source(), DType::f32);
  const WeightLoader conv = w.scope("down_blocks").scope(0).scope("resnets").scope(1);
  EXPECT_EQ(conv.prefix(), "down_blocks.0.resnets.1");
  EXPECT_EQ(conv.full_name("conv1.weight"), "down_blocks.0.resnets.1.conv1.weight");
  const Tensor k = conv.get("conv1.weight", {4, 2, 3, 3});
  EXPECT_EQ(k.to_vector<float>()[5], 2.5f);
  EXPECT_TRUE(conv.contains("conv1.bias"));
  EXPECT_FALSE(conv.contains("conv2.bias"));
  // Converted to the loader's dtype; integer tensors keep theirs.
  EXPECT_EQ(w.get("conv_in.weight", {2}).dtype(), DType::f32);
  EXPECT_EQ(w.with_dtype(DType::bf16).get("conv_in.weight", {2}).dtype(), DType::bf16);
  EXPECT_EQ(w.get("conv_in.weight", {2}, DType::f16).dtype(), DType::f16);
  EXPECT_EQ(w.get("position_ids", {1, 3}).dtype(), DType::i64);

  const std::string shape_err = error_of([&] { conv.get("conv1.weight", {4, 2, 1, 1}); });
  EXPECT_NE(shape_err.find("down_blocks.0.resnets.1.conv1.weight"), std::string::npos) << shape_err;
  EXPECT_NE(shape_err.find("[4, 2, 3, 3]"), std::string::npos) << shape_err;
  EXPECT_NE(shape_err.find("[4, 2, 1, 1]"), std::string::npos) << shape_err;
  EXPECT_NE(shape_err.find("unet.safetensors"), std::string::npos) << shape_err;
  const std::string missing_err = error_of([&] { conv.get("conv2.weight", {4}); });
  EXPECT_NE(missing_err.find("missing weight 'down_blocks.0.resnets.1.conv2.weight'"),
            std::string::npos)
      << missing_err;
  EXPECT_NE(missing_err.find("unet.safetensors"), std::string::npos) << missing_err;
  EXPECT_FALSE(conv.get_optional("conv2.weight", {4}).has_value());
  EXPECT_TRUE(conv.get_optional("conv1.bias", {4}).has_value());
}

TEST(WeightLoader, ReportsUnusedAndMissing) {
  WeightLoader w(make_source(), WeightLoaderOptions{DType::f32, true});
  w.get("conv_in.weight", {2});
  const Tensor z = w.scope("mid").get("proj.weight", {2, 2});
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(w.missing(), (std::vector<std::string>{"mid.proj.weight"}));
  EXPECT_EQ(w.unused(),
            (std::vector<std::string>{"down_blocks.0.resnets.1.conv1.weight",
                                      "down_blocks.0.resnets.1.conv1.bias", "position_ids"}));
  const std::string err = error_of([&] { w.finish(true); });
  EXPECT_NE(err.find("3 unused tensors"), std::string::npos) << err;
  EXPECT_NE(err.find("position_ids"), std::string::npos) << err;
  EXPECT_NE(err.find("mid.proj.weight"), std::string::npos) << err;
  EXPECT_NO_THROW(w.finish(false));
  // Scoped copies share the bookkeeping.
  w.scope("down_blocks.0.resnets.1").get_any("conv1.weight");
  EXPECT_EQ(w.unused().size(), 2u);
}

TEST(WeightLoader, RandomSourceIsDeterministic) {
  auto r = std::make_shared<RandomTensorSource>(7, 0.02);
  WeightLoader a(r), b(std::make_shared<RandomTensorSource>(7, 0.02));
  const Tensor x = a.get("blocks.0.attn.to_q.weight", {64, 32});
  EXPECT_EQ(x.to_vector<float>(), b.get("blocks.0.attn.to_q.weight", {64, 32}).to_vector<float>());
  EXPECT_NE(x.to_vector<float>(), a.get("blocks.0.attn.to_k.weight", {64, 32}).to_vector<float>());
  double sum2 = 0;
  for (float v : x.to_vector<float>()) sum2 += static_cast<double>(v) * v;
  const double std = std::sqrt(sum2 / 2048);
  EXPECT_NEAR(std, 0.02, 0.003);
  EXPECT_EQ(a.get("blocks.0.attn.to_q.bias", {64}).to_vector<float>(), std::vector<float>(64, 0));
  EXPECT_EQ(a.get("blocks.0.norm1.weight", {8}).to_vector<float>(), std::vector<float>(8, 1));
  EXPECT_EQ(a.with_dtype(DType::bf16).get("w", {4}).dtype(), DType::bf16);
  EXPECT_NE(WeightLoader(std::make_shared<RandomTensorSource>(8, 0.02))
                .get("blocks.0.attn.to_q.weight", {64, 32})
                .to_vector<float>(),
            x.to_vector<float>());
}

TEST(WeightLoader, FileSourcesAreZeroCopyAndNamed) {
  const auto dir = testing::temp_dir("loader");
  const auto path = dir / "w.safetensors";
  save_safetensors(path, {{"a.weight", Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2})},
                          {"b.weight", Tensor::from_vector<float>({1, 2}, {2}, DType::f16)}});
  WeightLoader w(open_tensor_source(path));
  const Tensor a = w.get("a.weight", {2, 2});
  EXPECT_EQ(a.storage()->kind(), Storage::Kind::mapped_file);
  EXPECT_EQ(w.get("b.weight", {2}).dtype(), DType::f32);
  const std::string err = error_of([&] { w.get("b.weight", {3}); });
  EXPECT_NE(err.find(path.string()), std::string::npos) << err;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace diffuse
