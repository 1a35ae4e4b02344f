#include "src/nn/attention.h"

namespace diffuse::nn {

Attention::Attention(const WeightLoader& w, const AttentionConfig& config, DType compute)
    : config_(config), compute_(compute) {
  const int64_t inner = config.heads * config.dim_head;
  const int64_t kv_dim = config.cross_attention_dim.value_or(config.query_dim);
  if (config.norm_num_groups)
    group_norm_.emplace(w.scope("group_norm"), *config.norm_num_groups, config.query_dim,
                        config.eps);
  to_q_ = Linear(w.scope("to_q"), config.query_dim, inner, config.bias, compute);
  to_k_ = Linear(w.scope("to_k"), kv_dim, inner, config.bias, compute);
  to_v_ = Linear(w.scope("to_v"), kv_dim, inner, config.bias, compute);
  to_out_ = Linear(w.scope("to_out").scope(0), inner, config.query_dim, config.out_bias, compute);
}

Tensor Attention::operator()(const Tensor& hidden_states, const Tensor& encoder_hidden_states,
                             const Tensor& mask) const {
  const Tensor& residual = hidden_states;
  Tensor hs = hidden_states;
  const bool spatial = hs.dim() == 4;
  int64_t channels = 0, height = 0, width = 0;
  if (spatial) {
    channels = hs.size(1);
    height = hs.size(2);
    width = hs.size(3);
  }
  // 1. Group norm on NCHW, then tokens [B, HW, C].
  if (group_norm_) {
    DIFFUSE_CHECK(spatial || hs.dim() == 3, "Attention: expected [B, N, C] or [B, C, H, W], got ",
                  shape_str(hs.shape()));
    if (!spatial) hs = hs.transpose(1, 2);
    hs = (*group_norm_)(hs);
    hs = spatial ? hs.flatten(2).transpose(1, 2) : hs.transpose(1, 2);
  } else if (spatial) {
    hs = hs.flatten(2).transpose(1, 2);
  }
  DIFFUSE_CHECK(hs.dim() == 3, "Attention: expected [B, N, C] hidden states, got ",
                shape_str(hs.shape()));
  const int64_t batch = hs.size(0);
  const Tensor& context = encoder_hidden_states.defined() ? encoder_hidden_states : hs;

  // 2. Projections, split into heads: [B, heads, N, dim_head].
  const auto heads = [&](const Tensor& t) {
    return t.view({batch, -1, config_.heads, config_.dim_head}).transpose(1, 2);
  };
  const Tensor q = heads(to_q_(hs));
  const Tensor k = heads(to_k_(context));
  const Tensor v = heads(to_v_(context));

  // 3. Scaled dot-product attention, heads merged back: [B, N, heads * dim_head].
  ops::AttentionOptions options;
  options.mask = mask;
  Tensor out = ops::attention(q, k, v, options, compute_);
  out = out.transpose(1, 2).reshape({batch, -1, config_.heads * config_.dim_head});

  // 4. Output projection, layout, residual, rescale.
  out = to_out_(out);
  if (spatial) out = out.transpose(1, 2).reshape({batch, channels, height, width});
  if (config_.residual_connection) out = ops::add(out, residual);
  if (config_.rescale_output_factor != 1.0) out = ops::div(out, config_.rescale_output_factor);
  return out;
}

}  // namespace diffuse::nn
