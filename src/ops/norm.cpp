// Normalizations and softmax: argument checks and dispatch to the device's kernels.
#include "diffuse/ops/norm.h"

#include "src/backends/cpu/kernels.h"
#include "src/ops/kernel_checks.h"

namespace diffuse::ops {
namespace {

// weight/bias of a norm: undefined, or floating with exactly `shape`.
void check_param(const Tensor& p, const Shape& shape, const char* op, const char* what) {
  if (!p.defined()) return;
  DIFFUSE_CHECK(is_floating(p.dtype()), op, ": ", what, " must be floating, got ", p.str());
  DIFFUSE_CHECK(p.shape() == shape, op, ": expected ", what, " of shape ", shape_str(shape),
                ", got ", shape_str(p.shape()));
}

}  // namespace

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                  double eps, Activation post) {
  detail::check_defined(x, "group_norm", "the input");
  detail::check_device({&x, &weight, &bias}, "group_norm");
  detail::check_floating(x, "group_norm", false);
  DIFFUSE_CHECK(x.dim() >= 2, "group_norm: expected x of shape [N, C, *], got ",
                shape_str(x.shape()));
  const int64_t c = x.size(1);
  DIFFUSE_CHECK(num_groups > 0 && c % num_groups == 0, "group_norm: ", c,
                " channels cannot be split into ", num_groups, " groups (x ", shape_str(x.shape()),
                ")");
  check_param(weight, {c}, "group_norm", "weight");
  check_param(bias, {c}, "group_norm", "bias");
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  if (out.numel() > 0) {
    cpu::group_norm(x.contiguous(), num_groups, weight, bias, eps, post, out);
  }
  return out;
}

Tensor layer_norm(const Tensor& x, int64_t normalized_dims, const Tensor& weight,
                  const Tensor& bias, double eps) {
  detail::check_defined(x, "layer_norm", "the input");
  detail::check_device({&x, &weight, &bias}, "layer_norm");
  detail::check_floating(x, "layer_norm", false);
  DIFFUSE_CHECK(normalized_dims >= 1 && normalized_dims <= x.dim(),
                "layer_norm: normalized_dims must be in [1, ", x.dim(), "] for x ",
                shape_str(x.shape()), ", got ", normalized_dims);
  const Shape trailing(x.shape().end() - normalized_dims, x.shape().end());
  check_param(weight, trailing, "layer_norm", "weight");
  check_param(bias, trailing, "layer_norm", "bias");
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const int64_t d = shape_numel(trailing);
  if (out.numel() > 0) cpu::layer_norm(x.contiguous(), d, weight, bias, eps, out);
  return out;
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  detail::check_defined(x, "layer_norm", "the input");
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  DIFFUSE_CHECK(
      k >= 1 && k <= x.dim() && Shape(x.shape().end() - k, x.shape().end()) == normalized_shape,
      "layer_norm: normalized_shape ", shape_str(normalized_shape),
      " must equal the trailing dims of x ", shape_str(x.shape()));
  return layer_norm(x, k, weight, bias, eps);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  detail::check_defined(x, "rms_norm", "the input");
  detail::check_device({&x, &weight}, "rms_norm");
  detail::check_floating(x, "rms_norm", false);
  DIFFUSE_CHECK(x.dim() >= 1, "rms_norm: expected at least one dim, got ", x.str());
  check_param(weight, {x.size(-1)}, "rms_norm", "weight");
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  if (out.numel() > 0) cpu::rms_norm(x.contiguous(), weight, eps, out);
  return out;
}

Tensor softmax(const Tensor& x, int64_t dim) {
  detail::check_defined(x, "softmax", "the input");
  detail::check_device({&x}, "softmax");
  detail::check_floating(x, "softmax", false);
  DIFFUSE_CHECK(x.dim() >= 1, "softmax: expected at least one dim, got ", x.str());
  DIFFUSE_CHECK(dim >= -x.dim() && dim < x.dim(), "softmax: dim ", dim, " is out of range for x ",
                shape_str(x.shape()));
  const int64_t d = x.wrap_dim(dim);
  if (x.numel() == 0) return Tensor::empty(x.shape(), x.dtype());
  if (d == x.dim() - 1) {
    Tensor out = Tensor::empty(x.shape(), x.dtype());
    cpu::softmax_lastdim(x.contiguous(), out);
    return out;
  }
  // Another dim: move it last, run the row kernel, move it back.
  const Tensor xt = x.transpose(d, -1).contiguous();
  Tensor tmp = Tensor::empty(xt.shape(), x.dtype());
  cpu::softmax_lastdim(xt, tmp);
  return tmp.transpose(d, -1).contiguous();
}

}  // namespace diffuse::ops
