#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "diffuse/formats/image.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

TEST(Image, PngRoundTripWithParameters) {
  const fs::path path = fs::temp_directory_path() / "diffuse_image_roundtrip.png";
  std::vector<float> v(2 * 3 * 3);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) / 17.0f;
  const Tensor img = Tensor::from_vector(v, {1, 2, 3, 3});
  const std::string params = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 42";
  save_png(path, img, {{"parameters", params}});
  const Tensor back = load_image(path);
  ASSERT_EQ(back.shape(), img.shape());
  // 8-bit quantization: within half a step of 1/255.
  EXPECT_TRUE(testing::all_close(back, img, 0.5 / 255.0 + 1e-7));
  const auto text = read_png_text(path);
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].first, "parameters");
  EXPECT_EQ(text[0].second, params);
  fs::remove(path);
}

TEST(Image, RoundsLikeDiffusers) {
  const fs::path path = fs::temp_directory_path() / "diffuse_image_rounding.png";
  // 0.5 / 255 * 255 = 0.5 rounds to even (0); 1.5 / 255 -> 2; out of range clamps.
  save_png(path, Tensor::from_vector<float>({0.5f / 255, 1.5f / 255, -1.0f, 2.0f}, {1, 1, 4, 1}));
  const auto v = load_image(path, 1).to_vector<float>();
  EXPECT_EQ(v, (std::vector<float>{0.0f, 2.0f / 255, 0.0f, 1.0f}));
  fs::remove(path);
}

TEST(Image, ReadsRealPhotosAndResizes) {
  const fs::path photo = testing::shared_dir() / "assets" / "test-images" / "astronaut.png";
  if (!fs::exists(photo)) GTEST_SKIP() << "no test image at " << photo;
  const Tensor img = load_image(photo);
  EXPECT_EQ(img.size(0), 1);
  EXPECT_EQ(img.size(3), 3);
  const Tensor small = resize_image(img, 64, 48);
  EXPECT_EQ(small.shape(), (Shape{1, 64, 48, 3}));
  const auto v = small.to_vector<float>();
  for (const float x : v) ASSERT_TRUE(x >= -0.05f && x <= 1.05f);
}

TEST(Image, BadFilesAreErrors) {
  const fs::path path = fs::temp_directory_path() / "diffuse_image_bad.png";
  std::ofstream(path) << "not an image";
  EXPECT_THROW(load_image(path), Error);
  EXPECT_THROW(read_png_text(path), Error);
  EXPECT_THROW(load_image("/nonexistent/file.png"), Error);
  EXPECT_THROW(save_png(path, Tensor::zeros({1, 2, 2, 5})), Error);
  fs::remove(path);
}

}  // namespace
}  // namespace diffuse
