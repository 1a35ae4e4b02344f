// oneDNN-backed matrix products and convolution for the CPU backend. The ops layer
// (src/ops/linalg.cpp) checks the arguments; these functions trust them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"

namespace diffuse::cpu {

// The weight of one linear or conv2d layer, owned by the layer (ops::LinalgWeight) rather than
// by the global weight cache. It starts as the plain tensor the model loaded; the first call of
// dnnl_linear / dnnl_conv2d converts it to the compute dtype and reorders it into the layout the
// primitive picked (a blocked layout in general). From then on:
//  - when the plain tensor can be recovered exactly from that copy (same dtype, or f16/bf16
//    computed in f32) and is not itself the copy, the plain tensor is dropped: the copy in the
//    compute layout is the only one in memory;
//  - when the plain tensor lies in a read-only memory-mapped file, its pages are handed back
//    to the kernel (madvise DONTNEED; re-read from the file if ever touched again), so a mapped
//    weight does not stay resident next to its copy either;
//  - a primitive that asks for another layout (another shape can pick another blocking) gets
//    a copy reordered from an existing one in the same dtype (exact), or from the plain tensor;
//  - plain() gives the plain tensor back, re-created from a copy when it was dropped (exact).
// Thread-safe: copies are made under a per-weight lock.
class DnnlWeight {
 public:
  // `plain` holds the weight; `dtype` is the weight's dtype (the model's weight dtype). When the
  // two differ (`plain` is a zero-copy view of a file in another float dtype), the values are
  // those of plain.to(dtype): the conversion happens when the compute copy is made, so that no
  // converted plain copy is ever held.
  DnnlWeight(Tensor plain, DType dtype);
  ~DnnlWeight();
  DnnlWeight(const DnnlWeight&) = delete;
  DnnlWeight& operator=(const DnnlWeight&) = delete;

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  // The weight as a contiguous tensor of shape() and dtype().
  Tensor plain() const;
  // Whether the plain tensor is still held (tests, benchmarks).
  bool holds_plain() const;
  // Bytes of the copies in compute layouts that do not alias the plain tensor.
  std::size_t copy_bytes() const;

  struct Copies;  // the oneDNN memories (dnnl_linalg.cpp)

 private:
  friend struct WeightAccess;
  Tensor plain_locked() const;

  const Shape shape_;
  const DType dtype_;
  mutable std::mutex mu_;
  mutable Tensor plain_;  // dropped (undefined) once a copy holds it exactly; any float dtype
  std::unique_ptr<Copies> copies_;
};

// y[M, N] = post(x[M, K] @ w[N, K]^T + bias[N]) as a new f32 tensor; x is any [..., K] tensor
// (flattened to rows), w is cached in the compute layout (see weight_cache in the .cpp).
Tensor dnnl_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, DType compute,
                   ops::Activation post);

// [..., m, k] x [..., k, n] with NumPy-broadcast batch dims; both >= 2-D. Returns f32.
Tensor dnnl_matmul(const Tensor& a, const Tensor& b, DType compute);

struct DnnlConvParams {
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
  ops::Activation post = ops::Activation::none;
  // The input is upsampled 2x (nearest, F.interpolate(scale_factor=2)) before the convolution;
  // the upsampled tensor is never materialized when the convolution runs in bands.
  bool upsample2x = false;
  // A per (batch, channel) transform of the (f32, contiguous) input applied first:
  // act(x * in_scale[n * C + c] + in_shift[n * C + c]) computed by SimdKernels::affine_act, i.e.
  // a group norm fused into the convolution (see group_norm_coefficients). Empty: none. Never
  // materialized for the whole tensor when the convolution runs in bands.
  std::vector<float> in_scale, in_shift;
  ops::Activation in_act = ops::Activation::none;
};

// NCHW f32 in, NCHW f32 out (weight [O, C/groups, kh, kw], cached in the compute layout). Large
// NHWC convolutions run in bands of output rows (see the .cpp).
Tensor dnnl_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute);

// The same with a layer-owned weight.
Tensor dnnl_linear(const Tensor& x, const DnnlWeight& weight, const Tensor& bias, DType compute,
                   ops::Activation post);
Tensor dnnl_conv2d(const Tensor& x, const DnnlWeight& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute);

// When large convolutions run in bands of output rows (see the .cpp): from min_output_bytes of
// f32 output on (negative: never; 0: whenever the primitive works in NHWC), with bands of about
// bytes_per_thread of output per thread. Process-wide; for tests and benchmarks.
struct DnnlConvBanding {
  int64_t min_output_bytes;
  int64_t bytes_per_thread;
};
DnnlConvBanding dnnl_conv_banding();
void set_dnnl_conv_banding(const DnnlConvBanding& banding);
// Convolutions run in bands since the process started (tests check that bands were used).
std::size_t dnnl_banded_conv_count();

// Drops every cached reordered weight and primitive.
void dnnl_clear_caches();

// Number of cached reordered weights (tests check that dead storages are released).
std::size_t dnnl_cached_weight_count();

}  // namespace diffuse::cpu
