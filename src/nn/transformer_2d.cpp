#include "src/nn/transformer_2d.h"

namespace diffuse::nn {

FeedForward::FeedForward(const WeightLoader& w, int64_t dim, int64_t mult,
                         const std::string& activation_fn, DType compute)
    : activation_fn_(activation_fn) {
  const int64_t inner = dim * mult;
  DIFFUSE_CHECK(
      activation_fn == "geglu" || activation_fn == "gelu" || activation_fn == "gelu-approximate",
      "FeedForward '", w.prefix(), "': unsupported activation_fn '", activation_fn,
      "' (expected geglu, gelu or gelu-approximate)");
  const int64_t proj_out = activation_fn == "geglu" ? 2 * inner : inner;
  proj_ = Linear(w.scope("net").scope(0).scope("proj"), dim, proj_out, true, compute);
  out_ = Linear(w.scope("net").scope(2), inner, dim, true, compute);
}

Tensor FeedForward::operator()(const Tensor& x) const {
  Tensor h;
  if (activation_fn_ == "geglu") {
    h = ops::geglu(proj_(x));
  } else {
    h = proj_(x, activation_fn_ == "gelu" ? ops::Activation::gelu : ops::Activation::gelu_tanh);
  }
  return out_(h);
}

BasicTransformerBlock::BasicTransformerBlock(const WeightLoader& w,
                                             const TransformerBlockConfig& config, DType compute)
    : config_(config) {
  norm1_ = LayerNorm(w.scope("norm1"), config.dim, config.norm_eps);
  AttentionConfig a1;
  a1.query_dim = config.dim;
  a1.heads = config.num_attention_heads;
  a1.dim_head = config.attention_head_dim;
  a1.bias = config.attention_bias;
  if (config.only_cross_attention) a1.cross_attention_dim = config.cross_attention_dim;
  attn1_ = Attention(w.scope("attn1"), a1, compute);
  if (config.cross_attention_dim || config.double_self_attention) {
    norm2_ = LayerNorm(w.scope("norm2"), config.dim, config.norm_eps);
    AttentionConfig a2 = a1;
    a2.cross_attention_dim =
        config.double_self_attention ? std::nullopt : config.cross_attention_dim;
    attn2_.emplace(w.scope("attn2"), a2, compute);
  }
  norm3_ = LayerNorm(w.scope("norm3"), config.dim, config.norm_eps);
  ff_ = FeedForward(w.scope("ff"), config.dim, 4, config.activation_fn, compute);
}

Tensor BasicTransformerBlock::operator()(const Tensor& x, const Tensor& encoder_hidden_states,
                                         const Tensor& encoder_attention_mask) const {
  // 1. Self-attention (cross-attention when only_cross_attention).
  Tensor h = ops::add(
      attn1_(norm1_(x), config_.only_cross_attention ? encoder_hidden_states : Tensor()), x);
  // 2. Cross-attention.
  if (attn2_) {
    const Tensor context = config_.double_self_attention ? Tensor() : encoder_hidden_states;
    h = ops::add((*attn2_)(norm2_(h), context, encoder_attention_mask), h);
  }
  // 3. Feed-forward.
  return ops::add(ff_(norm3_(h)), h);
}

Transformer2DModel::Transformer2DModel(const WeightLoader& w, const Transformer2DConfig& config,
                                       DType compute)
    : config_(config) {
  const int64_t inner = config.num_attention_heads * config.attention_head_dim;
  norm_ = GroupNorm(w.scope("norm"), config.norm_num_groups, config.in_channels, 1e-6);
  if (config.use_linear_projection) {
    proj_in_linear_ = Linear(w.scope("proj_in"), config.in_channels, inner, true, compute);
  } else {
    proj_in_conv_ = Conv2d(w.scope("proj_in"), config.in_channels, inner, 1, 1, 0, true, compute);
  }
  TransformerBlockConfig b;
  b.dim = inner;
  b.num_attention_heads = config.num_attention_heads;
  b.attention_head_dim = config.attention_head_dim;
  b.cross_attention_dim = config.cross_attention_dim;
  b.activation_fn = config.activation_fn;
  b.attention_bias = config.attention_bias;
  b.only_cross_attention = config.only_cross_attention;
  b.double_self_attention = config.double_self_attention;
  for (int64_t i = 0; i < config.num_layers; ++i)
    blocks_.emplace_back(w.scope("transformer_blocks").scope(i), b, compute);
  if (config.use_linear_projection) {
    proj_out_linear_ = Linear(w.scope("proj_out"), inner, config.in_channels, true, compute);
  } else {
    proj_out_conv_ = Conv2d(w.scope("proj_out"), inner, config.in_channels, 1, 1, 0, true, compute);
  }
}

Tensor Transformer2DModel::operator()(const Tensor& x, const Tensor& encoder_hidden_states,
                                      const Tensor& encoder_attention_mask) const {
  const int64_t batch = x.size(0), height = x.size(2), width = x.size(3);
  const int64_t inner = config_.num_attention_heads * config_.attention_head_dim;
  // 1. Input: norm, projection, NCHW -> tokens [B, HW, C].
  Tensor h = norm_(x);
  if (config_.use_linear_projection) {
    h = proj_in_linear_(h.permute({0, 2, 3, 1}).reshape({batch, height * width, -1}));
  } else {
    h = proj_in_conv_(h).permute({0, 2, 3, 1}).reshape({batch, height * width, inner});
  }
  // 2. Blocks.
  for (const auto& block : blocks_) h = block(h, encoder_hidden_states, encoder_attention_mask);
  // 3. Output: projection, tokens -> NCHW, residual.
  if (config_.use_linear_projection) {
    h = proj_out_linear_(h).reshape({batch, height, width, -1}).permute({0, 3, 1, 2});
  } else {
    h = proj_out_conv_(h.reshape({batch, height, width, inner}).permute({0, 3, 1, 2}).contiguous());
  }
  return ops::add(h, x);
}

}  // namespace diffuse::nn
