// Elementwise arithmetic and math (PyTorch semantics).
//
// Common contract of every op here:
// - Floating dtypes f32, f16, bf16 and f64. Half types are computed in f32 and rounded once to
//   the input dtype; f64 is computed in double. Other dtypes throw diffuse::Error.
// - Tensor-tensor ops broadcast with NumPy rules (broadcast.h); both operands must have the same
//   dtype (no implicit promotion): a mismatch throws diffuse::Error naming the op and both dtypes.
// - Inputs may be any view (transposed, sliced, expanded); the result is a new contiguous tensor
//   on the inputs' device, in the inputs' dtype. Inputs are never modified.
// - Thread-safety: ops may be called concurrently on distinct outputs; they parallelize
//   internally with the threads of diffuse::set_num_threads.
#pragma once

#include "diffuse/core/tensor.h"

namespace diffuse::ops {

// a + b, a - b, a * b, a / b (true division; x / 0 gives +-inf or NaN like IEEE).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

// Scalar forms: the scalar is rounded to the compute type (f32, or f64 for f64 tensors) first,
// as PyTorch does for a Python number.
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);

// min(max(x, lo), hi). Pass -inf / +inf for a missing bound. NaN stays NaN. Requires lo <= hi.
Tensor clamp(const Tensor& x, double lo, double hi);

// cond ? a : b elementwise, `cond` of dtype boolean; the three shapes broadcast together. `a`
// and `b` must share a dtype, which may be any dtype (the values are copied, not computed).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
// 1 / sqrt(x).
Tensor rsqrt(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
// x * x.
Tensor square(const Tensor& x);
// x ** exponent (std::pow semantics; exponent 2, 0.5 and 1 take exact fast paths).
Tensor pow(const Tensor& x, double exponent);

}  // namespace diffuse::ops
