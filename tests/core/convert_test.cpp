// Vectorized dtype conversions (src/core/convert_x86.cpp) against the scalar reference, bit for
// bit: every 16-bit pattern one way, special and random float patterns the other way, every
// instruction set the CPU has, tail lengths, misaligned buffers, and the threaded dispatcher.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "diffuse/core/dtype.h"
#include "diffuse/core/threads.h"
#include "src/core/convert_kernels.h"

namespace diffuse {
namespace {

using detail::ConvertIsa;

const char* isa_name(ConvertIsa isa) {
  switch (isa) {
    case ConvertIsa::scalar:
      return "scalar";
    case ConvertIsa::avx2:
      return "avx2";
    case ConvertIsa::avx512:
      return "avx512";
  }
  return "?";
}

// The vectorized instruction sets this CPU can run.
std::vector<ConvertIsa> vector_isas() {
  std::vector<ConvertIsa> out;
  for (const ConvertIsa isa : {ConvertIsa::avx2, ConvertIsa::avx512}) {
    float f = 1.0f;
    uint16_t h = 0;
    if (detail::convert_buffer_isa(isa, &f, DType::f32, &h, DType::f16, 1)) out.push_back(isa);
  }
  return out;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Special float32 bit patterns: zeros, subnormals, normal boundaries, rounding ties and
// neighbours for both 16-bit formats, f16 overflow and subnormal edges, infinities, NaNs.
std::vector<uint32_t> special_patterns() {
  std::vector<uint32_t> p;
  const uint32_t bases[] = {
      0x00000000u, 0x00000001u, 0x00000002u, 0x00007fffu, 0x00008000u, 0x00008001u, 0x00018000u,
      0x00400000u, 0x007fffffu, 0x00800000u, 0x00800001u, 0x33000000u, 0x33000001u, 0x337fffffu,
      0x33800000u, 0x387fc000u, 0x387fe000u, 0x387fffffu, 0x38800000u, 0x38801000u, 0x38803000u,
      0x3f800000u, 0x3f801000u, 0x3f803000u, 0x3f808000u, 0x3f818000u, 0x3f817fffu, 0x3f818001u,
      0x3fffffffu, 0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477fffffu, 0x47800000u, 0x7f7f8000u,
      0x7f7f7fffu, 0x7f7fffffu, 0x7f800000u, 0x7f800001u, 0x7f801000u, 0x7f802000u, 0x7fa00000u,
      0x7fbfffffu, 0x7fc00000u, 0x7fc00001u, 0x7fe00000u, 0x7fffffffu};
  for (const uint32_t b : bases) {
    p.push_back(b);
    p.push_back(b | 0x80000000u);
  }
  // Every tie and near-tie of the bf16 rounding across all exponents, with both lsb parities.
  for (uint32_t e = 0; e < 256; ++e) {
    for (const uint32_t low : {0x7fffu, 0x8000u, 0x8001u, 0x18000u, 0xffffu}) {
      p.push_back((e << 23) | low);
      p.push_back((e << 23) | 0x80000000u | low);
    }
  }
  return p;
}

std::vector<float> test_floats(std::size_t n, uint32_t seed) {
  const auto special = special_patterns();
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    // Mix specials in at random places so they also land in vector lanes and tails.
    const uint32_t r = static_cast<uint32_t>(rng());
    v[i] = from_bits(r % 4 == 0 ? special[r / 4 % special.size()] : static_cast<uint32_t>(rng()));
  }
  return v;
}

::testing::AssertionResult same_u16(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b,
                                    const std::vector<float>& src) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      uint32_t bits;
      std::memcpy(&bits, &src[i], 4);
      return ::testing::AssertionFailure()
             << "element " << i << " of " << a.size() << ": input bits 0x" << std::hex << bits
             << " -> 0x" << a[i] << ", reference 0x" << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(Convert, HandPickedRoundings) {
  // Independent of the scalar reference: round-to-nearest-even, NaN quieting, subnormals.
  const std::vector<std::pair<uint32_t, uint16_t>> bf16 = {
      {0x3f808000u, 0x3f80u}, {0x3f818000u, 0x3f82u}, {0x3f808001u, 0x3f81u},
      {0x00008000u, 0x0000u}, {0x00018000u, 0x0002u}, {0x7f7fffffu, 0x7f80u},
      {0x7f800001u, 0x7fc0u}, {0xff800000u, 0xff80u}, {0x80000001u, 0x8000u}};
  const std::vector<std::pair<uint32_t, uint16_t>> f16 = {
      {0x3f801000u, 0x3c00u}, {0x3f803000u, 0x3c02u}, {0x477ff000u, 0x7c00u},
      {0x477fefffu, 0x7bffu}, {0x33800000u, 0x0001u}, {0x33000000u, 0x0000u},
      {0x33000001u, 0x0001u}, {0x7f800001u, 0x7e00u}, {0xc0000000u, 0xc000u}};
  for (const ConvertIsa isa : [] {
         auto v = vector_isas();
         v.push_back(ConvertIsa::scalar);
         return v;
       }()) {
    for (const auto& [table, dtype] :
         {std::pair{&bf16, DType::bf16}, std::pair{&f16, DType::f16}}) {
      // Repeat each input to fill whole vectors and a tail.
      for (const auto& [in, want] : *table) {
        std::vector<float> src(37, from_bits(in));
        std::vector<uint16_t> dst(src.size());
        ASSERT_TRUE(
            detail::convert_buffer_isa(isa, src.data(), DType::f32, dst.data(), dtype, src.size()));
        for (const uint16_t got : dst)
          EXPECT_EQ(got, want) << isa_name(isa) << " " << dtype_name(dtype) << " 0x" << std::hex
                               << in;
      }
    }
  }
}

TEST(Convert, SixteenBitToF32AllPatterns) {
  std::vector<uint16_t> all(65536 + 7);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  const auto isas = vector_isas();
  std::printf("[ convert ] vector ISAs on this CPU:");
  for (const ConvertIsa isa : isas) std::printf(" %s", isa_name(isa));
  std::printf("%s\n", isas.empty() ? " none (scalar only)" : "");
  for (const DType src_dtype : {DType::f16, DType::bf16}) {
    std::vector<float> ref(all.size());
    detail::convert_buffer_scalar(all.data(), src_dtype, ref.data(), DType::f32, all.size());
    for (const ConvertIsa isa : isas) {
      for (const std::size_t offset : {std::size_t{0}, std::size_t{1}, std::size_t{7}}) {
        const std::size_t n = 65536;
        std::vector<float> got(n);
        ASSERT_TRUE(detail::convert_buffer_isa(isa, all.data() + offset, src_dtype, got.data(),
                                               DType::f32, n));
        EXPECT_EQ(std::memcmp(got.data(), ref.data() + offset, n * 4), 0)
            << isa_name(isa) << " " << dtype_name(src_dtype) << " offset " << offset;
        for (std::size_t i = 0; i < n; ++i) {
          uint32_t a, b;
          std::memcpy(&a, &got[i], 4);
          std::memcpy(&b, &ref[offset + i], 4);
          if (a != b) {
            ADD_FAILURE() << isa_name(isa) << " " << dtype_name(src_dtype) << " bits 0x" << std::hex
                          << all[offset + i] << " -> 0x" << a << ", reference 0x" << b;
            break;
          }
        }
      }
    }
    // Spot checks of the reference itself: signaling NaNs come out quiet with their payload
    // (as F16C and PyTorch's half -> float do), subnormals are exact.
    uint32_t b;
    if (src_dtype == DType::f16) {
      std::memcpy(&b, &ref[0x7c01], 4);
      EXPECT_EQ(b, 0x7fc02000u);
      std::memcpy(&b, &ref[0xfd00], 4);
      EXPECT_EQ(b, 0xffe00000u);
      EXPECT_EQ(ref[0x0001], std::ldexp(1.0f, -24));
      EXPECT_EQ(ref[0x83ff], -std::ldexp(1023.0f, -24));
    } else {
      std::memcpy(&b, &ref[0x7f81], 4);
      EXPECT_EQ(b, 0x7fc10000u);
      EXPECT_EQ(ref[0x3f80], 1.0f);
      EXPECT_EQ(ref[0x0001], std::ldexp(1.0f, -133));
    }
  }
}

TEST(Convert, F32ToSixteenBitRandomAndSpecial) {
  const auto isas = vector_isas();
  if (isas.empty()) GTEST_SKIP() << "no vector ISA on this CPU: only the scalar path exists";
  for (const std::size_t n :
       {std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{15}, std::size_t{16},
        std::size_t{17}, std::size_t{33}, std::size_t{64}, std::size_t{1000003}}) {
    const auto src = test_floats(n + 1, static_cast<uint32_t>(n));
    for (const DType dst_dtype : {DType::f16, DType::bf16}) {
      for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
        const std::vector<float> in(src.begin() + static_cast<std::ptrdiff_t>(offset),
                                    src.begin() + static_cast<std::ptrdiff_t>(offset + n));
        std::vector<uint16_t> ref(n);
        detail::convert_buffer_scalar(in.data(), DType::f32, ref.data(), dst_dtype, n);
        for (const ConvertIsa isa : isas) {
          std::vector<uint16_t> got(n);
          ASSERT_TRUE(detail::convert_buffer_isa(isa, src.data() + offset, DType::f32, got.data(),
                                                 dst_dtype, n));
          EXPECT_TRUE(same_u16(got, ref, in))
              << isa_name(isa) << " f32 -> " << dtype_name(dst_dtype) << " n=" << n << " offset "
              << offset;
        }
      }
    }
  }
}

TEST(Convert, AllSpecialPatternsEveryIsa) {
  const auto special = special_patterns();
  std::vector<float> in(special.size());
  for (std::size_t i = 0; i < special.size(); ++i) in[i] = from_bits(special[i]);
  for (const DType dst_dtype : {DType::f16, DType::bf16}) {
    std::vector<uint16_t> ref(in.size());
    detail::convert_buffer_scalar(in.data(), DType::f32, ref.data(), dst_dtype, in.size());
    for (const ConvertIsa isa : vector_isas()) {
      std::vector<uint16_t> got(in.size());
      ASSERT_TRUE(
          detail::convert_buffer_isa(isa, in.data(), DType::f32, got.data(), dst_dtype, in.size()));
      EXPECT_TRUE(same_u16(got, ref, in)) << isa_name(isa) << " " << dtype_name(dst_dtype);
    }
  }
}

TEST(Convert, ThreadedDispatcherMatchesScalar) {
  // Above kParallelConvertMin the dispatcher splits the buffer across threads; odd length so
  // the last chunk has a tail. Run with 1, 2 and 3 threads.
  const std::size_t n = detail::kParallelConvertMin * 2 + 13;
  const auto in = test_floats(n, 99);
  const int saved = num_threads();
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (const DType half : {DType::f16, DType::bf16}) {
      std::vector<uint16_t> ref(n), got(n);
      detail::convert_buffer_scalar(in.data(), DType::f32, ref.data(), half, n);
      convert(in.data(), DType::f32, got.data(), half, n);
      EXPECT_TRUE(same_u16(got, ref, in)) << threads << " threads, " << dtype_name(half);
      std::vector<float> back_ref(n), back(n);
      detail::convert_buffer_scalar(ref.data(), half, back_ref.data(), DType::f32, n);
      convert(ref.data(), half, back.data(), DType::f32, n);
      EXPECT_EQ(std::memcmp(back.data(), back_ref.data(), n * 4), 0) << threads << " threads";
    }
    // A pair without a vector kernel goes through the threaded scalar path.
    std::vector<double> wide(n), wide_ref(n);
    convert(in.data(), DType::f32, wide.data(), DType::f64, n);
    detail::convert_buffer_scalar(in.data(), DType::f32, wide_ref.data(), DType::f64, n);
    EXPECT_EQ(std::memcmp(wide.data(), wide_ref.data(), n * 8), 0) << threads << " threads";
  }
  set_num_threads(saved);
}

TEST(Convert, IsaQueries) {
  const ConvertIsa best = detail::best_convert_isa();
  const auto isas = vector_isas();
  if (isas.empty()) {
    EXPECT_EQ(best, ConvertIsa::scalar);
  } else {
    EXPECT_EQ(best, isas.back());
  }
  // No kernel for a pair without a vector path.
  int32_t i = 3;
  int64_t o = 0;
  for (const ConvertIsa isa : isas)
    EXPECT_FALSE(detail::convert_buffer_isa(isa, &i, DType::i32, &o, DType::i64, 1));
  EXPECT_TRUE(detail::convert_buffer_isa(ConvertIsa::scalar, &i, DType::i32, &o, DType::i64, 1));
  EXPECT_EQ(o, 3);
}

}  // namespace
}  // namespace diffuse
