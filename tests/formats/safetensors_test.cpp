#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "diffuse/formats/safetensors.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("diffuse_test_" + name);
}

TEST(Safetensors, RoundTrip) {
  const auto path = temp_path("roundtrip.safetensors");
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<int64_t>({7, 8}, {2});
  save_safetensors(path, {{"a", a.transpose(0, 1)}, {"b", b}}, {{"format", "pt"}});
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  Tensor ra = f.get("a");
  EXPECT_TRUE(ra.read_only());
  EXPECT_EQ(ra.shape(), (Shape{3, 2}));
  EXPECT_EQ(ra.to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(f.get("b").to_vector<int64_t>(), (std::vector<int64_t>{7, 8}));
  EXPECT_THROW(f.get("c"), Error);
  std::filesystem::remove(path);
}

TEST(Safetensors, ReadsReferenceData) {
  const auto roots = testing::reference_roots();
  if (roots.empty()) GTEST_SKIP() << "no reference roots under " << testing::shared_dir();
  auto f = SafetensorsFile::open(roots[0] / "randn" / "randn.safetensors");
  EXPECT_GT(f.entries().size(), 10u);
}

void write_raw(const std::filesystem::path& path, const std::string& header,
               std::size_t data_bytes, uint64_t declared_len = UINT64_MAX) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << std::string(data_bytes, '\0');
}

TEST(Safetensors, RejectsBrokenFiles) {
  const auto path = temp_path("broken.safetensors");
  const auto expect_error = [&](const std::string& header, std::size_t data, uint64_t len,
                                const std::string& needle) {
    write_raw(path, header, data, len);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "no error for header " << header;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_error(ok, 8, 1ull << 40, "header length");
  expect_error(ok, 8, ok.size() + 100, "past the end");
  expect_error("{not json", 0, UINT64_MAX, "JSON");
  expect_error(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8, UINT64_MAX,
               "dtype");
  expect_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, UINT64_MAX,
               "needs 12 bytes");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8, UINT64_MAX,
               "outside");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12, UINT64_MAX, "overlap");
  expect_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
               8, UINT64_MAX, "more elements");
  expect_error(R"({"__metadata__":{"k":1}})", 0, UINT64_MAX, "not a string");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace diffuse
