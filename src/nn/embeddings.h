// Timestep embeddings (diffusers models/embeddings.py): Timesteps (sinusoidal projection) and
// TimestepEmbedding (linear_1 -> act -> linear_2).
#pragma once

#include <optional>

#include "src/nn/layers.h"

namespace diffuse::nn {

// diffusers Timesteps: the sinusoidal projection of a [N] timestep tensor to [N, num_channels].
struct Timesteps {
  int64_t num_channels = 0;
  bool flip_sin_to_cos = true;
  double downscale_freq_shift = 0.0;
  double scale = 1.0;

  Tensor operator()(const Tensor& timesteps) const {
    return ops::timestep_embedding(timesteps, num_channels, flip_sin_to_cos, downscale_freq_shift,
                                   scale);
  }
};

// diffusers TimestepEmbedding: linear_1 (+ cond_proj(condition)) -> act -> linear_2 (-> post_act).
class TimestepEmbedding {
 public:
  TimestepEmbedding() = default;
  TimestepEmbedding(const WeightLoader& w, int64_t in_channels, int64_t time_embed_dim,
                    ops::Activation act, std::optional<int64_t> out_dim,
                    std::optional<ops::Activation> post_act, std::optional<int64_t> cond_proj_dim,
                    DType compute);
  Tensor operator()(const Tensor& sample, const Tensor& condition = {}) const;

 private:
  Linear linear_1_, linear_2_;
  std::optional<Linear> cond_proj_;
  ops::Activation act_ = ops::Activation::silu;
  std::optional<ops::Activation> post_act_;
};

// Maps diffusers' activation names ("silu", "swish", "gelu", "gelu_tanh"/"gelu-approximate",
// "quick_gelu", "relu") to ops::Activation; throws diffuse::Error naming `what` otherwise.
ops::Activation parse_activation(const std::string& name, const std::string& what);

}  // namespace diffuse::nn
