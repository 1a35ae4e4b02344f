// Elementwise ops: argument checks, broadcasting and dispatch to the device's kernels.
#include "diffuse/ops/elementwise.h"

#include <cmath>

#include "diffuse/ops/broadcast.h"
#include "src/backends/cpu/kernels.h"
#include "src/ops/kernel_checks.h"

namespace diffuse::ops {
namespace {

using cpu::BinaryOp;
using cpu::UnaryOp;
using detail::unary_op;

Tensor binary_op(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  detail::check_defined(a, name, "the first operand");
  detail::check_defined(b, name, "the second operand");
  detail::check_device({&a, &b}, name);
  detail::check_same_dtype(a, b, name);
  detail::check_floating(a, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, a.dtype());
  detail::check_rank(out, name);
  if (out.numel() > 0) cpu::binary(op, a.expand(shape), b.expand(shape), out);
  return out;
}

}  // namespace

Tensor detail::unary_op(const char* name, UnaryOp op, const Tensor& x, double p0, double p1) {
  detail::check_defined(x, name, "the input");
  detail::check_device({&x}, name);
  detail::check_floating(x, name);
  detail::check_rank(x, name);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  if (out.numel() > 0) cpu::unary(op, x, out, p0, p1);
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  return binary_op("add", BinaryOp::add, a, b);
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary_op("sub", BinaryOp::sub, a, b);
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary_op("mul", BinaryOp::mul, a, b);
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary_op("div", BinaryOp::div, a, b);
}

Tensor add(const Tensor& a, double b) {
  return unary_op("add", UnaryOp::add_scalar, a, b, 0);
}
Tensor sub(const Tensor& a, double b) {
  return unary_op("sub", UnaryOp::sub_scalar, a, b, 0);
}
Tensor mul(const Tensor& a, double b) {
  return unary_op("mul", UnaryOp::mul_scalar, a, b, 0);
}
Tensor div(const Tensor& a, double b) {
  return unary_op("div", UnaryOp::div_scalar, a, b, 0);
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  DIFFUSE_CHECK(!(lo > hi) && !std::isnan(lo) && !std::isnan(hi),
                "clamp: expected lo <= hi, got lo = ", lo, ", hi = ", hi);
  return unary_op("clamp", UnaryOp::clamp, x, lo, hi);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  detail::check_defined(cond, "where", "cond");
  detail::check_defined(a, "where", "a");
  detail::check_defined(b, "where", "b");
  detail::check_device({&cond, &a, &b}, "where");
  DIFFUSE_CHECK(cond.dtype() == DType::boolean, "where: cond must be a boolean tensor, got ",
                cond.str());
  detail::check_same_dtype(a, b, "where");
  const Shape shape =
      broadcast_shapes(cond.shape(), broadcast_shapes(a.shape(), b.shape(), "where"), "where");
  Tensor out = Tensor::empty(shape, a.dtype());
  detail::check_rank(out, "where");
  if (out.numel() > 0) cpu::where(cond.expand(shape), a.expand(shape), b.expand(shape), out);
  return out;
}

Tensor neg(const Tensor& x) {
  return unary_op("neg", UnaryOp::neg, x, 0, 0);
}
Tensor abs(const Tensor& x) {
  return unary_op("abs", UnaryOp::abs, x, 0, 0);
}
Tensor exp(const Tensor& x) {
  return unary_op("exp", UnaryOp::exp, x, 0, 0);
}
Tensor log(const Tensor& x) {
  return unary_op("log", UnaryOp::log, x, 0, 0);
}
Tensor sqrt(const Tensor& x) {
  return unary_op("sqrt", UnaryOp::sqrt, x, 0, 0);
}
Tensor rsqrt(const Tensor& x) {
  return unary_op("rsqrt", UnaryOp::rsqrt, x, 0, 0);
}
Tensor sin(const Tensor& x) {
  return unary_op("sin", UnaryOp::sin, x, 0, 0);
}
Tensor cos(const Tensor& x) {
  return unary_op("cos", UnaryOp::cos, x, 0, 0);
}
Tensor square(const Tensor& x) {
  return unary_op("square", UnaryOp::square, x, 0, 0);
}
Tensor pow(const Tensor& x, double exponent) {
  return unary_op("pow", UnaryOp::pow, x, exponent, 0);
}

}  // namespace diffuse::ops
