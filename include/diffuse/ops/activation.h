// Activation functions (PyTorch semantics; same dtype/view/broadcast contract as elementwise.h:
// f32, f16, bf16, f64; half types computed in f32; any view in, contiguous out).
#pragma once

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"

namespace diffuse::ops {

// x * sigmoid(x) (torch.nn.functional.silu).
Tensor silu(const Tensor& x);
// Exact GELU 0.5 x (1 + erf(x / sqrt 2)), or with `tanh_approximation` PyTorch's
// approximate="tanh" form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
// x * sigmoid(1.702 x) (OpenAI CLIP's QuickGELU).
Tensor quick_gelu(const Tensor& x);
// diffusers GEGLU after its projection: splits the last dim (even size 2k) into halves
// a = x[..., :k] and g = x[..., k:] and returns a * gelu(g) (exact GELU), shape [..., k].
// Throws diffuse::Error when the last dim is odd.
Tensor geglu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
// Applies `kind` (Activation::none returns a contiguous copy of x).
Tensor activation(const Tensor& x, Activation kind);

}  // namespace diffuse::ops
