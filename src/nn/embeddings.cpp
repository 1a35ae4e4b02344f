#include "src/nn/embeddings.h"

namespace diffuse::nn {

ops::Activation parse_activation(const std::string& name, const std::string& what) {
  if (name == "silu" || name == "swish") return ops::Activation::silu;
  if (name == "gelu") return ops::Activation::gelu;
  if (name == "gelu_tanh" || name == "gelu-approximate" || name == "gelu_pytorch_tanh" ||
      name == "gelu_new")
    return ops::Activation::gelu_tanh;
  if (name == "quick_gelu") return ops::Activation::quick_gelu;
  if (name == "relu") return ops::Activation::relu;
  DIFFUSE_FAIL(what, ": unsupported activation '", name,
               "' (expected silu, swish, gelu, gelu_tanh, quick_gelu or relu)");
}

TimestepEmbedding::TimestepEmbedding(const WeightLoader& w, int64_t in_channels,
                                     int64_t time_embed_dim, ops::Activation act,
                                     std::optional<int64_t> out_dim,
                                     std::optional<ops::Activation> post_act,
                                     std::optional<int64_t> cond_proj_dim, DType compute)
    : act_(act), post_act_(post_act) {
  linear_1_ = Linear(w.scope("linear_1"), in_channels, time_embed_dim, true, compute);
  if (cond_proj_dim)
    cond_proj_.emplace(w.scope("cond_proj"), *cond_proj_dim, in_channels, false, compute);
  linear_2_ =
      Linear(w.scope("linear_2"), time_embed_dim, out_dim.value_or(time_embed_dim), true, compute);
}

Tensor TimestepEmbedding::operator()(const Tensor& sample, const Tensor& condition) const {
  Tensor x = sample;
  if (condition.defined()) {
    DIFFUSE_CHECK(cond_proj_.has_value(),
                  "TimestepEmbedding: a timestep condition was given but the model has no "
                  "time_cond_proj_dim");
    x = ops::add(x, (*cond_proj_)(condition));
  }
  x = linear_1_(x, act_);
  x = linear_2_(x);
  if (post_act_) x = ops::activation(x, *post_act_);
  return x;
}

}  // namespace diffuse::nn
