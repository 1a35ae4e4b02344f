// Copying shape ops: argument checks, output shapes and dispatch to the device's kernels.
#include "diffuse/ops/shape.h"

#include <cmath>

#include "src/backends/cpu/kernels.h"
#include "src/ops/kernel_checks.h"

namespace diffuse::ops {

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  DIFFUSE_CHECK(!tensors.empty(), "concat: expected at least one tensor");
  const Tensor& first = tensors[0];
  detail::check_defined(first, "concat", "tensor 0");
  const int64_t nd = first.dim();
  DIFFUSE_CHECK(nd >= 1 && dim >= -nd && dim < nd, "concat: dim ", dim,
                " is out of range for tensors of shape ", shape_str(first.shape()));
  const int64_t d = dim < 0 ? dim + nd : dim;
  Shape shape = first.shape();
  shape[d] = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    detail::check_defined(t, "concat", "an input");
    detail::check_device({&first, &t}, "concat");
    DIFFUSE_CHECK(t.dtype() == first.dtype(), "concat: tensor ", i, " is ", t.str(),
                  " but tensor 0 is ", first.str(), " (all must share a dtype)");
    bool ok = t.dim() == nd;
    for (int64_t k = 0; ok && k < nd; ++k) ok = k == d || t.size(k) == first.size(k);
    DIFFUSE_CHECK(ok, "concat: tensor ", i, " has shape ", shape_str(t.shape()),
                  ", which differs from tensor 0's ", shape_str(first.shape()), " outside dim ", d);
    shape[d] += t.size(d);
  }
  Tensor out = Tensor::empty(shape, first.dtype());
  detail::check_rank(out, "concat");
  if (out.numel() > 0) cpu::concat(tensors, d, out);
  return out;
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, PadMode mode, double value) {
  detail::check_defined(x, "pad", "the input");
  detail::check_device({&x}, "pad");
  detail::check_rank(x, "pad");
  const int64_t n = static_cast<int64_t>(pads.size());
  DIFFUSE_CHECK(n % 2 == 0 && n / 2 <= x.dim(), "pad: expected pairs (left, right) for at most ",
                x.dim(), " dims of x ", shape_str(x.shape()), ", got ", n, " values");
  Shape shape = x.shape();
  for (int64_t k = 0; k < n / 2; ++k) {
    const int64_t d = x.dim() - 1 - k;
    const int64_t left = pads[2 * k], right = pads[2 * k + 1];
    const int64_t in = x.size(d);
    if (mode == PadMode::reflect) {
      DIFFUSE_CHECK(left >= 0 && right >= 0 && left < in && right < in, "pad: reflect padding (",
                    left, ", ", right, ") of dim ", d, " must be non-negative and smaller than its",
                    " extent ", in, " (x ", shape_str(x.shape()), ")");
    } else if (mode == PadMode::replicate) {
      DIFFUSE_CHECK(left >= 0 && right >= 0 && in > 0, "pad: replicate padding (", left, ", ",
                    right, ") of dim ", d, " needs non-negative pads and a non-empty dim (x ",
                    shape_str(x.shape()), ")");
    }
    shape[d] = in + left + right;
    DIFFUSE_CHECK(shape[d] >= 0, "pad: padding (", left, ", ", right, ") gives dim ", d, " of x ",
                  shape_str(x.shape()), " a negative extent");
  }
  if (mode != PadMode::constant) {
    DIFFUSE_CHECK(x.dtype() != DType::boolean,
                  "pad: ", mode == PadMode::reflect ? "reflect" : "replicate",
                  " padding needs a numeric tensor, got ", x.str());
  }
  Tensor out = Tensor::empty(shape, x.dtype());
  if (out.numel() > 0) cpu::pad(x, pads, mode, value, out);
  return out;
}

namespace {

void check_upsample_input(const Tensor& x) {
  detail::check_defined(x, "upsample_nearest", "the input");
  detail::check_device({&x}, "upsample_nearest");
  DIFFUSE_CHECK(x.dim() == 4, "upsample_nearest: expected x of shape [N, C, H, W], got ",
                shape_str(x.shape()));
}

}  // namespace

Tensor upsample_nearest(const Tensor& x, double scale) {
  check_upsample_input(x);
  DIFFUSE_CHECK(scale > 0.0 && std::isfinite(scale),
                "upsample_nearest: scale must be positive, got ", scale);
  // F.interpolate(scale_factor=s): output floor(in * s), source scale 1 / s (as float).
  Shape shape = x.shape();
  shape[2] = static_cast<int64_t>(std::floor(static_cast<double>(x.size(2)) * scale));
  shape[3] = static_cast<int64_t>(std::floor(static_cast<double>(x.size(3)) * scale));
  DIFFUSE_CHECK(shape[2] > 0 && shape[3] > 0, "upsample_nearest: scale ", scale,
                " gives an empty output for x ", shape_str(x.shape()));
  Tensor out = Tensor::empty(shape, x.dtype());
  const float inv = static_cast<float>(1.0 / scale);
  if (out.numel() > 0) cpu::upsample_nearest(x, out, inv, inv);
  return out;
}

Tensor upsample_nearest(const Tensor& x, const Shape& size) {
  check_upsample_input(x);
  DIFFUSE_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0,
                "upsample_nearest: expected size {H_out, W_out} > 0, got ", shape_str(size));
  Shape shape = x.shape();
  shape[2] = size[0];
  shape[3] = size[1];
  Tensor out = Tensor::empty(shape, x.dtype());
  const float sh = static_cast<float>(x.size(2)) / static_cast<float>(size[0]);
  const float sw = static_cast<float>(x.size(3)) / static_cast<float>(size[1]);
  if (out.numel() > 0) cpu::upsample_nearest(x, out, sh, sw);
  return out;
}

namespace {

// PyTorch's pooling_output_shape (dilation 1).
int64_t pooled_extent(int64_t in, int64_t kernel, int64_t stride, int64_t padding, bool ceil) {
  const int64_t num = in + 2 * padding - kernel + (ceil ? stride - 1 : 0);
  int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
  if (ceil && (out - 1) * stride >= in + padding) --out;
  return out;
}

}  // namespace

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                  bool count_include_pad, bool ceil_mode) {
  detail::check_defined(x, "avg_pool2d", "the input");
  detail::check_device({&x}, "avg_pool2d");
  detail::check_floating(x, "avg_pool2d");
  DIFFUSE_CHECK(x.dim() == 3 || x.dim() == 4,
                "avg_pool2d: expected x of shape [N, C, H, W] or [C, H, W], got ",
                shape_str(x.shape()));
  if (stride <= 0) stride = kernel;
  DIFFUSE_CHECK(kernel > 0 && padding >= 0 && padding <= kernel / 2, "avg_pool2d: kernel ", kernel,
                " and padding ", padding,
                " must satisfy kernel > 0 and 0 <= padding <= kernel / 2");
  Shape shape = x.shape();
  const int64_t oh = pooled_extent(x.size(-2), kernel, stride, padding, ceil_mode);
  const int64_t ow = pooled_extent(x.size(-1), kernel, stride, padding, ceil_mode);
  DIFFUSE_CHECK(oh > 0 && ow > 0, "avg_pool2d: kernel ", kernel, ", stride ", stride,
                " and padding ", padding, " give an empty output for x ", shape_str(x.shape()));
  shape[shape.size() - 2] = oh;
  shape[shape.size() - 1] = ow;
  Tensor out = Tensor::empty(shape, x.dtype());
  if (out.numel() > 0) {
    cpu::avg_pool2d(x.contiguous(), kernel, stride, padding, count_include_pad, out);
  }
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  detail::check_defined(weight, "embedding", "weight");
  detail::check_defined(ids, "embedding", "ids");
  detail::check_device({&weight, &ids}, "embedding");
  DIFFUSE_CHECK(weight.dim() == 2, "embedding: expected weight of shape [V, D], got ",
                shape_str(weight.shape()));
  DIFFUSE_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64,
                "embedding: ids must be i32 or i64, got ", ids.str());
  const int64_t v = weight.size(0);
  const std::vector<int64_t> values = ids.to_vector<int64_t>();
  for (std::size_t i = 0; i < values.size(); ++i) {
    DIFFUSE_CHECK(values[i] >= 0 && values[i] < v, "embedding: id ", values[i], " (element ", i,
                  " of ids ", shape_str(ids.shape()), ") is outside the vocabulary [0, ", v, ")");
  }
  Shape shape = ids.shape();
  shape.push_back(weight.size(1));
  Tensor out = Tensor::empty(shape, weight.dtype());
  if (out.numel() > 0) cpu::embedding(weight, ids, out);
  return out;
}

}  // namespace diffuse::ops
