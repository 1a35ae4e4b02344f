// Reductions over one dim of a contiguous tensor viewed as [outer, r, inner]. Rows (inner == 1)
// of f32/f16/bf16 use the blocked SIMD sums; strided columns and f64 accumulate in double.
// Variance is two-pass (mean first, then squared deviations around it).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "src/backends/cpu/kernels.h"
#include "src/backends/cpu/strided.h"

namespace diffuse::cpu {
namespace {

// s1: the sum (the maximum for max); dev2: the sum of squared deviations from the mean (var).
double finish(ReduceOp op, double s1, double dev2, int64_t r, int64_t correction) {
  switch (op) {
    case ReduceOp::sum:
      return s1;
    case ReduceOp::mean:
      return s1 / static_cast<double>(r);
    case ReduceOp::var:
      return dev2 / static_cast<double>(r - correction);
    case ReduceOp::max:
      return s1;
  }
  return s1;
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, int64_t dim, int64_t correction,
            const Tensor& out) noexcept {
  const Shape& shape = x.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= shape[d];
  const int64_t r = x.dim() == 0 ? 1 : shape[dim];
  const DType dtype = x.dtype();
  const int64_t size = static_cast<int64_t>(x.itemsize());
  const char* src = static_cast<const char*>(x.data_ptr());
  std::vector<double> result(static_cast<std::size_t>(outer * inner));
  const bool simd_rows = inner == 1 && dtype != DType::f64 && op != ReduceOp::max;
  const SimdKernels& k = simd();
#pragma omp parallel if (x.numel() >= kParallelMin)
  {
    std::vector<float> row_f(simd_rows && dtype != DType::f32 ? static_cast<std::size_t>(r) : 0);
    std::vector<double> acc1(simd_rows ? 0 : static_cast<std::size_t>(inner));
    std::vector<double> acc2(simd_rows ? 0 : static_cast<std::size_t>(inner));
    std::vector<double> row_d(simd_rows ? 0 : static_cast<std::size_t>(inner));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const char* base = src + o * r * inner * size;
      if (simd_rows) {
        const float* xr = reinterpret_cast<const float*>(base);
        if (dtype != DType::f32) {
          to_f32(base, dtype, row_f.data(), r);
          xr = row_f.data();
        }
        double s1 = 0.0, s2 = 0.0;
        k.sum_sumsq(xr, r, 0.0f, &s1, &s2);
        double dev2 = 0.0;
        if (op == ReduceOp::var && r > 0) {
          // Second pass around the rounded mean m; the small offset d = mean - m is removed
          // exactly: sum((x - mean)^2) = sum((x - m)^2) - r d^2.
          const float m = static_cast<float>(s1 / static_cast<double>(r));
          double t1 = 0.0, t2 = 0.0;
          k.sum_sumsq(xr, r, m, &t1, &t2);
          dev2 = std::max(t2 - t1 * t1 / static_cast<double>(r), 0.0);
        }
        result[o] = finish(op, s1, dev2, r, correction);
        continue;
      }
      // Columns: accumulate `inner` sums at once, rows read in order.
      std::fill(acc1.begin(), acc1.end(),
                op == ReduceOp::max ? -std::numeric_limits<double>::infinity() : 0.0);
      std::fill(acc2.begin(), acc2.end(), 0.0);
      for (int64_t i = 0; i < r; ++i) {
        convert(base + i * inner * size, dtype, row_d.data(), DType::f64,
                static_cast<std::size_t>(inner));
        if (op == ReduceOp::max) {
          // NaN propagates: once acc is NaN no comparison replaces it.
          for (int64_t j = 0; j < inner; ++j) {
            const double v = row_d[j];
            if (v > acc1[j] || std::isnan(v)) acc1[j] = v;
          }
        } else {
          for (int64_t j = 0; j < inner; ++j) acc1[j] += row_d[j];
        }
      }
      if (op == ReduceOp::var && r > 0) {
        for (int64_t i = 0; i < r; ++i) {
          convert(base + i * inner * size, dtype, row_d.data(), DType::f64,
                  static_cast<std::size_t>(inner));
          for (int64_t j = 0; j < inner; ++j) {
            const double d = row_d[j] - acc1[j] / static_cast<double>(r);
            acc2[j] += d * d;
          }
        }
      }
      for (int64_t j = 0; j < inner; ++j) {
        result[o * inner + j] = finish(op, acc1[j], acc2[j], r, correction);
      }
    }
  }
  convert(result.data(), DType::f64, out.data_ptr(), out.dtype(), result.size());
}

}  // namespace diffuse::cpu
