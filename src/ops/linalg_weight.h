// LinalgWeight: the weight of a linear or conv2d layer, held the way the backend computes with
// it. Private to the library: nn::Linear and nn::Conv2d hold one.
//
// Unlike a plain weight tensor passed to ops::linear / ops::conv2d (whose converted copy the
// backend caches next to the tensor, so both stay in memory), a LinalgWeight lets the copy in the
// backend's compute layout (oneDNN's blocked bf16 layout, say) be the only one: once that copy
// exists and holds the weight exactly (same dtype, or f16/bf16 computed in f32), the plain tensor
// is released, and the resident pages of a memory-mapped one are handed back to the kernel.
// shape() and dtype() stay those of the plain weight, and tensor() re-creates it (exactly) for
// whoever needs the values (adapters, export). Copies share the same underlying weight.
#pragma once

#include <cstddef>
#include <memory>

#include "diffuse/ops/linalg.h"

namespace diffuse::cpu {
class DnnlWeight;
}

namespace diffuse::ops {

class LinalgWeight {
 public:
  LinalgWeight() = default;
  // Takes the plain weight: [out, in] for linear, [O, C / groups, kh, kw] for conv2d, f32, f16
  // or bf16, on the CPU.
  explicit LinalgWeight(Tensor weight);
  // The same for a weight of dtype `dtype` given as `stored`, a tensor of another float dtype
  // (typically a zero-copy view of a checkpoint in f32 or f16, for bf16 weights): the values are
  // stored.to(dtype), converted only when the compute copy is made, so that the model never
  // holds a converted plain copy, and the file's pages are handed back once that copy exists.
  LinalgWeight(Tensor stored, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t size(int64_t d) const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  DType dtype() const;
  int64_t numel() const { return shape_numel(shape()); }

  // The weight as a contiguous tensor of shape() and dtype(): the tensor given when it is still
  // held, else re-created from the compute copy (bit-exact).
  Tensor tensor() const;
  // Whether the plain tensor is still held, and the bytes of the compute copies beside it.
  bool holds_plain() const;
  std::size_t copy_bytes() const;

  const cpu::DnnlWeight& backend() const { return *impl_; }

 private:
  std::shared_ptr<cpu::DnnlWeight> impl_;
};

// ops::linear / ops::conv2d (same arguments, checks and numerics) with a layer-owned weight.
Tensor linear(const Tensor& x, const LinalgWeight& weight, const Tensor& bias = {},
              DType compute = DType::f32, Activation post = Activation::none);
Tensor conv2d(const Tensor& x, const LinalgWeight& weight, const Tensor& bias = {},
              const Conv2dParams& p = {}, DType compute = DType::f32);

// conv2d(upsample_nearest(x, 2.0), weight, bias, p, compute) (Upsample2D of the UNet and VAE
// decoders): the same values, without materializing the upsampled tensor when the backend
// convolves in bands (large NHWC convolutions).
Tensor upsample_nearest2x_conv2d(const Tensor& x, const LinalgWeight& weight,
                                 const Tensor& bias = {}, const Conv2dParams& p = {},
                                 DType compute = DType::f32);

// conv2d(group_norm(x, num_groups, norm_weight, norm_bias, eps, norm_post), weight, bias, p,
// compute) (the norm + conv pairs of ResnetBlock2D): the same values, the normalized tensor never
// materialized when the backend convolves in bands (it normalizes each band's rows as it
// converts them).
Tensor group_norm_conv2d(const Tensor& x, int64_t num_groups, const Tensor& norm_weight,
                         const Tensor& norm_bias, double eps, Activation norm_post,
                         const LinalgWeight& weight, const Tensor& bias = {},
                         const Conv2dParams& p = {}, DType compute = DType::f32);

}  // namespace diffuse::ops
