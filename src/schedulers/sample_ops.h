// Sample-level helpers shared by several scheduler ports (private to src/schedulers): the
// alphas_cumprod forward process (diffusers' DDPMScheduler.add_noise, which PNDM, LCM and TCD
// copy), integer timestep checks, and noise drawn in the dtype diffusers asks randn_tensor for.
//
// Elementwise math follows scheduling_utils.h: every torch op is computed in double and rounded
// to the dtype torch gives its result (round_to), so float32 upcasts and float64 samples behave
// exactly as in diffusers. Pure functions: thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/schedulers/scheduler.h"

namespace diffuse::schedulers {

// A Python float scalar as torch applies it to a tensor of `dtype`: cast to the op's compute
// type (double for f64 tensors, float otherwise). E.g. `(1 / 6) * x` on a float32 tensor
// multiplies by float(1/6).
inline double scalar_in(DType dtype, double c) {
  return dtype == DType::f64 ? c : static_cast<double>(static_cast<float>(c));
}

// The integer training timestep that `timestep` names (diffusers indexes alphas_cumprod with
// it). Throws an Error naming `owner` unless it is an integer in [0, num_train_timesteps).
int64_t train_timestep_index(double timestep, int64_t num_train_timesteps, const char* owner);

// diffusers' DDPMScheduler.add_noise: alphas_cumprod cast to the sample dtype, then
// sqrt(a[t]) * original + sqrt(1 - a[t]) * noise with one timestep for the whole batch or one
// per batch item. `original` and `noise` must have the same shape.
Tensor add_noise_alphas_cumprod(const std::vector<float>& alphas_cumprod, const Tensor& original,
                                const Tensor& noise, const std::vector<double>& timesteps,
                                const char* owner);

// Noise of `shape` in `dtype` from args.noise (diffusers' randn_tensor(shape, dtype=dtype)); a
// source returning another floating dtype is cast, as the reference monkeypatch does.
Tensor noise_like(const StepArgs& args, const Shape& shape, DType dtype, const char* owner);

}  // namespace diffuse::schedulers
