#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "diffuse/formats/gguf.h"
#include "tests/formats/writers.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

// --- Encoders: quantized values chosen by the test, packed following the block layouts --------
// Each returns the block bytes and the values a correct decoder must produce, computed from the
// chosen integers and scales (not by decoding).

struct Encoded {
  std::string bytes;
  std::vector<float> expected;
};

float f16_round(float x) {
  return f16_bits_to_float(float_to_f16_bits(x));
}

void put_f16(std::string& b, std::size_t at, float x) {
  const uint16_t h = float_to_f16_bits(x);
  b[at] = static_cast<char>(h & 0xff);
  b[at + 1] = static_cast<char>(h >> 8);
}

void set_bits(std::string& b, std::size_t at, int value) {
  b[at] = static_cast<char>(static_cast<uint8_t>(b[at]) | static_cast<uint8_t>(value));
}

class Encoder {
 public:
  explicit Encoder(uint32_t seed) : rng_(seed) {}
  int rnd(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  float scale() { return f16_round(std::uniform_real_distribution<float>(0.002f, 0.05f)(rng_)); }

  // Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0: 32 elements per block.
  Encoded q4(int blocks, bool with_min) {
    Encoded e;
    const std::size_t bb = with_min ? 20 : 18, qs = with_min ? 4 : 2;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(bb, '\0');
      const float d = scale(), m = with_min ? -f16_round(0.1f * static_cast<float>(rnd(1, 9))) : 0;
      put_f16(blk, 0, d);
      if (with_min) put_f16(blk, 2, m);
      std::vector<int> q(32);
      for (int& x : q) x = rnd(0, 15);
      for (int j = 0; j < 16; ++j)
        set_bits(blk, qs + static_cast<std::size_t>(j), q[j] | (q[j + 16] << 4));
      for (int j = 0; j < 32; ++j)
        e.expected.push_back(with_min ? static_cast<float>(q[j]) * d + m
                                      : static_cast<float>(q[j] - 8) * d);
      e.bytes += blk;
    }
    return e;
  }
  Encoded q5(int blocks, bool with_min) {
    Encoded e;
    const std::size_t bb = with_min ? 24 : 22, qh = with_min ? 4 : 2, qs = qh + 4;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(bb, '\0');
      const float d = scale(), m = with_min ? f16_round(0.05f * static_cast<float>(rnd(-9, 9))) : 0;
      put_f16(blk, 0, d);
      if (with_min) put_f16(blk, 2, m);
      std::vector<int> q(32);
      for (int& x : q) x = rnd(0, 31);
      uint32_t high = 0;
      for (int j = 0; j < 32; ++j) high |= static_cast<uint32_t>(q[j] >> 4) << j;
      for (int k = 0; k < 4; ++k)
        set_bits(blk, qh + static_cast<std::size_t>(k), (high >> (8 * k)) & 0xff);
      for (int j = 0; j < 16; ++j)
        set_bits(blk, qs + static_cast<std::size_t>(j), (q[j] & 15) | ((q[j + 16] & 15) << 4));
      for (int j = 0; j < 32; ++j)
        e.expected.push_back(with_min ? static_cast<float>(q[j]) * d + m
                                      : static_cast<float>(q[j] - 16) * d);
      e.bytes += blk;
    }
    return e;
  }
  Encoded q8_0(int blocks) {
    Encoded e;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(34, '\0');
      const float d = scale();
      put_f16(blk, 0, d);
      for (int j = 0; j < 32; ++j) {
        const int q = rnd(-128, 127);
        blk[2 + static_cast<std::size_t>(j)] = static_cast<char>(static_cast<int8_t>(q));
        e.expected.push_back(static_cast<float>(q) * d);
      }
      e.bytes += blk;
    }
    return e;
  }

  // K-quants: 256 elements per block.
  Encoded q2_k(int blocks) {
    Encoded e;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(84, '\0');
      const float d = scale(), dmin = scale();
      put_f16(blk, 80, d);
      put_f16(blk, 82, dmin);
      int sc[16], mn[16];
      for (int s = 0; s < 16; ++s) {
        sc[s] = rnd(0, 15);
        mn[s] = rnd(0, 15);
        blk[static_cast<std::size_t>(s)] = static_cast<char>(sc[s] | (mn[s] << 4));
      }
      for (int i = 0; i < 256; ++i) {
        const int q = rnd(0, 3), h = i / 128, r = i % 128, group = r / 32, w = r % 32;
        set_bits(blk, 16 + static_cast<std::size_t>(32 * h + w), q << (2 * group));
        e.expected.push_back(d * static_cast<float>(sc[i / 16] * q) -
                             dmin * static_cast<float>(mn[i / 16]));
      }
      e.bytes += blk;
    }
    return e;
  }
  Encoded q3_k(int blocks) {
    Encoded e;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(110, '\0');
      const float d = scale();
      put_f16(blk, 108, d);
      int sc[16];
      for (int s = 0; s < 16; ++s) {
        sc[s] = rnd(0, 63);
        if (s < 8) {
          set_bits(blk, 96 + static_cast<std::size_t>(s), sc[s] & 15);
        } else {
          set_bits(blk, 96 + static_cast<std::size_t>(s - 8), (sc[s] & 15) << 4);
        }
        set_bits(blk, 96 + 8 + static_cast<std::size_t>(s % 4), (sc[s] >> 4) << (2 * (s / 4)));
      }
      for (int i = 0; i < 256; ++i) {
        const int q = rnd(0, 7), h = i / 128, r = i % 128, group = r / 32, w = r % 32;
        set_bits(blk, 32 + static_cast<std::size_t>(32 * h + w), (q & 3) << (2 * group));
        set_bits(blk, static_cast<std::size_t>(i % 32), (q >> 2) << (i / 32));
        e.expected.push_back(d * static_cast<float>((sc[i / 16] - 32) * (q - 4)));
      }
      e.bytes += blk;
    }
    return e;
  }
  // Eight 6-bit (scale, min) pairs into 12 bytes (Q4_K / Q5_K).
  static void pack_scales_k4(std::string& blk, std::size_t at, const int* sc, const int* mn) {
    for (int j = 0; j < 4; ++j) {
      const auto u = static_cast<std::size_t>(j);
      set_bits(blk, at + u, sc[j] | ((sc[j + 4] >> 4) << 6));
      set_bits(blk, at + u + 4, mn[j] | ((mn[j + 4] >> 4) << 6));
      set_bits(blk, at + u + 8, (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
  }
  Encoded q45_k(int blocks, bool five) {
    Encoded e;
    const std::size_t bb = five ? 176 : 144, qs = five ? 48 : 16;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(bb, '\0');
      const float d = scale(), dmin = scale();
      put_f16(blk, 0, d);
      put_f16(blk, 2, dmin);
      int sc[8], mn[8];
      for (int j = 0; j < 8; ++j) {
        sc[j] = rnd(0, 63);
        mn[j] = rnd(0, 63);
      }
      pack_scales_k4(blk, 4, sc, mn);
      for (int i = 0; i < 256; ++i) {
        const int q = rnd(0, five ? 31 : 15), c = i / 64, r = i % 64;
        if (r < 32) {
          set_bits(blk, qs + static_cast<std::size_t>(32 * c + r), q & 15);
        } else {
          set_bits(blk, qs + static_cast<std::size_t>(32 * c + r - 32), (q & 15) << 4);
        }
        if (five) set_bits(blk, 16 + static_cast<std::size_t>(i % 32), (q >> 4) << (i / 32));
        e.expected.push_back(d * static_cast<float>(sc[i / 32] * q) -
                             dmin * static_cast<float>(mn[i / 32]));
      }
      e.bytes += blk;
    }
    return e;
  }
  Encoded q6_k(int blocks) {
    Encoded e;
    for (int b = 0; b < blocks; ++b) {
      std::string blk(210, '\0');
      const float d = scale();
      put_f16(blk, 208, d);
      int sc[16];
      for (int s = 0; s < 16; ++s) {
        sc[s] = rnd(-100, 100);
        blk[192 + static_cast<std::size_t>(s)] = static_cast<char>(static_cast<int8_t>(sc[s]));
      }
      for (int i = 0; i < 256; ++i) {
        const int q = rnd(0, 63), h = i / 128, r = i % 128, k = r / 32, l = r % 32;
        set_bits(blk, static_cast<std::size_t>(64 * h + l + 32 * (k & 1)),
                 (q & 15) << (4 * (k >> 1)));
        set_bits(blk, 128 + static_cast<std::size_t>(32 * h + l), (q >> 4) << (2 * k));
        e.expected.push_back(d * static_cast<float>(sc[i / 16] * (q - 32)));
      }
      e.bytes += blk;
    }
    return e;
  }

 private:
  std::mt19937 rng_;
};

struct QuantCase {
  GGMLType type;
  const char* name;
  int block;
};

Encoded encode(Encoder& enc, GGMLType type, int blocks) {
  switch (type) {
    case GGMLType::Q4_0:
      return enc.q4(blocks, false);
    case GGMLType::Q4_1:
      return enc.q4(blocks, true);
    case GGMLType::Q5_0:
      return enc.q5(blocks, false);
    case GGMLType::Q5_1:
      return enc.q5(blocks, true);
    case GGMLType::Q8_0:
      return enc.q8_0(blocks);
    case GGMLType::Q2_K:
      return enc.q2_k(blocks);
    case GGMLType::Q3_K:
      return enc.q3_k(blocks);
    case GGMLType::Q4_K:
      return enc.q45_k(blocks, false);
    case GGMLType::Q5_K:
      return enc.q45_k(blocks, true);
    case GGMLType::Q6_K:
      return enc.q6_k(blocks);
    default:
      throw std::runtime_error("no encoder");
  }
}

const QuantCase kQuantCases[] = {
    {GGMLType::Q4_0, "Q4_0", 32},  {GGMLType::Q4_1, "Q4_1", 32},  {GGMLType::Q5_0, "Q5_0", 32},
    {GGMLType::Q5_1, "Q5_1", 32},  {GGMLType::Q8_0, "Q8_0", 32},  {GGMLType::Q2_K, "Q2_K", 256},
    {GGMLType::Q3_K, "Q3_K", 256}, {GGMLType::Q4_K, "Q4_K", 256}, {GGMLType::Q5_K, "Q5_K", 256},
    {GGMLType::Q6_K, "Q6_K", 256},
};

TEST(GGUFDequantize, EveryBlockLayoutMatchesIndependentEncoder) {
  Encoder enc(1234);
  for (const QuantCase& c : kQuantCases) {
    const Encoded e = encode(enc, c.type, 3);
    ASSERT_EQ(static_cast<int64_t>(e.bytes.size()),
              3 * ggml_type_info(static_cast<uint32_t>(c.type))->block_bytes)
        << c.name;
    std::vector<float> got(e.expected.size());
    dequantize_ggml(c.type, e.bytes.data(), got.data(), static_cast<int64_t>(got.size()));
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], e.expected[i], 1e-5 + 1e-6 * std::fabs(e.expected[i]))
          << c.name << " element " << i;
  }
  float dst[16];
  EXPECT_THROW(dequantize_ggml(GGMLType::Q4_0, nullptr, dst, 16), Error);  // not a block multiple
  EXPECT_THROW(dequantize_ggml(GGMLType::IQ2_XXS, nullptr, dst, 0), Error);
}

class GGUFTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::temp_dir("gguf"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path write(const std::string& bytes) {
    const auto p = dir_ / "model.gguf";
    testing::write_file(p, bytes);
    return p;
  }
  void expect_error(const std::string& bytes, const std::string& needle) {
    const auto p = write(bytes);
    try {
      GGUFFile::open(p);
      ADD_FAILURE() << "no error, expected '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
    }
  }
  std::filesystem::path dir_;
};

TEST_F(GGUFTest, ReadsMetadataTensorsAndEveryQuantType) {
  Encoder enc(99);
  testing::GGUFBuilder g(3);
  g.kv_str("general.architecture", "flux").kv_u32("flux.depth", 19).kv_f32("scale", 0.5f);
  g.kv_str_array("tokens", {"<s>", "a", "bc"}).kv_i32_array("ids", {-1, 7, 300000});
  std::vector<std::pair<std::string, Encoded>> quants;
  for (const QuantCase& c : kQuantCases) {
    // Two rows of 512: shape [2, 512] in PyTorch order.
    Encoded e = encode(enc, c.type, 1024 / c.block);
    g.tensor(std::string("w.") + c.name, {512, 2}, static_cast<uint32_t>(c.type), e.bytes);
    quants.emplace_back(std::string("w.") + c.name, std::move(e));
  }
  Tensor plain = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  g.tensor("plain.f32", {3, 2}, 0, testing::tensor_bytes(plain));
  g.tensor("plain.f16", {3, 2}, 1, testing::tensor_bytes(plain.to(DType::f16)));
  g.tensor("plain.bf16", {3, 2}, 30, testing::tensor_bytes(plain.to(DType::bf16)));
  const auto path = write(g.build());

  const GGUFFile f = GGUFFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.find("general.architecture")->s, "flux");
  EXPECT_EQ(f.find("flux.depth")->i, 19);
  EXPECT_EQ(f.find("scale")->f, 0.5);
  EXPECT_EQ(f.find("tokens")->strings, (std::vector<std::string>{"<s>", "a", "bc"}));
  EXPECT_EQ(f.find("ids")->number_at(2), 300000);
  EXPECT_EQ(f.find("ids")->number_at(0), -1);
  EXPECT_EQ(f.find("missing"), nullptr);
  ASSERT_EQ(f.tensors().size(), quants.size() + 3);
  for (const auto& [name, e] : quants) {
    EXPECT_EQ(f.tensor(name).shape, (Shape{2, 512}));
    const auto got = f.dequantize(name).to_vector<float>();
    ASSERT_EQ(got.size(), e.expected.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], e.expected[i], 1e-5 + 1e-6 * std::fabs(e.expected[i]))
          << name << " " << i;
    // bf16 decoding rounds the f32 values.
    const Tensor bf = f.dequantize(name, DType::bf16);
    EXPECT_EQ(bf.dtype(), DType::bf16);
    EXPECT_EQ(bf.to_vector<float>(),
              Tensor::from_vector(got, {2, 512}).to(DType::bf16).to_vector<float>())
        << name;
  }
  // Plain types are zero-copy views in PyTorch order.
  const Tensor r = f.raw("plain.f32");
  EXPECT_EQ(r.shape(), (Shape{2, 3}));
  EXPECT_EQ(r.storage()->kind(), Storage::Kind::mapped_file);
  EXPECT_EQ(r.to_vector<float>(), plain.to_vector<float>());
  EXPECT_EQ(f.dequantize("plain.f16").to_vector<float>(), plain.to_vector<float>());
  EXPECT_EQ(f.dequantize("plain.bf16").to_vector<float>(), plain.to_vector<float>());

  // The same file through the TensorSource interface.
  const auto src = open_tensor_source(path);
  EXPECT_EQ(src->format(), "gguf");
  EXPECT_EQ(src->info("w.Q4_K").stored_type, "Q4_K");
  EXPECT_EQ(src->info("w.Q4_K").dtype, DType::f32);
  EXPECT_EQ(src->info("plain.f16").dtype, DType::f16);
  EXPECT_EQ(src->get("w.Q6_K").to_vector<float>(), f.dequantize("w.Q6_K").to_vector<float>());
  EXPECT_EQ(src->get("w.Q6_K", DType::bf16).dtype(), DType::bf16);
  EXPECT_EQ(src->metadata().at("general.architecture"), "flux");
}

TEST_F(GGUFTest, AlignmentKeyIsHonoured) {
  testing::GGUFBuilder g(2);
  g.alignment(64);
  Tensor t = Tensor::from_vector<float>({1, 2, 3}, {3});
  g.tensor("a", {3}, 0, testing::tensor_bytes(t)).tensor("b", {3}, 0, testing::tensor_bytes(t));
  const GGUFFile f = GGUFFile::open(write(g.build()));
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.tensor("b").offset, 64u);
  EXPECT_EQ(f.raw("b").to_vector<float>(), (std::vector<float>{1, 2, 3}));
}

std::string le64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}
std::string le32(uint32_t v) {
  return le64(v).substr(0, 4);
}
std::string gstr(const std::string& s) {
  return le64(s.size()) + s;
}

TEST_F(GGUFTest, RejectsBrokenFiles) {
  const std::string head3 = "GGUF" + le32(3);
  expect_error("GGUX" + le32(3) + le64(0) + le64(0), "not a GGUF file");
  expect_error("GGUF", "not a GGUF file");
  expect_error("GGUF" + le32(1) + le64(0) + le64(0), "version 1");
  expect_error("GGUF" + std::string("\0\0\0\3", 4) + le64(0) + le64(0), "version");
  expect_error(head3 + le64(1ull << 63) + le64(0), "cannot fit");
  expect_error(head3 + le64(0) + le64(1ull << 62), "cannot fit");
  // Key whose string claims 2^40 bytes.
  expect_error(head3 + le64(0) + le64(1) + le64(1ull << 40) + "key.....value", "claims");
  // Array claiming 2^60 elements.
  expect_error(head3 + le64(0) + le64(1) + gstr("k") + le32(9) + le32(4) + le64(1ull << 60) +
                   std::string(16, '\0'),
               "more than");
  // Unknown value type.
  expect_error(head3 + le64(0) + le64(1) + gstr("k") + le32(13) + std::string(16, '\0'),
               "unknown value type");
  // Arrays nested five deep.
  {
    std::string s = head3 + le64(0) + le64(1) + gstr("k") + le32(9);
    for (int i = 0; i < 5; ++i) s += le32(9) + le64(1);
    s += le32(4) + le64(0) + std::string(32, '\0');
    expect_error(s, "nested deeper");
  }
  // Alignment that is not a power of two.
  expect_error(head3 + le64(0) + le64(1) + gstr("general.alignment") + le32(4) + le32(24) +
                   std::string(16, '\0'),
               "power of two");
  const auto one_tensor = [&](uint32_t n_dims, const std::vector<uint64_t>& ne, uint32_t type,
                              uint64_t offset, std::size_t data_bytes) {
    std::string s = head3 + le64(1) + le64(0) + gstr("t") + le32(n_dims);
    for (uint64_t e : ne) s += le64(e);
    s += le32(type) + le64(offset);
    s.append((32 - s.size() % 32) % 32, '\0');
    return s + std::string(data_bytes, '\0');
  };
  expect_error(one_tensor(1, {8}, 0, 0, 16), "fall outside");
  expect_error(one_tensor(1, {4}, 0, 32, 16), "fall outside");
  expect_error(one_tensor(1, {4}, 0, 4, 64), "alignment");
  expect_error(one_tensor(1, {4}, 99, 0, 16), "unknown ggml type");
  expect_error(one_tensor(1, {48}, 2, 0, 64), "block size");
  expect_error(one_tensor(9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, 0, 0, 16), "dimensions");
  expect_error(one_tensor(2, {1ull << 40, 1ull << 40}, 0, 0, 16), "absurd extents");
  // Two tensors sharing bytes; a duplicated name.
  {
    std::string s = head3 + le64(2) + le64(0);
    s += gstr("a") + le32(1) + le64(8) + le32(0) + le64(0);
    s += gstr("b") + le32(1) + le64(8) + le32(0) + le64(0);
    s.append((32 - s.size() % 32) % 32, '\0');
    expect_error(s + std::string(64, '\0'), "overlap");
    std::string d = head3 + le64(2) + le64(0);
    d += gstr("a") + le32(1) + le64(8) + le32(0) + le64(0);
    d += gstr("a") + le32(1) + le64(8) + le32(0) + le64(32);
    d.append((32 - d.size() % 32) % 32, '\0');
    expect_error(d + std::string(64, '\0'), "appears twice");
  }
  // Every truncation of a valid file is an error, never a crash.
  testing::GGUFBuilder g;
  g.kv_str("a", "b").kv_str_array("t", {"x", "yy"});
  g.tensor("w", {32}, 2, std::string(18, '\1'));
  const std::string good = g.build();
  for (std::size_t n = 0; n + 1 < good.size(); n += 3) {
    if (n >= good.size() - 32) break;  // the trailing tensor padding is not needed
    const auto p = write(good.substr(0, n));
    EXPECT_THROW(GGUFFile::open(p), Error) << "truncated to " << n;
  }
}

TEST(GGUFReal, DetectsCorruptionInLlamaCppVocabFiles) {
  // The two vocab files in shared/assets went through a text-mode UTF-8 round trip upstream:
  // every byte sequence that was not valid UTF-8 became U+FFFD (ef bf bd), e.g. the f32 value
  // of llama.attention.layer_norm_rms_epsilon at byte 395 of the spm file. They are not valid
  // GGUF any more; the reader must say so with the file and byte offset instead of reading
  // garbage (both files hold no tensors, only metadata, so nothing else can be checked).
  const auto dir = testing::shared_dir() / "assets/gguf-vocab-llamacpp";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "assets missing: " << dir;
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-bert-bge.gguf"}) {
    const auto path = dir / name;
    try {
      const GGUFFile f = GGUFFile::open(path);
      // A repaired copy would land here: check what the header promises.
      EXPECT_EQ(f.version(), 3u);
      EXPECT_EQ(f.tensors().size(), 0u);
      EXPECT_NE(f.find("tokenizer.ggml.tokens"), nullptr);
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
      EXPECT_NE(msg.find("at byte"), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace diffuse
