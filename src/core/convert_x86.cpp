// Vectorized f32 <-> f16 / bf16 conversions for x86-64, selected at run time, and the
// convert_buffer dispatcher. The library is compiled for baseline x86-64; the AVX2 (+F16C) and
// AVX-512 kernels carry target attributes and only run after cpu_features() says so.
//
// Every kernel is bit-identical to the scalar reference (convert_scalar.cpp, dtype.h):
// - f32 -> f16: vcvtps2ph with an immediate round-to-nearest-even, which quiets NaNs keeping the
//   top payload bits exactly as float_to_f16_bits does and keeps subnormal results.
// - f32 -> bf16: integer round-to-nearest-even on the bit pattern (bits + 0x7fff + lsb) >> 16,
//   NaN -> (bits >> 16) | 0x40. VCVTNEPS2BF16 is deliberately not used: it treats subnormal
//   inputs as zero, while the reference (and PyTorch's c10::BFloat16) rounds them.
// - f16 -> f32: vcvtph2ps, exact; it quiets signaling NaNs (payload kept), as the reference
//   does (its values pass through double).
// - bf16 -> f32: a 16-bit shift, plus the quiet bit on NaN lanes for the same reason.
// Tails shorter than a vector go through the scalar reference itself.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "src/core/convert_kernels.h"
#include "src/core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DIFFUSE_CONVERT_X86 1
#else
#define DIFFUSE_CONVERT_X86 0
#endif

namespace diffuse::detail {
namespace {

using Kernel = void (*)(const void* src, void* dst, std::size_t n);

// --- Scalar tails: the reference itself -------------------------------------------------------

void tail_f32_to_f16(const float* src, uint16_t* dst, std::size_t n) {
  convert_buffer_scalar(src, DType::f32, dst, DType::f16, n);
}
void tail_f16_to_f32(const uint16_t* src, float* dst, std::size_t n) {
  convert_buffer_scalar(src, DType::f16, dst, DType::f32, n);
}
void tail_f32_to_bf16(const float* src, uint16_t* dst, std::size_t n) {
  convert_buffer_scalar(src, DType::f32, dst, DType::bf16, n);
}
void tail_bf16_to_f32(const uint16_t* src, float* dst, std::size_t n) {
  convert_buffer_scalar(src, DType::bf16, dst, DType::f32, n);
}

#if DIFFUSE_CONVERT_X86

// --- AVX2 + F16C: 8 lanes ---------------------------------------------------------------------

#define DIFFUSE_AVX2 __attribute__((target("avx2,f16c")))

DIFFUSE_AVX2 void avx2_f32_to_f16(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const float*>(src_v);
  auto* dst = static_cast<uint16_t*>(dst_v);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  tail_f32_to_f16(src + i, dst + i, n - i);
}

DIFFUSE_AVX2 void avx2_f16_to_f32(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const uint16_t*>(src_v);
  auto* dst = static_cast<float*>(dst_v);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  tail_f16_to_f32(src + i, dst + i, n - i);
}

// Round-to-nearest-even of 8 float bit patterns to bf16, as 32-bit lanes holding 16-bit values.
DIFFUSE_AVX2 inline __m256i avx2_bf16_round(__m256i bits) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, is_nan);
}

DIFFUSE_AVX2 void avx2_f32_to_bf16(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const float*>(src_v);
  auto* dst = static_cast<uint16_t*>(dst_v);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i a =
        avx2_bf16_round(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    const __m256i b =
        avx2_bf16_round(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 8)));
    // packus works per 128-bit half: [a0 b0 a1 b1] -> reorder the 64-bit quarters to [a0 a1 b0 b1].
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  tail_f32_to_bf16(src + i, dst + i, n - i);
}

DIFFUSE_AVX2 void avx2_bf16_to_f32(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const uint16_t*>(src_v);
  auto* dst = static_cast<float*>(dst_v);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m256i f = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    const __m256i abs = _mm256_and_si256(f, _mm256_set1_epi32(0x7fffffff));
    const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    const __m256i quiet = _mm256_and_si256(is_nan, _mm256_set1_epi32(0x00400000));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_or_si256(f, quiet));
  }
  tail_bf16_to_f32(src + i, dst + i, n - i);
}

#undef DIFFUSE_AVX2

// --- AVX-512F: 16 lanes -----------------------------------------------------------------------

// GCC 12's avx512fintrin.h initializes _mm512_undefined_*() from itself, which trips
// -Wmaybe-uninitialized inside these intrinsics (GCC bug 105593); the values are never read.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

#define DIFFUSE_AVX512 __attribute__((target("avx512f")))

DIFFUSE_AVX512 void avx512_f32_to_f16(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const float*>(src_v);
  auto* dst = static_cast<uint16_t*>(dst_v);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
  }
  tail_f32_to_f16(src + i, dst + i, n - i);
}

DIFFUSE_AVX512 void avx512_f16_to_f32(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const uint16_t*>(src_v);
  auto* dst = static_cast<float*>(dst_v);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
  }
  tail_f16_to_f32(src + i, dst + i, n - i);
}

DIFFUSE_AVX512 void avx512_f32_to_bf16(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const float*>(src_v);
  auto* dst = static_cast<uint16_t*>(dst_v);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_loadu_si512(src + i);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 is_nan = _mm512_cmpgt_epi32_mask(
        _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    const __m512i out = _mm512_mask_blend_epi32(is_nan, rounded, quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(out));
  }
  tail_f32_to_bf16(src + i, dst + i, n - i);
}

DIFFUSE_AVX512 void avx512_bf16_to_f32(const void* src_v, void* dst_v, std::size_t n) {
  const auto* src = static_cast<const uint16_t*>(src_v);
  auto* dst = static_cast<float*>(dst_v);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m512i f = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
    const __mmask16 is_nan = _mm512_cmpgt_epi32_mask(
        _mm512_and_si512(f, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    _mm512_storeu_si512(dst + i, _mm512_mask_or_epi32(f, is_nan, f, _mm512_set1_epi32(0x00400000)));
  }
  tail_bf16_to_f32(src + i, dst + i, n - i);
}

#undef DIFFUSE_AVX512
#pragma GCC diagnostic pop

bool cpu_has(ConvertIsa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case ConvertIsa::scalar:
      return true;
    case ConvertIsa::avx2:
      return f.avx2 && f.f16c;
    case ConvertIsa::avx512:
      return f.avx512f;
  }
  return false;
}

#else  // !DIFFUSE_CONVERT_X86

bool cpu_has(ConvertIsa isa) {
  return isa == ConvertIsa::scalar;
}

#endif

// The kernel of `isa` for a pair, or null.
Kernel find_kernel(ConvertIsa isa, DType src, DType dst) {
#if DIFFUSE_CONVERT_X86
  const bool avx512 = isa == ConvertIsa::avx512;
  if (isa == ConvertIsa::scalar) return nullptr;
  if (src == DType::f32 && dst == DType::f16) return avx512 ? avx512_f32_to_f16 : avx2_f32_to_f16;
  if (src == DType::f16 && dst == DType::f32) return avx512 ? avx512_f16_to_f32 : avx2_f16_to_f32;
  if (src == DType::f32 && dst == DType::bf16)
    return avx512 ? avx512_f32_to_bf16 : avx2_f32_to_bf16;
  if (src == DType::bf16 && dst == DType::f32)
    return avx512 ? avx512_bf16_to_f32 : avx2_bf16_to_f32;
#else
  (void)isa;
  (void)src;
  (void)dst;
#endif
  return nullptr;
}

}  // namespace

ConvertIsa best_convert_isa() {
  static const ConvertIsa best = [] {
    if (cpu_has(ConvertIsa::avx512)) return ConvertIsa::avx512;
    if (cpu_has(ConvertIsa::avx2)) return ConvertIsa::avx2;
    return ConvertIsa::scalar;
  }();
  return best;
}

bool convert_buffer_isa(ConvertIsa isa, const void* src, DType src_dtype, void* dst,
                        DType dst_dtype, std::size_t n) {
  if (isa == ConvertIsa::scalar) {
    convert_buffer_scalar(src, src_dtype, dst, dst_dtype, n);
    return true;
  }
  if (!cpu_has(isa)) return false;
  const Kernel kernel = find_kernel(isa, src_dtype, dst_dtype);
  if (kernel == nullptr) return false;
  kernel(src, dst, n);
  return true;
}

void convert_buffer(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::size_t n) {
  const Kernel kernel = find_kernel(best_convert_isa(), src_dtype, dst_dtype);
  const auto run = [&](std::size_t begin, std::size_t count) {
    const auto* s = static_cast<const char*>(src) + begin * dtype_size(src_dtype);
    auto* d = static_cast<char*>(dst) + begin * dtype_size(dst_dtype);
    if (kernel != nullptr) {
      kernel(s, d, count);
    } else {
      convert_buffer_scalar(s, src_dtype, d, dst_dtype, count);
    }
  };
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (n < kParallelConvertMin || threads <= 1) {
    run(0, n);
    return;
  }
  // Chunks of a multiple of 64 elements keep every chunk but the last free of scalar tails.
  const std::size_t chunks = static_cast<std::size_t>(threads);
  const std::size_t chunk = ((n + chunks - 1) / chunks + 63) / 64 * 64;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::size_t begin = std::min(n, c * chunk);
    const std::size_t end = std::min(n, begin + chunk);
    if (end > begin) run(begin, end - begin);
  }
}

}  // namespace diffuse::detail
