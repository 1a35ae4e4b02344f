#include "src/nn/layers.h"

namespace diffuse::nn {

Linear::Linear(const WeightLoader& w, int64_t in_features, int64_t out_features, bool has_bias,
               DType compute_dtype)
    : compute(compute_dtype) {
  weight = w.get("weight", {out_features, in_features});
  // Biases and norm parameters stay f32 whatever the weight dtype: they are tiny and the
  // activations they meet are f32.
  if (has_bias) bias = w.get("bias", {out_features}, DType::f32);
}

Conv2d::Conv2d(const WeightLoader& w, int64_t in_channels, int64_t out_channels, int64_t kernel,
               int64_t stride, int64_t padding, bool has_bias, DType compute_dtype)
    : compute(compute_dtype) {
  weight = w.get("weight", {out_channels, in_channels, kernel, kernel});
  if (has_bias) bias = w.get("bias", {out_channels}, DType::f32);
  params.stride = {stride, stride};
  params.padding = {padding, padding};
}

GroupNorm::GroupNorm(const WeightLoader& w, int64_t groups, int64_t channels, double epsilon)
    : num_groups(groups), eps(epsilon) {
  DIFFUSE_CHECK(groups > 0 && channels % groups == 0, "GroupNorm '", w.prefix(), "': ", channels,
                " channels are not divisible into ", groups, " groups");
  weight = w.get("weight", {channels}, DType::f32);
  bias = w.get("bias", {channels}, DType::f32);
}

LayerNorm::LayerNorm(const WeightLoader& w, int64_t dim, double epsilon, bool affine, bool has_bias)
    : eps(epsilon) {
  if (affine) {
    weight = w.get("weight", {dim}, DType::f32);
    if (has_bias) bias = w.get("bias", {dim}, DType::f32);
  }
}

}  // namespace diffuse::nn
