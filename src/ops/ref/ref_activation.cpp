// Naive references of the activations: PyTorch's defining formulas in double.
#include <cmath>

#include "src/ops/ref/ref.h"
#include "src/ops/ref/ref_kernels_common.h"

namespace diffuse::ops::ref {
namespace {

constexpr double kSqrt2 = 1.41421356237309504880;
constexpr double kSqrt2OverPi = 0.79788456080286535588;

double sigmoid_of(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}
double gelu_of(double v) {
  return 0.5 * v * (1.0 + std::erf(v / kSqrt2));
}
double gelu_tanh_of(double v) {
  return 0.5 * v * (1.0 + std::tanh(kSqrt2OverPi * (v + 0.044715 * v * v * v)));
}

Tensor map(const Tensor& x, double (*f)(double)) {
  std::vector<double> v = to_double(x);
  for (double& e : v) e = f(e);
  return from_double(v, x.shape(), x.dtype());
}

}  // namespace

double detail::activation_of(Activation kind, double v) {
  switch (kind) {
    case Activation::none:
      return v;
    case Activation::silu:
      return v * sigmoid_of(v);
    case Activation::gelu:
      return gelu_of(v);
    case Activation::gelu_tanh:
      return gelu_tanh_of(v);
    case Activation::quick_gelu:
      return v * sigmoid_of(1.702 * v);
    case Activation::relu:
      return v > 0.0 || std::isnan(v) ? v : 0.0;
  }
  return v;
}

Tensor silu(const Tensor& x) {
  return map(x, [](double v) { return v * sigmoid_of(v); });
}
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return map(x, tanh_approximation ? gelu_tanh_of : gelu_of);
}
Tensor quick_gelu(const Tensor& x) {
  return map(x, [](double v) { return v * sigmoid_of(1.702 * v); });
}
Tensor sigmoid(const Tensor& x) {
  return map(x, sigmoid_of);
}
Tensor tanh(const Tensor& x) {
  return map(x, [](double v) { return std::tanh(v); });
}
Tensor relu(const Tensor& x) {
  return map(x, [](double v) { return v > 0.0 || std::isnan(v) ? v : 0.0; });
}

Tensor geglu(const Tensor& x) {
  DIFFUSE_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, "ref::geglu: odd last dim");
  const int64_t k = x.size(-1) / 2;
  const std::vector<double> a = to_double(x.narrow(-1, 0, k));
  const std::vector<double> g = to_double(x.narrow(-1, k, k));
  std::vector<double> out(a.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = a[i] * gelu_of(g[i]);
  Shape shape = x.shape();
  shape.back() = k;
  return from_double(out, shape, x.dtype());
}

Tensor activation(const Tensor& x, Activation kind) {
  switch (kind) {
    case Activation::none:
      return map(x, [](double v) { return v; });
    case Activation::silu:
      return silu(x);
    case Activation::gelu:
      return gelu(x, false);
    case Activation::gelu_tanh:
      return gelu(x, true);
    case Activation::quick_gelu:
      return quick_gelu(x);
    case Activation::relu:
      return relu(x);
  }
  DIFFUSE_FAIL("ref::activation: unknown kind");
}

}  // namespace diffuse::ops::ref
