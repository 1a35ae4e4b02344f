// Flash attention on the CPU.
//
// Work items are (batch*head, block of kBq queries). For each item the queries are packed once
// (pre-multiplied by scale * log2(e), so the softmax uses exp2), then blocks of kBk keys are
// processed with an online softmax: S = Q K^T (kBq x kBk, f32), running row max m and row sum l,
// P = exp2(S - m), O = O * exp2(m_old - m) + P V. Only S, P, O of one block live per thread, so
// the Lq x Lk score matrix never exists: the workspace is K and V packed once per call (the
// size of the inputs in the compute dtype) plus ~50 KB per thread.
//
// Packed layouts (16 = one AVX-512 register of f32):
//   f32 : K [Lk/16][D][16]        V [Lk][Dvp]          Q [kBq][D]
//   bf16: K [Lk/16][D/2][16][2]   V [Lk/2][Dvp][2]     Q [kBq][D/2][2]   P [kBq][kBk]
// The bf16 layouts put pairs of the reduction dim side by side, as vdpbf16ps consumes them
// (acc += a0*b0 + a1*b1 with f32 accumulation). Lk is padded to a multiple of 16 with zero keys
// (scored -inf), D to even, Dv to a multiple of 16 (Dvp).
// GCC 12 flags the _mm512_undefined_*() placeholders inside its own avx512fintrin.h as
// maybe-uninitialized (a known false positive); silence it for this file before any include.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "src/backends/cpu/attention_cpu.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>

#include "src/backends/cpu/cpu_info.h"

namespace diffuse::cpu {
namespace {

constexpr int64_t kBq = 64;  // queries per work item
constexpr int64_t kBk = 64;  // keys per block
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::atomic<std::size_t> g_peak_workspace{0};

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

// 64-byte aligned scratch memory.
template <typename T>
class Buffer {
 public:
  explicit Buffer(std::size_t n)
      : size_(n),
        data_(static_cast<T*>(
            ::operator new(std::max<std::size_t>(n, 1) * sizeof(T), std::align_val_t(64)))) {}
  ~Buffer() { ::operator delete(data_, std::align_val_t(64)); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* data() const { return data_; }
  std::size_t bytes() const { return size_ * sizeof(T); }

 private:
  std::size_t size_;
  T* data_;
};

// Reads n elements of dtype `dt` at `src` with element stride `stride` into f32.
void load_row(const void* src, DType dt, int64_t stride, int64_t n, float* dst) noexcept {
  switch (dt) {
    case DType::f32: {
      const float* s = static_cast<const float*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i * stride];
      return;
    }
    case DType::f16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_bits_to_float(s[i * stride]);
      return;
    }
    case DType::bf16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(s[i * stride]);
      return;
    }
    case DType::f64: {
      const double* s = static_cast<const double*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i * stride]);
      return;
    }
    case DType::boolean: {
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i * stride] != 0 ? 1.f : 0.f;
      return;
    }
    default:
      DIFFUSE_ASSERT(false);
  }
}

// A strided 4-D tensor seen through raw pointers (safe to use inside OpenMP regions).
struct View4 {
  const char* base;
  DType dt;
  std::size_t item;
  int64_t s[4];
  const void* at(int64_t b, int64_t h, int64_t i, int64_t j) const {
    return base + (b * s[0] + h * s[1] + i * s[2] + j * s[3]) * static_cast<int64_t>(item);
  }
};

View4 view4(const Tensor& t) {
  View4 v{static_cast<const char*>(t.data_ptr()), t.dtype(), t.itemsize(), {}};
  for (int d = 0; d < 4; ++d) v.s[d] = t.stride(d);
  return v;
}

uint16_t to_bf16(float x) {
  return float_to_bf16_bits(x);
}

// --- Problem description shared by both paths ----------------------------------------------------

struct Problem {
  int64_t b, h, lq, lk, d, dv;
  int64_t lkp, dp, dvp;  // padded: lk to 16, d to 2 (bf16) or 1 (f32), dv to 16
  float qscale;          // scale * log2(e)
  bool causal;
  bool bf16;
  View4 q, k, v;
  bool has_mask;
  bool bool_mask;
  View4 mask;
};

// --- Packing ---------------------------------------------------------------------------------

// K and V of one (batch, head) into the packed layouts.
void pack_kv(const Problem& p, int64_t bh, void* kdst, void* vdst, float* row) noexcept {
  const int64_t b = bh / p.h, h = bh % p.h;
  for (int64_t j = 0; j < p.lkp; ++j) {
    const int64_t blk = j / 16, lane = j % 16;
    if (j < p.lk) {
      load_row(p.k.at(b, h, j, 0), p.k.dt, p.k.s[3], p.d, row);
    }
    std::fill(row + (j < p.lk ? p.d : 0), row + p.dp, 0.f);
    if (p.bf16) {
      uint16_t* kd = static_cast<uint16_t*>(kdst);
      for (int64_t l = 0; l < p.dp; ++l) {
        kd[((blk * (p.dp / 2) + l / 2) * 16 + lane) * 2 + l % 2] = to_bf16(row[l]);
      }
    } else {
      float* kd = static_cast<float*>(kdst);
      for (int64_t l = 0; l < p.dp; ++l) kd[(blk * p.dp + l) * 16 + lane] = row[l];
    }
    if (j < p.lk) {
      load_row(p.v.at(b, h, j, 0), p.v.dt, p.v.s[3], p.dv, row);
    }
    std::fill(row + (j < p.lk ? p.dv : 0), row + p.dvp, 0.f);
    if (p.bf16) {
      uint16_t* vd = static_cast<uint16_t*>(vdst);
      for (int64_t c = 0; c < p.dvp; ++c) {
        vd[((j / 2) * p.dvp + c) * 2 + j % 2] = to_bf16(row[c]);
      }
    } else {
      float* vd = static_cast<float*>(vdst);
      std::memcpy(vd + j * p.dvp, row, static_cast<std::size_t>(p.dvp) * sizeof(float));
    }
  }
}

// Queries [i0, i0 + rows) of one (batch, head), scaled, into [kBq][dp].
void pack_q(const Problem& p, int64_t bh, int64_t i0, int64_t rows, void* qdst,
            float* row) noexcept {
  const int64_t b = bh / p.h, h = bh % p.h;
  for (int64_t r = 0; r < rows; ++r) {
    load_row(p.q.at(b, h, i0 + r, 0), p.q.dt, p.q.s[3], p.d, row);
    for (int64_t l = 0; l < p.d; ++l) row[l] *= p.qscale;
    std::fill(row + p.d, row + p.dp, 0.f);
    if (p.bf16) {
      uint16_t* qd = static_cast<uint16_t*>(qdst) + r * p.dp;
      for (int64_t l = 0; l < p.dp; ++l) qd[l] = to_bf16(row[l]);
    } else {
      std::memcpy(static_cast<float*>(qdst) + r * p.dp, row,
                  static_cast<std::size_t>(p.dp) * sizeof(float));
    }
  }
}

// Scores of padded keys, causal positions and the mask, added to S (log2 domain).
void apply_fixups(const Problem& p, int64_t bh, int64_t i0, int64_t rows, int64_t j0,
                  int64_t nk_real, int64_t nk, float* s, float* row) noexcept {
  const int64_t b = bh / p.h, h = bh % p.h;
  for (int64_t r = 0; r < rows; ++r) {
    float* sr = s + r * kBk;
    for (int64_t j = nk_real; j < nk; ++j) sr[j] = kNegInf;
    if (p.causal) {
      const int64_t i = i0 + r;
      for (int64_t j = std::max<int64_t>(0, i + 1 - j0); j < nk_real; ++j) sr[j] = kNegInf;
    }
    if (p.has_mask) {
      load_row(p.mask.at(b, h, i0 + r, j0), p.mask.dt, p.mask.s[3], nk_real, row);
      if (p.bool_mask) {
        for (int64_t j = 0; j < nk_real; ++j) {
          if (row[j] == 0.f) sr[j] = kNegInf;
        }
      } else {
        for (int64_t j = 0; j < nk_real; ++j) sr[j] += row[j] * kLog2e;
      }
    }
  }
}

// --- Portable kernels ----------------------------------------------------------------------------

struct GenericKernels {
  static void pack_q(const Problem& p, int64_t bh, int64_t i0, int64_t rows, void* qdst,
                     float* row) noexcept {
    cpu::pack_q(p, bh, i0, rows, qdst, row);
  }

  static void finish(const Problem& p, int64_t rows, const float* o, const float* l,
                     float* dst) noexcept {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < p.dv; ++c) dst[r * p.dv + c] = o[r * p.dvp + c] / l[r];
    }
  }

  // S[r][0:nk] = Q[r] . K[j0 + 0:nk]
  static void scores(const Problem& p, const void* qp, const void* kp, int64_t j0, int64_t rows,
                     int64_t nk, float* s) noexcept {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t blk = (j0 + j) / 16, lane = (j0 + j) % 16;
        float acc = 0.f;
        if (p.bf16) {
          const uint16_t* q = static_cast<const uint16_t*>(qp) + r * p.dp;
          const uint16_t* k = static_cast<const uint16_t*>(kp);
          for (int64_t l = 0; l < p.dp; ++l) {
            acc += bf16_bits_to_float(q[l]) *
                   bf16_bits_to_float(k[((blk * (p.dp / 2) + l / 2) * 16 + lane) * 2 + l % 2]);
          }
        } else {
          const float* q = static_cast<const float*>(qp) + r * p.dp;
          const float* k = static_cast<const float*>(kp);
          for (int64_t l = 0; l < p.dp; ++l) acc += q[l] * k[(blk * p.dp + l) * 16 + lane];
        }
        s[r * kBk + j] = acc;
      }
    }
  }

  // P = exp2(S - m_new), updates m, l; alpha = exp2(m_old - m_new). P stored as f32 or bf16.
  static void softmax(const Problem& p, int64_t rows, int64_t nk, const float* s, void* pbuf,
                      float* m, float* l, float* alpha) noexcept {
    for (int64_t r = 0; r < rows; ++r) {
      const float* sr = s + r * kBk;
      float mx = kNegInf;
      for (int64_t j = 0; j < nk; ++j) mx = std::max(mx, sr[j]);
      const float m_new = std::max(m[r], mx);
      const float m_use = m_new == kNegInf ? 0.f : m_new;
      alpha[r] = std::exp2(m[r] - m_use);
      float sum = 0.f;
      for (int64_t j = 0; j < nk; ++j) {
        const float e = std::exp2(sr[j] - m_use);
        sum += e;
        if (p.bf16) {
          static_cast<uint16_t*>(pbuf)[r * kBk + j] = to_bf16(e);
        } else {
          static_cast<float*>(pbuf)[r * kBk + j] = e;
        }
      }
      l[r] = l[r] * alpha[r] + sum;
      m[r] = m_new;
    }
  }

  // O[r] = O[r] * alpha[r] + P[r] . V[j0 + 0:nk]
  static void accumulate(const Problem& p, const void* pbuf, const void* vp, int64_t j0,
                         int64_t rows, int64_t nk, const float* alpha, float* o) noexcept {
    for (int64_t r = 0; r < rows; ++r) {
      float* orow = o + r * p.dvp;
      for (int64_t c = 0; c < p.dvp; ++c) orow[c] *= alpha[r];
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t jj = j0 + j;
        if (p.bf16) {
          const float pj = bf16_bits_to_float(static_cast<const uint16_t*>(pbuf)[r * kBk + j]);
          const uint16_t* v = static_cast<const uint16_t*>(vp) + ((jj / 2) * p.dvp) * 2 + jj % 2;
          for (int64_t c = 0; c < p.dvp; ++c) orow[c] += pj * bf16_bits_to_float(v[c * 2]);
        } else {
          const float pj = static_cast<const float*>(pbuf)[r * kBk + j];
          const float* v = static_cast<const float*>(vp) + jj * p.dvp;
          for (int64_t c = 0; c < p.dvp; ++c) orow[c] += pj * v[c];
        }
      }
    }
  }
};

// --- AVX-512 kernels ---------------------------------------------------------------------------

#define DIFFUSE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

DIFFUSE_AVX512 inline __m512 exp2_ps(__m512 x) {
  // Below -200 the result is exactly 0 after scaling (also for -inf); NaN propagates because
  // max() returns its second operand when one is NaN.
  x = _mm512_max_ps(_mm512_set1_ps(-200.f), x);
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);  // [-0.5, 0.5]
  // 2^f by its Taylor series to degree 6 (ln2^k / k!): relative error < 2e-7 on [-0.5, 0.5].
  __m512 y = _mm512_set1_ps(1.5403530393381606e-4f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.3333558146428443e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.6181291076284772e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.5504108664821580e-2f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.4022650695910071e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.9314718055994531e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(y, n);
}

// S micro-kernel: MR query rows x NV*16 keys, reduction over the whole head dim.
template <int MR, int NV>
DIFFUSE_AVX512 void scores_tile_bf16(const uint16_t* q, int64_t dp, const uint16_t* k,
                                     float* s) noexcept {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t pairs = dp / 2;
  for (int64_t l = 0; l < pairs; ++l) {
    __m512bh kv[NV];
    for (int v = 0; v < NV; ++v) {
      kv[v] = (__m512bh)_mm512_load_si512(k + ((v * pairs + l) * 16) * 2);
    }
    for (int r = 0; r < MR; ++r) {
      int32_t qq;
      std::memcpy(&qq, q + r * dp + 2 * l, 4);
      const __m512bh qb = (__m512bh)_mm512_set1_epi32(qq);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], qb, kv[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(s + r * kBk + v * 16, acc[r][v]);
}

template <int MR, int NV>
DIFFUSE_AVX512 void scores_tile_f32(const float* q, int64_t dp, const float* k, float* s) noexcept {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t l = 0; l < dp; ++l) {
    __m512 kv[NV];
    for (int v = 0; v < NV; ++v) kv[v] = _mm512_load_ps(k + (v * dp + l) * 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 qb = _mm512_set1_ps(q[r * dp + l]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(qb, kv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(s + r * kBk + v * 16, acc[r][v]);
}

// PV micro-kernel: O[MR rows][NV*16 cols] = O * alpha + P[rows][0:nk] . V[0:nk][cols].
template <int MR, int NV>
DIFFUSE_AVX512 void accumulate_tile_bf16(const uint16_t* pr, const uint16_t* v, int64_t dvp,
                                         int64_t nk, const float* alpha, float* o) noexcept {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[r]);
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_mul_ps(_mm512_load_ps(o + r * dvp + c * 16), a);
  }
  for (int64_t jp = 0; jp < nk / 2; ++jp) {
    __m512bh vv[NV];
    for (int c = 0; c < NV; ++c) {
      vv[c] = (__m512bh)_mm512_load_si512(v + (jp * dvp + c * 16) * 2);
    }
    for (int r = 0; r < MR; ++r) {
      int32_t pp;
      std::memcpy(&pp, pr + r * kBk + 2 * jp, 4);
      const __m512bh pb = (__m512bh)_mm512_set1_epi32(pp);
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pb, vv[c]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NV; ++c) _mm512_store_ps(o + r * dvp + c * 16, acc[r][c]);
}

template <int MR, int NV>
DIFFUSE_AVX512 void accumulate_tile_f32(const float* pr, const float* v, int64_t dvp, int64_t nk,
                                        const float* alpha, float* o) noexcept {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[r]);
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_mul_ps(_mm512_load_ps(o + r * dvp + c * 16), a);
  }
  for (int64_t j = 0; j < nk; ++j) {
    __m512 vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = _mm512_load_ps(v + j * dvp + c * 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 pb = _mm512_set1_ps(pr[r * kBk + j]);
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NV; ++c) _mm512_store_ps(o + r * dvp + c * 16, acc[r][c]);
}

// Rows per micro-tile: MR x NV accumulators + NV operands + 1 broadcast must fit the 32 zmm
// registers: 6 rows with 4 vectors, 8 rows with up to 3 (e.g. Dv = 40 -> 48 columns).
constexpr int kMr = 6;
int rows_per_tile(int nv) {
  return nv <= 3 ? 8 : 6;
}

// Runtime (mr, nv) -> template instance.
template <template <int, int> class F, typename... Args>
DIFFUSE_AVX512 void dispatch_tile(int mr, int nv, Args... args) noexcept {
#define DIFFUSE_NV_CASES(M)  \
  switch (nv) {              \
    case 1:                  \
      F<M, 1>::run(args...); \
      return;                \
    case 2:                  \
      F<M, 2>::run(args...); \
      return;                \
    case 3:                  \
      F<M, 3>::run(args...); \
      return;                \
    default:                 \
      F<M, 4>::run(args...); \
      return;                \
  }
  switch (mr) {
    case 1:
      DIFFUSE_NV_CASES(1)
    case 2:
      DIFFUSE_NV_CASES(2)
    case 3:
      DIFFUSE_NV_CASES(3)
    case 4:
      DIFFUSE_NV_CASES(4)
    case 5:
      DIFFUSE_NV_CASES(5)
    case 6:
      DIFFUSE_NV_CASES(6)
    case 7:
      DIFFUSE_NV_CASES(7)
    default:
      DIFFUSE_NV_CASES(8)
  }
#undef DIFFUSE_NV_CASES
}

template <int MR, int NV>
struct ScoresBf16 {
  DIFFUSE_AVX512 static void run(const uint16_t* q, int64_t dp, const uint16_t* k, float* s) {
    scores_tile_bf16<MR, NV>(q, dp, k, s);
  }
};
template <int MR, int NV>
struct ScoresF32 {
  DIFFUSE_AVX512 static void run(const float* q, int64_t dp, const float* k, float* s) {
    scores_tile_f32<MR, NV>(q, dp, k, s);
  }
};
template <int MR, int NV>
struct AccBf16 {
  DIFFUSE_AVX512 static void run(const uint16_t* pr, const uint16_t* v, int64_t dvp, int64_t nk,
                                 const float* alpha, float* o) {
    accumulate_tile_bf16<MR, NV>(pr, v, dvp, nk, alpha, o);
  }
};
template <int MR, int NV>
struct AccF32 {
  DIFFUSE_AVX512 static void run(const float* pr, const float* v, int64_t dvp, int64_t nk,
                                 const float* alpha, float* o) {
    accumulate_tile_f32<MR, NV>(pr, v, dvp, nk, alpha, o);
  }
};

struct Avx512Kernels {
  // Queries scaled into the packed Q block (vector conversion to bf16, zero padding).
  DIFFUSE_AVX512 static void pack_q(const Problem& p, int64_t bh, int64_t i0, int64_t rows,
                                    void* qdst, float* row) noexcept {
    const int64_t b = bh / p.h, h = bh % p.h;
    const __m512 scale = _mm512_set1_ps(p.qscale);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = row;
      if (p.q.dt == DType::f32 && p.q.s[3] == 1) {
        src = static_cast<const float*>(p.q.at(b, h, i0 + r, 0));
      } else {
        load_row(p.q.at(b, h, i0 + r, 0), p.q.dt, p.q.s[3], p.d, row);
      }
      for (int64_t l = 0; l < p.dp; l += 16) {
        const int64_t valid = std::clamp<int64_t>(p.d - l, 0, 16);
        const __mmask16 lm = static_cast<__mmask16>((1u << valid) - 1u);
        const __mmask16 sm = static_cast<__mmask16>((1u << std::min<int64_t>(16, p.dp - l)) - 1u);
        const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(lm, src + l), scale);
        if (p.bf16) {
          _mm256_mask_storeu_epi16(static_cast<uint16_t*>(qdst) + r * p.dp + l, sm,
                                   (__m256i)_mm512_cvtneps_pbh(x));
        } else {
          _mm512_mask_storeu_ps(static_cast<float*>(qdst) + r * p.dp + l, sm, x);
        }
      }
    }
  }

  // dst rows = O / l (a row with l = 0 saw no key: 0 * inf = NaN, like 0 / 0).
  DIFFUSE_AVX512 static void finish(const Problem& p, int64_t rows, const float* o, const float* l,
                                    float* dst) noexcept {
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 inv = _mm512_set1_ps(1.f / l[r]);
      for (int64_t c = 0; c < p.dv; c += 16) {
        const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, p.dv - c)) - 1u);
        _mm512_mask_storeu_ps(dst + r * p.dv + c, m,
                              _mm512_mul_ps(_mm512_load_ps(o + r * p.dvp + c), inv));
      }
    }
  }

  DIFFUSE_AVX512 static void scores(const Problem& p, const void* qp, const void* kp, int64_t j0,
                                    int64_t rows, int64_t nk, float* s) noexcept {
    for (int64_t jv = 0; jv < nk; jv += 64) {
      const int nv = static_cast<int>(std::min<int64_t>(4, (nk - jv) / 16));
      for (int64_t r = 0; r < rows; r += kMr) {
        const int mr = static_cast<int>(std::min<int64_t>(kMr, rows - r));
        if (p.bf16) {
          const uint16_t* k = static_cast<const uint16_t*>(kp) + (j0 + jv) * p.dp;
          dispatch_tile<ScoresBf16>(mr, nv, static_cast<const uint16_t*>(qp) + r * p.dp, p.dp, k,
                                    s + r * kBk + jv);
        } else {
          const float* k = static_cast<const float*>(kp) + (j0 + jv) * p.dp;
          dispatch_tile<ScoresF32>(mr, nv, static_cast<const float*>(qp) + r * p.dp, p.dp, k,
                                   s + r * kBk + jv);
        }
      }
    }
  }

  DIFFUSE_AVX512 static void softmax(const Problem& p, int64_t rows, int64_t nk, const float* s,
                                     void* pbuf, float* m, float* l, float* alpha) noexcept {
    for (int64_t r = 0; r < rows; ++r) {
      const float* sr = s + r * kBk;
      __m512 mx = _mm512_set1_ps(kNegInf);
      for (int64_t j = 0; j < nk; j += 16) mx = _mm512_max_ps(mx, _mm512_load_ps(sr + j));
      const float m_new = std::max(m[r], _mm512_reduce_max_ps(mx));
      const float m_use = m_new == kNegInf ? 0.f : m_new;
      alpha[r] = _mm512_cvtss_f32(exp2_ps(_mm512_set1_ps(m[r] - m_use)));
      const __m512 mv = _mm512_set1_ps(m_use);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j = 0; j < nk; j += 16) {
        const __m512 e = exp2_ps(_mm512_sub_ps(_mm512_load_ps(sr + j), mv));
        sum = _mm512_add_ps(sum, e);
        if (p.bf16) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(pbuf) + r * kBk + j),
                             (__m256i)_mm512_cvtneps_pbh(e));
        } else {
          _mm512_store_ps(static_cast<float*>(pbuf) + r * kBk + j, e);
        }
      }
      l[r] = l[r] * alpha[r] + _mm512_reduce_add_ps(sum);
      m[r] = m_new;
    }
  }

  DIFFUSE_AVX512 static void accumulate(const Problem& p, const void* pbuf, const void* vp,
                                        int64_t j0, int64_t rows, int64_t nk, const float* alpha,
                                        float* o) noexcept {
    for (int64_t c = 0; c < p.dvp; c += 64) {
      const int nv = static_cast<int>(std::min<int64_t>(4, (p.dvp - c) / 16));
      const int tile = rows_per_tile(nv);
      for (int64_t r = 0; r < rows; r += tile) {
        const int mr = static_cast<int>(std::min<int64_t>(tile, rows - r));
        if (p.bf16) {
          const uint16_t* v = static_cast<const uint16_t*>(vp) + ((j0 / 2) * p.dvp + c) * 2;
          dispatch_tile<AccBf16>(mr, nv, static_cast<const uint16_t*>(pbuf) + r * kBk, v, p.dvp, nk,
                                 alpha + r, o + r * p.dvp + c);
        } else {
          const float* v = static_cast<const float*>(vp) + j0 * p.dvp + c;
          dispatch_tile<AccF32>(mr, nv, static_cast<const float*>(pbuf) + r * kBk, v, p.dvp, nk,
                                alpha + r, o + r * p.dvp + c);
        }
      }
    }
  }
};

// --- Driver ----------------------------------------------------------------------------------

// Per-thread scratch: S, P, packed Q, O, m, l, alpha and a row of floats, each 64-byte aligned.
struct Scratch {
  std::size_t s, p, q, o, m, l, alpha, row, total;
  explicit Scratch(const Problem& pr) {
    const int64_t el = pr.bf16 ? 2 : 4;
    const int64_t row_floats = std::max({pr.dp, pr.dvp, kBk});
    int64_t at = 0;
    auto take = [&](int64_t bytes) {
      const auto here = static_cast<std::size_t>(at);
      at += round_up(bytes, 64);
      return here;
    };
    s = take(kBq * kBk * 4);
    p = take(kBq * kBk * el);
    q = take(kBq * pr.dp * el);
    o = take(kBq * pr.dvp * 4);
    m = take(kBq * 4);
    l = take(kBq * 4);
    alpha = take(kBq * 4);
    row = take(row_floats * 4);
    total = static_cast<std::size_t>(at);
  }
};

// One work item: queries [i0, i0 + rows) of (batch*head) bh, normalized into dst.
template <typename K>
void run_item(const Problem& p, const Scratch& sc, int64_t bh, int64_t i0, int64_t rows,
              const void* kpack, const void* vpack, char* base, float* dst) noexcept {
  const std::size_t el = p.bf16 ? 2 : 4;
  float* s = reinterpret_cast<float*>(base + sc.s);
  void* pbuf = base + sc.p;
  void* qbuf = base + sc.q;
  float* o = reinterpret_cast<float*>(base + sc.o);
  float* m = reinterpret_cast<float*>(base + sc.m);
  float* l = reinterpret_cast<float*>(base + sc.l);
  float* alpha = reinterpret_cast<float*>(base + sc.alpha);
  float* row = reinterpret_cast<float*>(base + sc.row);

  K::pack_q(p, bh, i0, rows, qbuf, row);
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, 0.f);
  std::fill(o, o + rows * p.dvp, 0.f);
  const std::size_t kstride = static_cast<std::size_t>(p.lkp * p.dp) * el;
  const std::size_t vstride = static_cast<std::size_t>(p.lkp * p.dvp) * el;
  const char* kp = static_cast<const char*>(kpack) + static_cast<std::size_t>(bh) * kstride;
  const char* vp = static_cast<const char*>(vpack) + static_cast<std::size_t>(bh) * vstride;
  // Causal: query i sees keys j <= i, so keys past the block's last query are skipped.
  const int64_t kend = p.causal ? std::min(p.lk, i0 + rows) : p.lk;
  for (int64_t j0 = 0; j0 < kend; j0 += kBk) {
    const int64_t nk_real = std::min(kBk, kend - j0);
    const int64_t nk = round_up(nk_real, 16);
    K::scores(p, qbuf, kp, j0, rows, nk, s);
    if (nk != nk_real || p.causal || p.has_mask) {
      apply_fixups(p, bh, i0, rows, j0, nk_real, nk, s, row);
    }
    K::softmax(p, rows, nk, s, pbuf, m, l, alpha);
    K::accumulate(p, pbuf, vp, j0, rows, nk, alpha, o);
  }
  // O / l; a row that saw no key has l = 0 and becomes NaN (0 / 0), like torch's math path.
  K::finish(p, rows, o, l, dst + (bh * p.lq + i0) * p.dv);
}

}  // namespace

Tensor attention_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                     double scale, bool is_causal, DType compute, bool generic) {
  Problem p{};
  p.b = q.size(0);
  p.h = q.size(1);
  p.lq = q.size(2);
  p.d = q.size(3);
  p.lk = k.size(2);
  p.dv = v.size(3);
  p.bf16 = compute == DType::bf16;
  p.lkp = round_up(std::max<int64_t>(p.lk, 1), 16);
  p.dp = p.bf16 ? round_up(std::max<int64_t>(p.d, 1), 2) : std::max<int64_t>(p.d, 1);
  p.dvp = round_up(std::max<int64_t>(p.dv, 1), 16);
  p.qscale = static_cast<float>(scale) * kLog2e;
  p.causal = is_causal;
  p.q = view4(q);
  p.k = view4(k);
  p.v = view4(v);
  p.has_mask = mask.defined();
  p.bool_mask = p.has_mask && mask.dtype() == DType::boolean;
  if (p.has_mask) p.mask = view4(mask);

  Tensor out = Tensor::empty({p.b, p.h, p.lq, p.dv}, DType::f32);
  if (out.numel() == 0) return out;
  float* dst = out.data<float>();
  if (p.lk == 0) {
    // softmax over no keys: 0/0 like torch's math path.
    out.fill_(std::numeric_limits<double>::quiet_NaN());
    return out;
  }

  const CpuInfo& ci = cpu_info();
  const bool fast = !generic && ci.avx512f && ci.avx512bw && (!p.bf16 || ci.avx512_bf16);
  const std::size_t el = p.bf16 ? 2 : 4;
  const int64_t bhs = p.b * p.h;
  Buffer<char> kpack(static_cast<std::size_t>(bhs * p.lkp * p.dp) * el);
  Buffer<char> vpack(static_cast<std::size_t>(bhs * p.lkp * p.dvp) * el);
  const Scratch sc(p);
  const std::size_t scratch_bytes = sc.total;
  const int threads = std::max(1, omp_get_max_threads());
  Buffer<char> scratch(scratch_bytes * static_cast<std::size_t>(threads));
  const std::size_t workspace = kpack.bytes() + vpack.bytes() + scratch.bytes();
  std::size_t prev = g_peak_workspace.load();
  while (prev < workspace && !g_peak_workspace.compare_exchange_weak(prev, workspace)) {
  }

  const int64_t qblocks = (p.lq + kBq - 1) / kBq;
#pragma omp parallel num_threads(threads)
  {
    char* mine = scratch.data() + scratch_bytes * static_cast<std::size_t>(omp_get_thread_num());
    float* row = reinterpret_cast<float*>(mine + sc.row);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < bhs; ++bh) {
      pack_kv(p, bh, kpack.data() + static_cast<std::size_t>(bh * p.lkp * p.dp) * el,
              vpack.data() + static_cast<std::size_t>(bh * p.lkp * p.dvp) * el, row);
    }
    // Causal items differ in cost: hand them out dynamically.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < bhs * qblocks; ++item) {
      const int64_t bh = item / qblocks;
      const int64_t i0 = (item % qblocks) * kBq;
      const int64_t rows = std::min(kBq, p.lq - i0);
      if (fast) {
        run_item<Avx512Kernels>(p, sc, bh, i0, rows, kpack.data(), vpack.data(), mine, dst);
      } else {
        run_item<GenericKernels>(p, sc, bh, i0, rows, kpack.data(), vpack.data(), mine, dst);
      }
    }
  }
  return out;
}

std::size_t attention_peak_workspace_bytes() {
  return g_peak_workspace.load();
}
void attention_reset_peak_workspace() {
  g_peak_workspace.store(0);
}

}  // namespace diffuse::cpu
