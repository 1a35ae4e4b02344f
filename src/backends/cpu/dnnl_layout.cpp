// Tiles of 16 channels x 64 pixels are transposed through an L1-resident buffer, so both the
// reads and the writes of main memory are contiguous runs. Parallel over (batch, tiles).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive in its intrinsics
#endif

#include "src/backends/cpu/dnnl_layout.h"

#include <immintrin.h>

#include <algorithm>

#include "src/backends/cpu/cpu_info.h"

namespace diffuse::cpu {
namespace {

constexpr int64_t kTileC = 16;
constexpr int64_t kTileP = 64;

#define DIFFUSE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

}  // namespace

bool fast_layout_available() {
  const CpuInfo& ci = cpu_info();
  return ci.avx512f && ci.avx512bw && ci.avx512_bf16;
}

DIFFUSE_AVX512 void nchw_to_nhwc(const float* src, int64_t n, int64_t c, int64_t hw, int64_t sn,
                                 int64_t sc, void* dst, bool to_bf16) noexcept {
  const int64_t ct = (c + kTileC - 1) / kTileC, pt = (hw + kTileP - 1) / kTileP;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t t = 0; t < ct * pt; ++t) {
      const int64_t c0 = (t / pt) * kTileC, p0 = (t % pt) * kTileP;
      const int64_t nc = std::min(kTileC, c - c0), np = std::min(kTileP, hw - p0);
      alignas(64) float tile[kTileP][kTileC];
      for (int64_t i = 0; i < nc; ++i) {
        const float* s = src + b * sn + (c0 + i) * sc + p0;
        for (int64_t p = 0; p < np; ++p) tile[p][i] = s[p];
      }
      const __mmask16 m = static_cast<__mmask16>((1u << nc) - 1u);
      for (int64_t p = 0; p < np; ++p) {
        const __m512 v = _mm512_load_ps(tile[p]);
        const int64_t at = (b * hw + p0 + p) * c + c0;
        if (to_bf16) {
          _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + at, m,
                                   (__m256i)_mm512_cvtneps_pbh(v));
        } else {
          _mm512_mask_storeu_ps(static_cast<float*>(dst) + at, m, v);
        }
      }
    }
  }
}

DIFFUSE_AVX512 void nhwc_to_nchw(const float* src, int64_t n, int64_t c, int64_t hw,
                                 float* dst) noexcept {
  const int64_t ct = (c + kTileC - 1) / kTileC, pt = (hw + kTileP - 1) / kTileP;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t t = 0; t < ct * pt; ++t) {
      const int64_t c0 = (t / pt) * kTileC, p0 = (t % pt) * kTileP;
      const int64_t nc = std::min(kTileC, c - c0), np = std::min(kTileP, hw - p0);
      alignas(64) float tile[kTileC][kTileP];
      const __mmask16 m = static_cast<__mmask16>((1u << nc) - 1u);
      for (int64_t p = 0; p < np; ++p) {
        const __m512 v = _mm512_maskz_loadu_ps(m, src + (b * hw + p0 + p) * c + c0);
        alignas(64) float row[kTileC];
        _mm512_store_ps(row, v);
        for (int64_t i = 0; i < kTileC; ++i) tile[i][p] = row[i];
      }
      for (int64_t i = 0; i < nc; ++i) {
        std::copy(tile[i], tile[i] + np, dst + (b * c + c0 + i) * hw + p0);
      }
    }
  }
}

}  // namespace diffuse::cpu
