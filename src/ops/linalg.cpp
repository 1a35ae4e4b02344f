// linear / matmul / conv2d: argument checks, then dispatch to the CPU backend (oneDNN).
#include "diffuse/ops/linalg.h"

#include "diffuse/ops/broadcast.h"
#include "diffuse/ops/norm.h"
#include "src/backends/cpu/dnnl_linalg.h"
#include "src/backends/cpu/kernels.h"
#include "src/ops/linalg_weight.h"

namespace diffuse::ops {
namespace {

bool is_weight_dtype(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16;
}

void check_compute(DType compute, const char* op) {
  DIFFUSE_CHECK(compute == DType::f32 || compute == DType::bf16, op,
                ": compute dtype must be f32 or bf16, got ", dtype_name(compute));
}

void check_cpu(const Tensor& t, const char* op, const char* name) {
  DIFFUSE_CHECK(t.device().type == DeviceType::cpu, op, ": ", name, " is on ", t.device().str(),
                "; only the CPU backend is available");
}

// The checks of linear() once x and the weight are known to be defined CPU tensors; `weight` is
// a Tensor or a LinalgWeight (shape and dtype are all that is read).
template <typename W>
void check_linear(const Tensor& x, const W& weight, const Tensor& bias, DType compute) {
  check_compute(compute, "linear");
  check_cpu(x, "linear", "x");
  DIFFUSE_CHECK(x.dim() >= 1, "linear: x must have at least 1 dim, got ", shape_str(x.shape()));
  DIFFUSE_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ",
                shape_str(weight.shape()));
  DIFFUSE_CHECK(is_weight_dtype(x.dtype()), "linear: x must be f32, f16 or bf16, got ",
                dtype_name(x.dtype()));
  DIFFUSE_CHECK(is_weight_dtype(weight.dtype()), "linear: weight must be f32, f16 or bf16, got ",
                dtype_name(weight.dtype()));
  DIFFUSE_CHECK(x.size(-1) == weight.size(1), "linear: x ", shape_str(x.shape()), " has ",
                x.size(-1), " features but weight ", shape_str(weight.shape()), " expects ",
                weight.size(1));
  if (bias.defined()) {
    check_cpu(bias, "linear", "bias");
    DIFFUSE_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ",
                  shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()),
                  " (expected [", weight.size(0), "])");
    DIFFUSE_CHECK(is_weight_dtype(bias.dtype()), "linear: bias must be f32, f16 or bf16, got ",
                  dtype_name(bias.dtype()));
  }
}

// `upsampled`: the convolution reads x upsampled 2x (nearest); the checks apply to that size.
template <typename W>
void check_conv2d(const Tensor& x, const W& weight, const Tensor& bias, const Conv2dParams& p,
                  DType compute, bool upsampled = false) {
  check_compute(compute, "conv2d");
  check_cpu(x, "conv2d", "x");
  DIFFUSE_CHECK(x.dim() == 4, "conv2d: x must be NCHW (4-D), got ", shape_str(x.shape()));
  DIFFUSE_CHECK(weight.dim() == 4, "conv2d: weight must be [O, I/groups, kh, kw], got ",
                shape_str(weight.shape()));
  DIFFUSE_CHECK(is_weight_dtype(x.dtype()), "conv2d: x must be f32, f16 or bf16, got ",
                dtype_name(x.dtype()));
  DIFFUSE_CHECK(is_weight_dtype(weight.dtype()), "conv2d: weight must be f32, f16 or bf16, got ",
                dtype_name(weight.dtype()));
  DIFFUSE_CHECK(p.groups >= 1, "conv2d: groups must be >= 1, got ", p.groups);
  for (int i = 0; i < 2; ++i) {
    DIFFUSE_CHECK(p.stride[i] >= 1 && p.dilation[i] >= 1 && p.padding[i] >= 0,
                  "conv2d: stride and dilation must be >= 1 and padding >= 0, got stride (",
                  p.stride[0], ", ", p.stride[1], "), padding (", p.padding[0], ", ", p.padding[1],
                  "), dilation (", p.dilation[0], ", ", p.dilation[1], ")");
  }
  const int64_t c = x.size(1), o = weight.size(0);
  DIFFUSE_CHECK(c % p.groups == 0 && o % p.groups == 0 && weight.size(1) * p.groups == c,
                "conv2d: x ", shape_str(x.shape()), " and weight ", shape_str(weight.shape()),
                " do not match with groups = ", p.groups, " (expected weight [O, ", c / p.groups,
                ", kh, kw] with O divisible by groups)");
  for (int i = 0; i < 2; ++i) {
    const int64_t extent = x.size(2 + i) * (upsampled ? 2 : 1) + 2 * p.padding[i];
    const int64_t span = p.dilation[i] * (weight.size(2 + i) - 1) + 1;
    DIFFUSE_CHECK(extent >= span, "conv2d: padded input ", shape_str(x.shape()),
                  upsampled ? " (upsampled 2x)" : "", " is smaller than the dilated kernel ",
                  shape_str(weight.shape()));
  }
  if (bias.defined()) {
    check_cpu(bias, "conv2d", "bias");
    DIFFUSE_CHECK(bias.dim() == 1 && bias.size(0) == o, "conv2d: bias ", shape_str(bias.shape()),
                  " does not match weight ", shape_str(weight.shape()), " (expected [", o, "])");
    DIFFUSE_CHECK(is_weight_dtype(bias.dtype()), "conv2d: bias must be f32, f16 or bf16, got ",
                  dtype_name(bias.dtype()));
  }
}

cpu::DnnlConvParams dnnl_params(const Conv2dParams& p) {
  cpu::DnnlConvParams dp;
  dp.stride = p.stride;
  dp.padding = p.padding;
  dp.dilation = p.dilation;
  dp.groups = p.groups;
  dp.post = p.post;
  return dp;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, DType compute,
              Activation post) {
  DIFFUSE_CHECK(x.defined() && weight.defined(), "linear: x and weight must be defined");
  check_cpu(weight, "linear", "weight");
  check_linear(x, weight, bias, compute);
  return cpu::dnnl_linear(x, weight, bias, compute, post);
}

Tensor linear(const Tensor& x, const LinalgWeight& weight, const Tensor& bias, DType compute,
              Activation post) {
  DIFFUSE_CHECK(x.defined() && weight.defined(), "linear: x and weight must be defined");
  check_linear(x, weight, bias, compute);
  return cpu::dnnl_linear(x, weight.backend(), bias, compute, post);
}

Tensor matmul(const Tensor& a, const Tensor& b, DType compute) {
  DIFFUSE_CHECK(a.defined() && b.defined(), "matmul: both operands must be defined");
  check_compute(compute, "matmul");
  check_cpu(a, "matmul", "a");
  check_cpu(b, "matmul", "b");
  DIFFUSE_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands must be at least 2-D, got ",
                shape_str(a.shape()), " and ", shape_str(b.shape()));
  DIFFUSE_CHECK(is_weight_dtype(a.dtype()) && is_weight_dtype(b.dtype()),
                "matmul: operands must be f32, f16 or bf16, got ", dtype_name(a.dtype()), " and ",
                dtype_name(b.dtype()));
  DIFFUSE_CHECK(a.size(-1) == b.size(-2), "matmul: inner dims differ: ", shape_str(a.shape()),
                " x ", shape_str(b.shape()));
  broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                   Shape(b.shape().begin(), b.shape().end() - 2), "matmul (batch dims)");
  return cpu::dnnl_matmul(a, b, compute);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
              DType compute) {
  DIFFUSE_CHECK(x.defined() && weight.defined(), "conv2d: x and weight must be defined");
  check_cpu(weight, "conv2d", "weight");
  check_conv2d(x, weight, bias, p, compute);
  return cpu::dnnl_conv2d(x, weight, bias, dnnl_params(p), compute);
}

Tensor conv2d(const Tensor& x, const LinalgWeight& weight, const Tensor& bias,
              const Conv2dParams& p, DType compute) {
  DIFFUSE_CHECK(x.defined() && weight.defined(), "conv2d: x and weight must be defined");
  check_conv2d(x, weight, bias, p, compute);
  return cpu::dnnl_conv2d(x, weight.backend(), bias, dnnl_params(p), compute);
}

Tensor upsample_nearest2x_conv2d(const Tensor& x, const LinalgWeight& weight, const Tensor& bias,
                                 const Conv2dParams& p, DType compute) {
  DIFFUSE_CHECK(x.defined() && weight.defined(), "conv2d: x and weight must be defined");
  check_conv2d(x, weight, bias, p, compute, true);
  cpu::DnnlConvParams dp = dnnl_params(p);
  dp.upsample2x = true;
  return cpu::dnnl_conv2d(x, weight.backend(), bias, dp, compute);
}

void clear_linalg_caches() {
  cpu::dnnl_clear_caches();
}

Tensor group_norm_conv2d(const Tensor& x, int64_t num_groups, const Tensor& norm_weight,
                         const Tensor& norm_bias, double eps, Activation norm_post,
                         const LinalgWeight& weight, const Tensor& bias, const Conv2dParams& p,
                         DType compute) {
  const auto param_ok = [&](const Tensor& t) {
    return !t.defined() || (t.device().type == DeviceType::cpu && t.dim() == 1 &&
                            t.size(0) == x.size(1) && is_weight_dtype(t.dtype()));
  };
  // The fused path takes f32 NCHW activations; anything else (and every argument error, with
  // group_norm's and conv2d's own messages) goes through the two ops.
  if (!x.defined() || x.dtype() != DType::f32 || x.dim() != 4 || x.numel() == 0 ||
      x.device().type != DeviceType::cpu || num_groups <= 0 || x.size(1) % num_groups != 0 ||
      !param_ok(norm_weight) || !param_ok(norm_bias)) {
    return conv2d(group_norm(x, num_groups, norm_weight, norm_bias, eps, norm_post), weight, bias,
                  p, compute);
  }
  DIFFUSE_CHECK(weight.defined(), "conv2d: x and weight must be defined");
  check_conv2d(x, weight, bias, p, compute);
  const Tensor xc = x.contiguous();
  cpu::DnnlConvParams dp = dnnl_params(p);
  const auto planes = static_cast<std::size_t>(x.size(0) * x.size(1));
  dp.in_scale.resize(planes);
  dp.in_shift.resize(planes);
  cpu::group_norm_coefficients(xc, num_groups, norm_weight, norm_bias, eps, dp.in_scale.data(),
                               dp.in_shift.data());
  dp.in_act = norm_post;
  return cpu::dnnl_conv2d(xc, weight.backend(), bias, dp, compute);
}

// --- LinalgWeight -------------------------------------------------------------------------------

LinalgWeight::LinalgWeight(Tensor weight)
    : LinalgWeight(weight, weight.defined() ? weight.dtype() : DType::f32) {}

LinalgWeight::LinalgWeight(Tensor stored, DType dtype) {
  DIFFUSE_CHECK(stored.defined(), "LinalgWeight: the weight is undefined");
  check_cpu(stored, "LinalgWeight", "the weight");
  DIFFUSE_CHECK(is_weight_dtype(stored.dtype()) && is_weight_dtype(dtype),
                "LinalgWeight: weight must be f32, f16 or bf16, got ", dtype_name(stored.dtype()),
                " (as ", dtype_name(dtype), ")");
  impl_ = std::make_shared<cpu::DnnlWeight>(std::move(stored), dtype);
}

const Shape& LinalgWeight::shape() const {
  static const Shape kEmpty;
  return impl_ ? impl_->shape() : kEmpty;
}

int64_t LinalgWeight::size(int64_t d) const {
  const Shape& s = shape();
  const auto n = static_cast<int64_t>(s.size());
  DIFFUSE_CHECK(d >= -n && d < n, "LinalgWeight::size: dim ", d, " out of range for ",
                shape_str(s));
  return s[static_cast<std::size_t>(d < 0 ? d + n : d)];
}

DType LinalgWeight::dtype() const {
  DIFFUSE_CHECK(defined(), "LinalgWeight: undefined");
  return impl_->dtype();
}

Tensor LinalgWeight::tensor() const {
  return impl_ ? impl_->plain() : Tensor();
}

bool LinalgWeight::holds_plain() const {
  return impl_ && impl_->holds_plain();
}

std::size_t LinalgWeight::copy_bytes() const {
  return impl_ ? impl_->copy_bytes() : 0;
}

}  // namespace diffuse::ops
