// diffusers models/attention.py (BasicTransformerBlock, FeedForward with GEGLU/GELU) and
// models/transformers/transformer_2d.py (Transformer2DModel, continuous input): the spatial
// transformer of the SD UNets and ControlNets.
#pragma once

#include <vector>

#include "src/nn/attention.h"

namespace diffuse::nn {

// diffusers FeedForward: net.0 = GEGLU/GELU projection (dim -> inner), net.2 = Linear(inner ->
// dim). activation_fn: "geglu" (default), "gelu", "gelu-approximate".
class FeedForward {
 public:
  FeedForward() = default;
  FeedForward(const WeightLoader& w, int64_t dim, int64_t mult, const std::string& activation_fn,
              DType compute);
  Tensor operator()(const Tensor& x) const;

 private:
  Linear proj_, out_;
  std::string activation_fn_ = "geglu";
};

struct TransformerBlockConfig {
  int64_t dim = 0;
  int64_t num_attention_heads = 8;
  int64_t attention_head_dim = 64;
  std::optional<int64_t> cross_attention_dim;
  std::string activation_fn = "geglu";
  bool attention_bias = false;
  bool only_cross_attention = false;
  bool double_self_attention = false;
  double norm_eps = 1e-5;
};

// BasicTransformerBlock with norm_type "layer_norm": self-attention, cross-attention,
// feed-forward, each pre-normed and residual.
class BasicTransformerBlock {
 public:
  BasicTransformerBlock() = default;
  BasicTransformerBlock(const WeightLoader& w, const TransformerBlockConfig& config, DType compute);
  Tensor operator()(const Tensor& x, const Tensor& encoder_hidden_states,
                    const Tensor& encoder_attention_mask = {}) const;

 private:
  TransformerBlockConfig config_;
  LayerNorm norm1_, norm2_, norm3_;
  Attention attn1_;
  std::optional<Attention> attn2_;
  FeedForward ff_;
};

struct Transformer2DConfig {
  int64_t num_attention_heads = 16;
  int64_t attention_head_dim = 88;
  int64_t in_channels = 0;
  int64_t num_layers = 1;
  std::optional<int64_t> cross_attention_dim;
  int64_t norm_num_groups = 32;
  bool use_linear_projection = false;
  bool only_cross_attention = false;
  bool double_self_attention = false;
  bool attention_bias = false;
  std::string activation_fn = "geglu";
};

// Transformer2DModel on continuous NCHW input: GroupNorm(eps 1e-6) -> proj_in (1x1 conv or
// linear) -> blocks on [B, HW, inner] tokens -> proj_out -> + residual.
class Transformer2DModel {
 public:
  Transformer2DModel() = default;
  Transformer2DModel(const WeightLoader& w, const Transformer2DConfig& config, DType compute);
  Tensor operator()(const Tensor& x, const Tensor& encoder_hidden_states,
                    const Tensor& encoder_attention_mask = {}) const;

 private:
  Transformer2DConfig config_;
  GroupNorm norm_;
  Conv2d proj_in_conv_, proj_out_conv_;
  Linear proj_in_linear_, proj_out_linear_;
  std::vector<BasicTransformerBlock> blocks_;
};

}  // namespace diffuse::nn
