// The torch-compatible generator against torch.randn / torch.rand values stored in every
// reference root (randn/randn.json + randn.safetensors), compared bit for bit.
#include "diffuse/core/generator.h"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <sstream>
#include <vector>

#include "tests/support/reference.h"

namespace diffuse {
namespace {

DType torch_dtype(const std::string& name) {
  if (name == "float32") return DType::f32;
  if (name == "float64") return DType::f64;
  if (name == "float16") return DType::f16;
  if (name == "bfloat16") return DType::bf16;
  throw Error("generator_test: unknown dtype '" + name + "' in the reference data");
}

// Bit-exact comparison; on failure names the case and the first differing element.
::testing::AssertionResult same_bits(const Tensor& actual, const Tensor& expected,
                                     const std::string& what) {
  if (actual.shape() != expected.shape() || actual.dtype() != expected.dtype()) {
    return ::testing::AssertionFailure()
           << what << ": got " << actual.str() << ", expected " << expected.str();
  }
  const Tensor a = actual.contiguous();
  const Tensor e = expected.contiguous();
  const auto* pa = static_cast<const unsigned char*>(a.data_ptr());
  const auto* pe = static_cast<const unsigned char*>(e.data_ptr());
  const std::size_t item = a.itemsize();
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + i * item, pe + i * item, item) != 0) {
      const auto va = a.flatten().narrow(0, i, 1).item<double>();
      const auto ve = e.flatten().narrow(0, i, 1).item<double>();
      std::ostringstream os;
      os.precision(17);
      os << what << ": element " << i << " of " << a.numel() << " differs: got " << va
         << ", expected " << ve;
      return ::testing::AssertionFailure() << os.str();
    }
  }
  return ::testing::AssertionSuccess();
}

Shape json_shape(const nlohmann::json& j) {
  return j.get<Shape>();
}

// The comma-separated integers between `prefix` (ending with an opening parenthesis), at its
// first occurrence in `text`, and the next ')': ("f((2,4, 8)", "f((") -> {2, 4, 8}.
std::optional<std::vector<int64_t>> parse_int_list(const std::string& text,
                                                   const std::string& prefix) {
  const auto begin = text.find(prefix);
  if (begin == std::string::npos) return std::nullopt;
  const auto start = begin + prefix.size();
  const auto end = text.find(')', start);
  if (end == std::string::npos) return std::nullopt;
  std::vector<int64_t> out;
  std::stringstream items(text.substr(start, end - start));
  for (std::string item; std::getline(items, item, ',');) {
    std::size_t used = 0;
    try {
      out.push_back(std::stoll(item, &used));
    } catch (const std::exception&) {
      return std::nullopt;
    }
    if (item.find_first_not_of(' ', used) != std::string::npos) return std::nullopt;
  }
  if (out.empty()) return std::nullopt;
  return out;
}

TEST(Generator, MatchesTorchReferenceBitExact) {
  int roots_with_data = 0;
  int checked = 0;
  for (const auto& root : testing::reference_roots()) {
    const auto dir = root / "randn";
    if (!std::filesystem::is_directory(dir)) continue;
    ++roots_with_data;
    const nlohmann::json doc = testing::read_json(dir / "randn.json");
    const SafetensorsFile file = SafetensorsFile::open(dir / "randn.safetensors");

    // 1. Independent cases: a fresh generator per case.
    ASSERT_TRUE(doc.contains("cases")) << dir;
    for (const auto& c : doc.at("cases")) {
      const std::string op = c.at("op");
      const uint64_t seed = c.at("seed");
      const Shape shape = json_shape(c.at("shape"));
      const DType dtype = torch_dtype(c.at("dtype"));
      const std::string name = c.at("tensor");
      Generator g(seed);
      Tensor got;
      if (op == "randn") {
        got = g.randn(shape, dtype);
      } else if (op == "rand") {
        got = g.rand(shape, dtype);
      } else {
        FAIL() << dir << ": unknown op '" << op << "' in case " << name;
      }
      EXPECT_TRUE(same_bits(got, file.get(name), (dir / name).string()));
      ++checked;
    }

    // 2. Consecutive draws from one generator (state advancement, the normal cache).
    if (doc.contains("sequence_seed0")) {
      Generator g(0);
      for (const auto& draw : doc.at("sequence_seed0").at("draws")) {
        const std::string name = draw.at("tensor");
        EXPECT_TRUE(same_bits(g.randn(json_shape(draw.at("shape"))), file.get(name),
                              (dir / name).string()));
        ++checked;
      }
    }

    // 3. diffusers randn_tensor; each entry's description names the shape and the seeds, e.g.
    //    "randn_tensor((2,4,8,8), generator=[Generator().manual_seed(0), ...]) = ...".
    if (doc.contains("randn_tensor")) {
      for (const auto& [name, desc_json] : doc.at("randn_tensor").items()) {
        const std::string desc = desc_json.get<std::string>();
        const std::string call = desc.substr(0, desc.find(") = "));
        const auto shape = parse_int_list(call, "randn_tensor((");
        ASSERT_TRUE(shape.has_value()) << name << ": no shape in '" << desc << "'";
        std::vector<Generator> gens;
        for (std::size_t at = call.find("manual_seed("); at != std::string::npos;
             at = call.find("manual_seed(", at + 1)) {
          const auto seed = parse_int_list(call.substr(at), "manual_seed(");
          ASSERT_TRUE(seed.has_value() && seed->size() == 1) << name << ": '" << desc << "'";
          gens.emplace_back(static_cast<uint64_t>((*seed)[0]));
        }
        ASSERT_FALSE(gens.empty()) << name << ": no seed in '" << desc << "'";
        const bool is_list = call.find("generator=[") != std::string::npos;
        ASSERT_EQ(is_list, gens.size() > 1) << name << ": '" << desc << "'";
        EXPECT_TRUE(same_bits(randn_tensor(*shape, gens), file.get(name), (dir / name).string()));
        ++checked;
      }
    }
  }
  if (roots_with_data == 0) GTEST_SKIP() << "no reference root with randn/ found";
  std::printf("[ generator ] %d reference cases checked bit for bit in %d root(s)\n", checked,
              roots_with_data);
  EXPECT_GT(checked, 0);
}

TEST(Generator, EngineMatchesMt19937AndSeedTruncation) {
  // at::mt19937 is the standard MT19937: the 10000th output for seed 5489 is 4123659995 (C++
  // standard, [rand.predef]).
  Generator g(5489);
  uint32_t v = 0;
  for (int i = 0; i < 10000; ++i) v = g.random();
  EXPECT_EQ(v, 4123659995u);
  // Only the low 32 bits of the seed reach the engine.
  Generator a(7), b((uint64_t{1} << 32) + 7);
  EXPECT_EQ(a.random64(), b.random64());
  EXPECT_EQ(b.initial_seed(), (uint64_t{1} << 32) + 7);
  // random64 = (first word << 32) | second word.
  Generator c(3), d(3);
  const uint64_t hi = c.random(), lo = c.random();
  EXPECT_EQ(d.random64(), (hi << 32) | lo);
}

TEST(Generator, ManualSeedResetsStateAndNormalCache) {
  Generator g(11);
  const auto first = g.randn({3}).to_vector<float>();  // leaves a cached value behind
  g.manual_seed(11);
  EXPECT_EQ(g.randn({3}).to_vector<float>(), first);
  Generator fresh(11);
  g.manual_seed(11);
  EXPECT_EQ(g.randn({40}).to_vector<float>(), fresh.randn({40}).to_vector<float>());
}

TEST(Generator, HalfTypesAndRanges) {
  for (const DType dt : {DType::f16, DType::bf16}) {
    for (const int64_t n : {int64_t{5}, int64_t{16}, int64_t{37}}) {
      Generator g(1234);
      const Tensor t = g.randn({n}, dt);
      EXPECT_EQ(t.dtype(), dt);
      for (const float v : t.to_vector<float>()) {
        EXPECT_TRUE(std::isfinite(v));
        EXPECT_LT(std::fabs(v), 8.0f);
      }
    }
    Generator g(9);
    const Tensor u = g.rand({1000}, dt);
    const int digits = dt == DType::f16 ? 11 : 8;
    for (const float v : u.to_vector<float>()) {
      EXPECT_GE(v, 0.0f);
      EXPECT_LT(v, 1.0f);
      const float scaled = std::ldexp(v, digits);
      EXPECT_EQ(scaled, std::floor(scaled)) << "rand must be k * 2^-" << digits;
    }
  }
  // Small f16 draws are the f64 scalar draws rounded through float.
  Generator a(5), b(5);
  const auto h = a.randn({5}, DType::f16).to_vector<float>();
  const auto d = b.randn({5}, DType::f64).to_vector<double>();
  for (std::size_t i = 0; i < h.size(); ++i)
    EXPECT_EQ(h[i], f16_bits_to_float(float_to_f16_bits(static_cast<float>(d[i]))));
}

TEST(Generator, BadArguments) {
  Generator g;
  EXPECT_EQ(g.initial_seed(), Generator::kDefaultSeed);
  EXPECT_THROW(g.randn({2}, DType::i32), Error);
  EXPECT_THROW(g.rand({2}, DType::f8_e4m3), Error);
  EXPECT_EQ(g.randn({0, 4}).numel(), 0);
  std::vector<Generator> none;
  EXPECT_THROW(randn_tensor({2, 3}, none), Error);
  std::vector<Generator> three(3);
  EXPECT_THROW(randn_tensor({2, 3}, three), Error);
  EXPECT_THROW(randn_tensor({}, three), Error);
  // A list of one generator is the single-generator call.
  std::vector<Generator> one{Generator(4)};
  Generator ref(4);
  EXPECT_EQ(randn_tensor({2, 3}, one).to_vector<float>(), ref.randn({2, 3}).to_vector<float>());
}

}  // namespace
}  // namespace diffuse
