// Matrix products and convolution: linear, matmul, conv2d.
//
// All three run on the CPU backend through oneDNN (f32, or bf16 inputs with f32 accumulation).
// Weights of linear/conv2d are converted and reordered ONCE per (weight storage, offset, dtype,
// compute dtype) and cached; a cache entry never outlives or aliases a freed storage (it holds a
// weak reference to the storage and is dropped when that expires). Thread-safety: every op may
// be called from several threads at once; each runs on diffuse::num_threads() OpenMP threads.
#pragma once

#include <array>
#include <cstdint>

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"

namespace diffuse::ops {

// y = post(x @ weight^T + bias), like torch.nn.functional.linear followed by `post`.
// x: [..., in], f32 or bf16, any strides. weight: [out, in] in f32, f16 or bf16. bias: [out]
// (any float dtype) or undefined. `compute` is DType::f32 or DType::bf16 (bf16 inputs and
// weights, f32 accumulation); anything else throws. Returns a new contiguous [..., out] f32
// tensor. Throws diffuse::Error naming "linear" and the shapes on any mismatch.
// Treat the weight's bytes as immutable while it is in use: the cached converted copy is keyed
// by its storage and offset, not by its contents.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
              DType compute = DType::f32, Activation post = Activation::none);

// torch.matmul for >= 2-D operands: [..., m, k] x [..., k, n] -> [..., m, n] with the batch
// dims broadcast (NumPy rules). a and b are f32/f16/bf16 with any strides (transposed views are
// read in place when oneDNN can, copied otherwise). `compute` is f32 or bf16. Returns f32.
Tensor matmul(const Tensor& a, const Tensor& b, DType compute = DType::f32);

struct Conv2dParams {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};   // zero padding, symmetric, (h, w)
  std::array<int64_t, 2> dilation{1, 1};  // 1 = dense kernel (torch convention)
  int64_t groups = 1;
  Activation post = Activation::none;  // fused into the convolution
};

// torch.nn.functional.conv2d followed by `p.post`. x: [N, C, H, W] f32 (any strides);
// weight: [O, C / groups, kh, kw] in f32, f16 or bf16 (cached like linear's); bias: [O] or
// undefined. `compute` is f32 or bf16. Returns a new contiguous NCHW f32 tensor
// [N, O, Ho, Wo]. Throws diffuse::Error naming "conv2d" and the shapes on any mismatch.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
              const Conv2dParams& p = {}, DType compute = DType::f32);

// Drops every cached converted weight and oneDNN primitive (e.g. before unloading a model to
// release memory at once rather than when the weight storages die).
void clear_linalg_caches();

}  // namespace diffuse::ops
