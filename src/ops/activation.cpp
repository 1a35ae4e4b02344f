// Activations: argument checks and dispatch to the device's kernels.
#include "diffuse/ops/activation.h"

#include "src/backends/cpu/kernels.h"
#include "src/ops/kernel_checks.h"

namespace diffuse::ops {

using detail::unary_op;

Tensor silu(const Tensor& x) {
  return unary_op("silu", cpu::UnaryOp::silu, x, 0, 0);
}
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary_op("gelu", tanh_approximation ? cpu::UnaryOp::gelu_tanh : cpu::UnaryOp::gelu, x, 0,
                  0);
}
Tensor quick_gelu(const Tensor& x) {
  return unary_op("quick_gelu", cpu::UnaryOp::quick_gelu, x, 0, 0);
}
Tensor sigmoid(const Tensor& x) {
  return unary_op("sigmoid", cpu::UnaryOp::sigmoid, x, 0, 0);
}
Tensor tanh(const Tensor& x) {
  return unary_op("tanh", cpu::UnaryOp::tanh, x, 0, 0);
}
Tensor relu(const Tensor& x) {
  return unary_op("relu", cpu::UnaryOp::relu, x, 0, 0);
}

Tensor geglu(const Tensor& x) {
  detail::check_defined(x, "geglu", "the input");
  detail::check_device({&x}, "geglu");
  detail::check_floating(x, "geglu");
  detail::check_rank(x, "geglu");
  DIFFUSE_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0,
                "geglu: expected an even last dim (projection output [..., 2 * inner]), got ",
                x.str());
  const int64_t k = x.size(-1) / 2;
  Shape shape = x.shape();
  shape.back() = k;
  Tensor out = Tensor::empty(shape, x.dtype());
  if (out.numel() > 0) {
    cpu::binary(cpu::BinaryOp::geglu, x.narrow(-1, 0, k), x.narrow(-1, k, k), out);
  }
  return out;
}

Tensor activation(const Tensor& x, Activation kind) {
  switch (kind) {
    case Activation::none:
      return unary_op("activation", cpu::UnaryOp::identity, x, 0, 0);
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
  DIFFUSE_FAIL("activation: unknown Activation value ", static_cast<int>(kind));
}

}  // namespace diffuse::ops
