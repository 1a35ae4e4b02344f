// Sinusoidal timestep embeddings.
#pragma once

#include "diffuse/core/tensor.h"

namespace diffuse::ops {

// diffusers `get_timestep_embedding` (models/embeddings.py), with its float32 operations in its
// order: half = dim / 2, freq[i] = exp(-ln(max_period) * i / (half - downscale_freq_shift)),
// arg = scale * t * freq, emb = [sin(arg), cos(arg)] ([cos, sin] when flip_sin_to_cos), and a
// zero column appended when dim is odd. timesteps: [N] of f32, f16, bf16, f64, i32 or i64 (read
// as float32). Result: [N, dim] f32. Requires dim >= 1 and
// half != downscale_freq_shift.
Tensor timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos = false,
                          double downscale_freq_shift = 1.0, double scale = 1.0,
                          int64_t max_period = 10000);

}  // namespace diffuse::ops
