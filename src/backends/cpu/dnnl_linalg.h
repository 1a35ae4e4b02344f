// oneDNN-backed matrix products and convolution for the CPU backend. The ops layer
// (src/ops/linalg.cpp) checks the arguments; these functions trust them.
#pragma once

#include <array>
#include <cstdint>

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"

namespace diffuse::cpu {

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
};

// NCHW f32 in, NCHW f32 out (weight [O, C/groups, kh, kw], cached in the compute layout).
Tensor dnnl_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute);

// Drops every cached reordered weight and primitive.
void dnnl_clear_caches();

// Number of cached reordered weights (tests check that dead storages are released).
std::size_t dnnl_cached_weight_count();

}  // namespace diffuse::cpu
