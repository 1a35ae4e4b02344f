// Naive reference implementations of every op: double-precision accumulation, no
// vectorization, no threads. They are the executable specification the backends are tested
// against (tests/ops). Each takes the same arguments as the public op and returns its result in
// the dtype the public op would.
#pragma once

#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"
#include "diffuse/ops/attention.h"
#include "diffuse/ops/linalg.h"
#include "diffuse/ops/shape.h"

namespace diffuse::ops::ref {

// All elements of `t` in row-major order as double.
std::vector<double> to_double(const Tensor& t);
// A new contiguous tensor of `dtype` from row-major doubles.
Tensor from_double(const std::vector<double>& values, const Shape& shape, DType dtype);

// --- kernels: elementwise, activation, norm, shape, reduce, embedding (ref_<family>.cpp) ------
// Same signatures and semantics as the public ops in include/diffuse/ops/*.h. Half-precision
// results are rounded once from the double result.

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor square(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);

Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
Tensor quick_gelu(const Tensor& x);
Tensor geglu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor activation(const Tensor& x, Activation kind);

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5,
                  Activation post = Activation::none);
Tensor layer_norm(const Tensor& x, int64_t normalized_dims, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight = Tensor(), double eps = 1e-6);
Tensor softmax(const Tensor& x, int64_t dim = -1);

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, PadMode mode = PadMode::constant,
           double value = 0.0);
Tensor upsample_nearest(const Tensor& x, const Shape& size);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                  bool count_include_pad = true, bool ceil_mode = false);
Tensor embedding(const Tensor& weight, const Tensor& ids);

Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor var(const Tensor& x, int64_t dim, int64_t correction = 1, bool keepdim = false);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);

Tensor timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos = false,
                          double downscale_freq_shift = 1.0, double scale = 1.0,
                          int64_t max_period = 10000);

// --- linalg: linear, matmul, conv2d, attention (ref_linalg.cpp) -------------------------------
// Same signatures and semantics as include/diffuse/ops/linalg.h and attention.h; every product
// is accumulated in double. `compute` == bf16 rounds the operands (x, weight / a, b / q, k, v)
// to bf16 first, like the fast kernels do; the softmax of attention stays in double.

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              DType compute = DType::f32, Activation post = Activation::none);
Tensor matmul(const Tensor& a, const Tensor& b, DType compute = DType::f32);
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dParams& p = Conv2dParams(), DType compute = DType::f32);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& o = AttentionOptions(), DType compute = DType::f32);

}  // namespace diffuse::ops::ref
