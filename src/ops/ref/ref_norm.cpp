// Naive references of the norms and softmax: textbook two-pass statistics in double.
#include <cmath>

#include "src/ops/ref/ref.h"
#include "src/ops/ref/ref_kernels_common.h"

namespace diffuse::ops::ref {
namespace {

// Normalizes consecutive blocks of `block` values of v in place: (v - mean) / sqrt(var + eps).
void normalize_blocks(std::vector<double>& v, int64_t block, double eps) {
  for (std::size_t start = 0; start < v.size(); start += static_cast<std::size_t>(block)) {
    double mean = 0.0;
    for (int64_t i = 0; i < block; ++i) mean += v[start + i];
    mean /= static_cast<double>(block);
    double var = 0.0;
    for (int64_t i = 0; i < block; ++i) var += (v[start + i] - mean) * (v[start + i] - mean);
    var /= static_cast<double>(block);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < block; ++i) v[start + i] = (v[start + i] - mean) * rstd;
  }
}

}  // namespace

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                  double eps, Activation post) {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = x.numel() / (n * c);
  std::vector<double> v = to_double(x);
  normalize_blocks(v, c / num_groups * s, eps);
  const std::vector<double> w = weight.defined() ? to_double(weight) : std::vector<double>();
  const std::vector<double> b = bias.defined() ? to_double(bias) : std::vector<double>();
  for (std::size_t i = 0; i < v.size(); ++i) {
    const int64_t ch = static_cast<int64_t>(i) / s % c;
    double y = v[i];
    if (!w.empty()) y *= w[ch];
    if (!b.empty()) y += b[ch];
    v[i] = detail::activation_of(post, y);
  }
  return from_double(v, x.shape(), x.dtype());
}

Tensor layer_norm(const Tensor& x, int64_t normalized_dims, const Tensor& weight,
                  const Tensor& bias, double eps) {
  int64_t d = 1;
  for (int64_t k = 0; k < normalized_dims; ++k) d *= x.size(x.dim() - 1 - k);
  std::vector<double> v = to_double(x);
  normalize_blocks(v, d, eps);
  const std::vector<double> w = weight.defined() ? to_double(weight) : std::vector<double>();
  const std::vector<double> b = bias.defined() ? to_double(bias) : std::vector<double>();
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!w.empty()) v[i] *= w[i % static_cast<std::size_t>(d)];
    if (!b.empty()) v[i] += b[i % static_cast<std::size_t>(d)];
  }
  return from_double(v, x.shape(), x.dtype());
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const int64_t d = x.size(-1);
  std::vector<double> v = to_double(x);
  const std::vector<double> w = weight.defined() ? to_double(weight) : std::vector<double>();
  for (std::size_t start = 0; start < v.size(); start += static_cast<std::size_t>(d)) {
    double ms = 0.0;
    for (int64_t i = 0; i < d; ++i) ms += v[start + i] * v[start + i];
    const double r = 1.0 / std::sqrt(ms / static_cast<double>(d) + eps);
    for (int64_t i = 0; i < d; ++i) v[start + i] *= r * (w.empty() ? 1.0 : w[i]);
  }
  return from_double(v, x.shape(), x.dtype());
}

Tensor softmax(const Tensor& x, int64_t dim) {
  const int64_t dd = x.wrap_dim(dim);
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < dd; ++k) outer *= x.size(k);
  for (int64_t k = dd + 1; k < x.dim(); ++k) inner *= x.size(k);
  const int64_t r = x.size(dd);
  std::vector<double> v = to_double(x);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < inner; ++j) {
      auto at = [&](int64_t i) -> double& { return v[(o * r + i) * inner + j]; };
      double m = -INFINITY;
      for (int64_t i = 0; i < r; ++i) m = std::max(m, at(i));
      double sum = 0.0;
      for (int64_t i = 0; i < r; ++i) sum += std::exp(at(i) - m);
      for (int64_t i = 0; i < r; ++i) at(i) = std::exp(at(i) - m) / sum;
    }
  }
  return from_double(v, x.shape(), x.dtype());
}

}  // namespace diffuse::ops::ref
