// Reductions over one dimension (PyTorch semantics). x: f32, f16, bf16 or f64, any view;
// accumulation in f32 blocks combined in double (f64: double); the result is a new contiguous
// tensor in x's dtype, with the reduced dim kept as size 1 when `keepdim`, removed otherwise.
// `dim` may be negative. Reducing an empty dim: sum = 0, mean = NaN, var = NaN, max throws.
#pragma once

#include "diffuse/core/tensor.h"

namespace diffuse::ops {

Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
// torch.var(x, dim, correction=correction): sum((x - mean)^2) / (n - correction); correction 1
// is the unbiased estimator (PyTorch's default), 0 the biased one. n - correction <= 0 gives
// inf/NaN like PyTorch.
Tensor var(const Tensor& x, int64_t dim, int64_t correction = 1, bool keepdim = false);
// Maximum values along `dim` (torch.amax / torch.max(x, dim).values); NaN propagates.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);

}  // namespace diffuse::ops
