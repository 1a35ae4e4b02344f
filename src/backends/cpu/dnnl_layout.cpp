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

DIFFUSE_AVX512 void nchw_to_nhwc_up2(const float* src, int64_t n, int64_t c, int64_t w, int64_t sn,
                                     int64_t sc, int64_t row0, int64_t rows, void* dst,
                                     bool to_bf16) noexcept {
  // Tiles of 16 channels x 32 source pixels of one source row; each source pixel is written to
  // the two output pixels it covers, for every output row of the band that reads this row.
  constexpr int64_t kTileQ = kTileP / 2;
  const int64_t ct = (c + kTileC - 1) / kTileC, qt = (w + kTileQ - 1) / kTileQ;
  const int64_t wo = 2 * w;
  const int64_t first = row0 / 2, last = (row0 + rows - 1) / 2;  // source rows read
  const int64_t srows = last - first + 1;
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t sr = 0; sr < srows; ++sr) {
      for (int64_t t = 0; t < ct * qt; ++t) {
        const int64_t y = first + sr;
        const int64_t c0 = (t / qt) * kTileC, q0 = (t % qt) * kTileQ;
        const int64_t nc = std::min(kTileC, c - c0), nq = std::min(kTileQ, w - q0);
        alignas(64) float tile[kTileQ][kTileC];
        for (int64_t i = 0; i < nc; ++i) {
          const float* s = src + b * sn + (c0 + i) * sc + y * w + q0;
          for (int64_t q = 0; q < nq; ++q) tile[q][i] = s[q];
        }
        const __mmask16 m = static_cast<__mmask16>((1u << nc) - 1u);
        for (int64_t oy = std::max(2 * y, row0); oy < std::min(2 * y + 2, row0 + rows); ++oy) {
          const int64_t row = (b * rows + (oy - row0)) * wo;
          for (int64_t q = 0; q < nq; ++q) {
            const __m512 v = _mm512_load_ps(tile[q]);
            const int64_t at = (row + 2 * (q0 + q)) * c + c0;
            if (to_bf16) {
              const auto bits = (__m256i)_mm512_cvtneps_pbh(v);
              _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + at, m, bits);
              _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + at + c, m, bits);
            } else {
              _mm512_mask_storeu_ps(static_cast<float*>(dst) + at, m, v);
              _mm512_mask_storeu_ps(static_cast<float*>(dst) + at + c, m, v);
            }
          }
        }
      }
    }
  }
}

DIFFUSE_AVX512 void nhwc_to_nchw(const float* src, int64_t n, int64_t c, int64_t hw, float* dst,
                                 int64_t dn, int64_t dc) noexcept {
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
        std::copy(tile[i], tile[i] + np, dst + b * dn + (c0 + i) * dc + p0);
      }
    }
  }
}

}  // namespace diffuse::cpu
