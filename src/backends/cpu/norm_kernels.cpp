// Normalization and softmax kernels. Inputs are contiguous (src/ops makes them so) f32, f16 or
// bf16; half rows are widened into per-thread f32 buffers. Statistics: blocked f32 vector sums
// combined in double (simd_kernels.inc), around a shift close to the mean so that the
// single-pass variance of group norm does not cancel.
#include <algorithm>
#include <cmath>
#include <vector>

#include "src/backends/cpu/kernels.h"
#include "src/backends/cpu/strided.h"

namespace diffuse::cpu {
namespace {

// Mean of the first few elements: a cheap shift for the single-pass variance.
float leading_mean(const float* x, int64_t n) {
  const int64_t m = std::min<int64_t>(n, 32);
  double s = 0.0;
  for (int64_t i = 0; i < m; ++i) s += x[i];
  return m > 0 ? static_cast<float>(s / static_cast<double>(m)) : 0.0f;
}

// Mean and 1/sqrt(var + eps) (biased variance) of a row, two passes over it.
void row_stats(const SimdKernels& k, const float* x, int64_t n, double eps, float* mean,
               float* rstd) {
  double s1 = 0.0, s2 = 0.0;
  k.sum_sumsq(x, n, 0.0f, &s1, &s2);
  const float m = static_cast<float>(s1 / static_cast<double>(n));
  k.sum_sumsq(x, n, m, &s1, &s2);
  const double d = s1 / static_cast<double>(n);
  const double var = std::max(s2 / static_cast<double>(n) - d * d, 0.0);
  *mean = static_cast<float>(static_cast<double>(m) + d);
  *rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
}

// Mean and 1/sqrt(var + eps) (biased variance) of one group of m contiguous values, in one pass
// around a shift close to the mean.
void group_stats(const SimdKernels& k, const float* xs, int64_t m, double eps, double* mean,
                 double* rstd) {
  const float shift = leading_mean(xs, m);
  double s1 = 0.0, s2 = 0.0;
  k.sum_sumsq(xs, m, shift, &s1, &s2);
  const double dm = s1 / static_cast<double>(m);
  const double var = std::max(s2 / static_cast<double>(m) - dm * dm, 0.0);
  *mean = static_cast<double>(shift) + dm;
  *rstd = 1.0 / std::sqrt(var + eps);
}

// y = x * a + b for channel `ch`, with the affine parameters folded in.
void channel_affine(double mean, double rstd, const std::vector<float>& w,
                    const std::vector<float>& b, int64_t ch, float* a, float* sh) {
  const double ad = rstd * (w.empty() ? 1.0 : static_cast<double>(w[ch]));
  const double shd = (b.empty() ? 0.0 : static_cast<double>(b[ch])) - mean * ad;
  *a = static_cast<float>(ad);
  *sh = static_cast<float>(shd);
}

}  // namespace

void group_norm_coefficients(const Tensor& x, int64_t num_groups, const Tensor& weight,
                             const Tensor& bias, double eps, float* scale, float* shift) noexcept {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  const int64_t cg = c / num_groups;
  const int64_t m = cg * s;
  if (m == 0) return;
  const std::vector<float> w = f32_values(weight);
  const std::vector<float> b = f32_values(bias);
  const SimdKernels& k = simd();
  const float* src = x.data<float>();
  const int64_t groups = n * num_groups;
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelMin)
  for (int64_t ng = 0; ng < groups; ++ng) {
    const int64_t bn = ng / num_groups, g = ng % num_groups;
    double mean, rstd;
    group_stats(k, src + (bn * c + g * cg) * s, m, eps, &mean, &rstd);
    for (int64_t j = 0; j < cg; ++j) {
      const int64_t ch = g * cg + j;
      channel_affine(mean, rstd, w, b, ch, &scale[bn * c + ch], &shift[bn * c + ch]);
    }
  }
}

void group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                double eps, ops::Activation post, const Tensor& out) noexcept {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  const int64_t cg = c / num_groups;
  const int64_t m = cg * s;
  if (m == 0) return;
  const std::vector<float> w = f32_values(weight);
  const std::vector<float> b = f32_values(bias);
  const int act = activation_code(post);
  const SimdKernels& k = simd();
  const DType dtype = x.dtype();
  const bool f32 = dtype == DType::f32;
  const int64_t size = static_cast<int64_t>(x.itemsize());
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t groups = n * num_groups;
#pragma omp parallel if (x.numel() >= kParallelMin)
  {
    std::vector<float> in_buf(f32 ? 0 : static_cast<std::size_t>(m));
    std::vector<float> out_buf(f32 ? 0 : static_cast<std::size_t>(s));
#pragma omp for schedule(static)
    for (int64_t ng = 0; ng < groups; ++ng) {
      const int64_t bn = ng / num_groups, g = ng % num_groups;
      const int64_t first = (bn * c + g * cg) * s;  // element offset of the group
      const float* xs = reinterpret_cast<const float*>(src) + first;
      if (!f32) {
        to_f32(src + first * size, dtype, in_buf.data(), m);
        xs = in_buf.data();
      }
      // 1. Statistics: mean and biased variance of the group in one pass.
      double mean, rstd;
      group_stats(k, xs, m, eps, &mean, &rstd);
      // 2. Per channel: y = act(x * a + b) with the affine parameters folded in.
      for (int64_t j = 0; j < cg; ++j) {
        float a, sh;
        channel_affine(mean, rstd, w, b, g * cg + j, &a, &sh);
        const int64_t o = first + j * s;
        if (f32) {
          k.affine_act(xs + j * s, reinterpret_cast<float*>(dst) + o, s, a, sh, act);
        } else {
          k.affine_act(xs + j * s, out_buf.data(), s, a, sh, act);
          store_f32(out_buf.data(), dtype, dst + o * size, s);
        }
      }
    }
  }
}

namespace {

// Runs fn(x_row_f32, y_row_f32) over the rows of length d of contiguous x into out, widening
// and narrowing half rows through per-thread buffers.
template <class Fn>
void for_each_row(const Tensor& x, int64_t d, const Tensor& out, Fn fn) {
  if (d == 0) return;
  const int64_t rows = x.numel() / d;
  const DType dtype = x.dtype();
  const bool f32 = dtype == DType::f32;
  const int64_t size = static_cast<int64_t>(x.itemsize());
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
#pragma omp parallel if (x.numel() >= kParallelMin)
  {
    std::vector<float> in_buf(f32 ? 0 : static_cast<std::size_t>(d));
    std::vector<float> out_buf(f32 ? 0 : static_cast<std::size_t>(d));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (f32) {
        fn(reinterpret_cast<const float*>(src) + r * d, reinterpret_cast<float*>(dst) + r * d);
      } else {
        to_f32(src + r * d * size, dtype, in_buf.data(), d);
        fn(in_buf.data(), out_buf.data());
        store_f32(out_buf.data(), dtype, dst + r * d * size, d);
      }
    }
  }
}

}  // namespace

void layer_norm(const Tensor& x, int64_t d, const Tensor& weight, const Tensor& bias, double eps,
                const Tensor& out) noexcept {
  const std::vector<float> w = f32_values(weight);
  const std::vector<float> b = f32_values(bias);
  const float* wp = w.empty() ? nullptr : w.data();
  const float* bp = b.empty() ? nullptr : b.data();
  const SimdKernels& k = simd();
  for_each_row(x, d, out, [&](const float* xr, float* yr) {
    float mean, rstd;
    row_stats(k, xr, d, eps, &mean, &rstd);
    k.normalize_row(xr, yr, d, mean, rstd, wp, bp);
  });
}

void rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& out) noexcept {
  const int64_t d = x.dim() == 0 ? 1 : x.size(-1);
  const std::vector<float> w = f32_values(weight);
  const float* wp = w.empty() ? nullptr : w.data();
  const SimdKernels& k = simd();
  for_each_row(x, d, out, [&](const float* xr, float* yr) {
    const double ms = k.sum_sq_dev(xr, d, 0.0f) / static_cast<double>(d);
    const float rstd = static_cast<float>(1.0 / std::sqrt(ms + eps));
    k.normalize_row(xr, yr, d, 0.0f, rstd, wp, nullptr);
  });
}

void softmax_lastdim(const Tensor& x, const Tensor& out) noexcept {
  const int64_t d = x.dim() == 0 ? 1 : x.size(-1);
  const SimdKernels& k = simd();
  for_each_row(x, d, out, [&](const float* xr, float* yr) { k.softmax_row(xr, yr, d); });
}

}  // namespace diffuse::cpu
