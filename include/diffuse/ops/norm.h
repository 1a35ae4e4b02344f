// Normalizations and softmax (PyTorch semantics).
//
// Common contract: x may be f32, f16 or bf16 and any view; statistics are accumulated in
// at least f32 with blocked double combination (never a naive single f32 sum), the result is a
// new contiguous tensor in x's dtype. Optional `weight`/`bias` are passed as an undefined
// Tensor() when absent; when given they may have any floating dtype (they are read in f32) and
// must have exactly the documented shape. Violations throw diffuse::Error naming the op, the
// shapes and the dtypes.
#pragma once

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"

namespace diffuse::ops {

// torch.nn.functional.group_norm over x [N, C, *] (any number of trailing spatial dims,
// including none): C is split into `num_groups` groups (C % num_groups == 0); each (n, group)
// is normalized with its mean and biased variance, y = (x - mean) / sqrt(var + eps), then
// y * weight[c] + bias[c] (weight, bias: [C], optional), then `post` is applied (post = silu is
// the fused GroupNorm + SiLU of the diffusers resnet blocks).
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5,
                  Activation post = Activation::none);

// torch.nn.functional.layer_norm over the last `normalized_dims` dims of x (>= 1, <= x.dim()),
// biased variance, eps inside the sqrt; weight and bias (optional) have the shape of those dims.
// Note: a braced single value `layer_norm(x, {320})` selects this overload (320 dims, an
// error); pass `Shape{320}` for the shape form.
Tensor layer_norm(const Tensor& x, int64_t normalized_dims, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
// The same with PyTorch's normalized_shape, which must equal the trailing dims of x.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// RMSNorm over the last dim (diffusers RMSNorm / T5LayerNorm):
// y = x / sqrt(mean(x^2) + eps) * weight, computed in f32, weight [D] optional.
Tensor rms_norm(const Tensor& x, const Tensor& weight = Tensor(), double eps = 1e-6);

// torch.softmax(x, dim): exp(x - max) / sum, numerically safe for large inputs; a row of all
// -inf gives NaN like PyTorch.
Tensor softmax(const Tensor& x, int64_t dim = -1);

}  // namespace diffuse::ops
