// diffusers' Attention (models/attention_processor.py) with AttnProcessor2_0: the attention
// layer of the UNet transformer blocks (self and cross attention) and of the VAE mid block
// (group-normed, residual, on NCHW input).
#pragma once

#include <optional>

#include "src/nn/layers.h"

namespace diffuse::nn {

struct AttentionConfig {
  int64_t query_dim = 0;
  std::optional<int64_t> cross_attention_dim;  // nullopt: self-attention
  int64_t heads = 8;
  int64_t dim_head = 64;
  bool bias = false;                       // to_q/to_k/to_v bias
  bool out_bias = true;                    // to_out.0 bias
  std::optional<int64_t> norm_num_groups;  // group_norm before the projections (VAE)
  double eps = 1e-5;                       // of that group norm
  bool residual_connection = false;
  double rescale_output_factor = 1.0;
};

class Attention {
 public:
  Attention() = default;
  Attention(const WeightLoader& w, const AttentionConfig& config, DType compute);

  // hidden_states [B, N, query_dim] (or [B, C, H, W], returned in the same layout);
  // encoder_hidden_states [B, M, cross_attention_dim] for cross-attention (undefined: self).
  // mask: as ops::attention (bool keep-mask or additive float, broadcastable to
  // [B, heads, N, M]).
  Tensor operator()(const Tensor& hidden_states, const Tensor& encoder_hidden_states = {},
                    const Tensor& mask = {}) const;

 private:
  AttentionConfig config_;
  DType compute_ = DType::f32;
  std::optional<GroupNorm> group_norm_;
  Linear to_q_, to_k_, to_v_, to_out_;
};

}  // namespace diffuse::nn
