// Naive references of the reductions: double sums, two-pass variance.
#include <cmath>

#include "src/ops/ref/ref.h"

namespace diffuse::ops::ref {
namespace {

enum class Kind { sum, mean, var, max };

Tensor reduce(Kind kind, const Tensor& x, int64_t dim, int64_t correction, bool keepdim) {
  const int64_t d = x.wrap_dim(dim);
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= x.size(k);
  for (int64_t k = d + 1; k < x.dim(); ++k) inner *= x.size(k);
  const int64_t r = x.size(d);
  const std::vector<double> v = to_double(x);
  std::vector<double> out(static_cast<std::size_t>(outer * inner));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < inner; ++j) {
      double s = 0.0, m = -INFINITY;
      for (int64_t i = 0; i < r; ++i) {
        const double e = v[(o * r + i) * inner + j];
        s += e;
        m = (std::isnan(m) || std::isnan(e)) ? NAN : std::max(m, e);
      }
      double result = s;
      if (kind == Kind::mean) result = s / static_cast<double>(r);
      if (kind == Kind::max) result = m;
      if (kind == Kind::var) {
        const double mean = s / static_cast<double>(r);
        double ss = 0.0;
        for (int64_t i = 0; i < r; ++i) {
          const double e = v[(o * r + i) * inner + j] - mean;
          ss += e * e;
        }
        result = ss / static_cast<double>(r - correction);
      }
      out[o * inner + j] = result;
    }
  }
  Shape shape = x.shape();
  if (keepdim) {
    shape[d] = 1;
  } else {
    shape.erase(shape.begin() + d);
  }
  return from_double(out, shape, x.dtype());
}

}  // namespace

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce(Kind::sum, x, dim, 0, keepdim);
}
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce(Kind::mean, x, dim, 0, keepdim);
}
Tensor var(const Tensor& x, int64_t dim, int64_t correction, bool keepdim) {
  return reduce(Kind::var, x, dim, correction, keepdim);
}
Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce(Kind::max, x, dim, 0, keepdim);
}

}  // namespace diffuse::ops::ref
