// Flash-attention style scaled dot-product attention for the CPU backend (AVX-512 / AVX512_BF16
// micro-kernels, portable C++ fallback). The ops layer (src/ops/attention.cpp) checks arguments.
#pragma once

#include <cstddef>

#include "diffuse/core/tensor.h"

namespace diffuse::cpu {

// q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] (f32/f16/bf16, any strides); `mask` is
// undefined or a view already expanded to [B, H, Lq, Lk] (stride 0 on broadcast dims), bool
// (true = attend) or f32/f16/bf16/f64 (additive). Returns a new [B, H, Lq, Dv] f32 tensor.
// `generic` forces the portable kernels (tests compare both paths).
Tensor attention_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                     double scale, bool is_causal, DType compute, bool generic = false);

// The largest workspace (packed K/V plus per-thread block buffers, in bytes) one attention call
// has allocated since the last reset; the output tensor is not counted. Thread-safe.
std::size_t attention_peak_workspace_bytes();
void attention_reset_peak_workspace();

}  // namespace diffuse::cpu
