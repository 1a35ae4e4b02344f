#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <cmath>
#include <cstring>

#include "diffuse/formats/safetensors.h"
#include "diffuse/formats/tensor_source.h"
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

void write_raw(const std::filesystem::path& path, const std::string& header, std::size_t data_bytes,
               uint64_t declared_len = UINT64_MAX) {
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
  expect_error(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8, UINT64_MAX, "dtype");
  expect_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, UINT64_MAX,
               "needs 12 bytes");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8, UINT64_MAX,
               "outside");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12, UINT64_MAX, "overlap");
  expect_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
               UINT64_MAX, "more elements");
  expect_error(R"({"__metadata__":{"k":1}})", 0, UINT64_MAX, "not a string");
  std::filesystem::remove(path);
}

TEST(Safetensors, WriterLayoutMatchesReferenceLibrary) {
  const auto path = temp_path("layout.safetensors");
  save_safetensors(path, {{"b", Tensor::from_vector<float>({1}, {1}, DType::f16)},
                          {"a", Tensor::from_vector<float>({2}, {1}, DType::f16)},
                          {"z", Tensor::from_vector<float>({3}, {1})}});
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  EXPECT_EQ(n % 8, 0u);
  // Largest dtype first, then by name; offsets packed.
  std::string header = bytes.substr(8, n);
  header.erase(header.find_last_not_of(' ') + 1);
  EXPECT_EQ(header, R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("a":{"dtype":"F16","shape":[1],"data_offsets":[4,6]},)"
                    R"("b":{"dtype":"F16","shape":[1],"data_offsets":[6,8]}})");
  EXPECT_EQ(bytes.size(), 8 + n + 8);
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.entries()[0].name, "z");  // header order
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".partial"));
  std::filesystem::remove(path);
}

TEST(Safetensors, StreamingWriterCallsOncePerTensorAndChecks) {
  const auto path = temp_path("stream.safetensors");
  std::vector<std::string> calls;
  save_safetensors_streaming(path, {{"x", DType::f32, {2, 2}}, {"y", DType::i64, {3}}},
                             [&](const SafetensorsTensorSpec& s) {
                               calls.push_back(s.name);
                               return s.name == "x" ? Tensor::full({2, 2}, 1.5)
                                                    : Tensor::from_vector<int64_t>({1, 2, 3}, {3});
                             },
                             {{"k", "v"}});
  EXPECT_EQ(calls, (std::vector<std::string>{"y", "x"}));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.get("x").to_vector<float>(), std::vector<float>(4, 1.5f));
  EXPECT_EQ(f.metadata().at("k"), "v");
  // A producer that lies about the shape: error, and no file left behind.
  std::filesystem::remove(path);
  EXPECT_THROW(
      save_safetensors_streaming(path, {{"x", DType::f32, {2}}},
                                 [](const SafetensorsTensorSpec&) { return Tensor::zeros({3}); }),
      Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".partial"));
  EXPECT_THROW(save_safetensors(path, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}),
               Error);
  EXPECT_THROW(save_safetensors(path, {{"\xff\xfe", Tensor::zeros({1})}}), Error);
}

TEST(Safetensors, MisalignedDataIsCopiedAlignedAndEmptyTensorsWork) {
  const auto path = temp_path("misaligned.safetensors");
  // Header of 61 bytes (not a multiple of 8): data starts at byte 69.
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string padded = h + std::string(61 - h.size(), ' ');
  float v[2] = {1.5f, -2.5f};
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(padded.size());
  bytes += padded + std::string(reinterpret_cast<const char*>(v), 8);
  std::ofstream(path, std::ios::binary) << bytes;
  auto f = SafetensorsFile::open(path);
  const Tensor a = f.get("a");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data_ptr()) % 4, 0u);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1.5f, -2.5f}));
  // A zero extent makes an empty tensor even when another extent is huge.
  write_raw(path, R"({"e":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}})",
            0);
  EXPECT_EQ(SafetensorsFile::open(path).get("e").numel(), 0);
  std::filesystem::remove(path);
}

TEST(Safetensors, FromStorageAndMoreBrokenHeaders) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(h.size());
  bytes += h + std::string(4, '\0');
  auto heap = Storage::allocate(bytes.size());
  std::memcpy(heap->data(), bytes.data(), bytes.size());
  EXPECT_EQ(SafetensorsFile::from_storage(heap, "mem").get("a").item<float>(), 0.0f);
  const auto fails = [](const std::string& header, const std::string& needle) {
    std::string b(8, '\0');
    for (int i = 0; i < 8; ++i)
      b[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    b += header;
    auto s = Storage::allocate(b.size());
    std::memcpy(s->data(), b.data(), b.size());
    try {
      SafetensorsFile::from_storage(s, "mem.safetensors");
      ADD_FAILURE() << "accepted " << header.substr(0, 80);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("mem.safetensors"), std::string::npos) << e.what();
    }
  };
  fails("[1, 2]", "does not start with '{'");
  fails("{" + std::string(100000, '[') + std::string(100000, ']') + "}", "nested deeper");
  fails(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "negative");
  fails(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}})", "non-integer");
  fails(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", "outside");
  fails(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0]}})", "two unsigned");
  fails(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "not a string");
  fails(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "needs dtype");
  fails(R"({"__metadata__":[1]})", "not an object");
  fails(R"({"a":{"dtype":"F32","shape":[)" + std::string(200, '1') + "],\"data_offsets\":[0,4]}}",
        "extent");
  fails(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", "not valid JSON");
  std::string many = "1";
  for (int i = 1; i < 65; ++i) many.append(",1");
  fails(R"({"a":{"dtype":"F32","shape":[)" + many + R"(],"data_offsets":[0,4]}})", "64 extents");
  // Truncations of a valid file.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto s = Storage::allocate(n);
    if (n) std::memcpy(s->data(), bytes.data(), n);
    EXPECT_THROW(SafetensorsFile::from_storage(s, "t"), Error) << n;
  }
}

TEST(Safetensors, ReadsRealLoraFiles) {
  const auto dir = testing::shared_dir() / "assets/lora-cloneofsimo";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "assets missing: " << dir;
  auto f32 = SafetensorsFile::open(dir / "lora_disney.safetensors");
  EXPECT_EQ(f32.entries().size(), 386u);
  EXPECT_EQ(f32.entry("<s1>").shape, (Shape{768}));
  EXPECT_EQ(f32.entry("text_encoder:0:down").shape, (Shape{1, 768}));
  EXPECT_EQ(f32.entry("text_encoder:0:up").shape, (Shape{768, 1}));
  EXPECT_EQ(f32.metadata().at("<s1>"), "<embed>");
  EXPECT_TRUE(f32.metadata().count("unet:0:rank"));
  for (const auto& e : f32.entries()) EXPECT_EQ(e.dtype, DType::f32) << e.name;
  auto f16 = SafetensorsFile::open(dir / "analog_svd_rank4.safetensors");
  EXPECT_EQ(f16.entries().size(), 384u);
  double sum = 0;
  for (const auto& e : f16.entries()) {
    EXPECT_EQ(e.dtype, DType::f16) << e.name;
    for (float v : f16.get(e.name).to_vector<float>()) sum += std::fabs(v);
  }
  EXPECT_GT(sum, 1.0);
  // Through the generic opener.
  EXPECT_EQ(open_tensor_source(dir / "analog_svd_rank4.safetensors")->tensors().size(), 384u);
}

}  // namespace
}  // namespace diffuse
