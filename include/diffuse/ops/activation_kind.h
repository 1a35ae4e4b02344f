// The activations that ops can apply (standalone or fused as a post-op of conv2d / linear /
// group_norm).
#pragma once

namespace diffuse::ops {

enum class Activation {
  none,
  silu,        // x * sigmoid(x)
  gelu,        // exact: 0.5 x (1 + erf(x / sqrt 2))
  gelu_tanh,   // tanh approximation (PyTorch approximate="tanh")
  quick_gelu,  // x * sigmoid(1.702 x) (OpenAI CLIP)
  relu,
};

}  // namespace diffuse::ops
