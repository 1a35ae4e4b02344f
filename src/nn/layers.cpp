#include "src/nn/layers.h"

#include <utility>

#include "diffuse/formats/tensor_source.h"

namespace diffuse::nn {
namespace {

// The weight of a Linear / Conv2d: a zero-copy view of the file when it holds the tensor in
// another float dtype than the model's weight dtype (an f32 or f16 checkpoint used in bf16), which
// LinalgWeight converts only when it makes its compute copy; this way no converted plain copy of
// the model is ever held next to the file's pages. Sources that do not map their tensors (and
// random ones) hand out the weight dtype directly.
ops::LinalgWeight linalg_weight(const WeightLoader& w, const Shape& shape) {
  DType stored = w.dtype();
  if (const TensorInfo* info = w.source().find(w.full_name("weight"))) {
    if (info->dtype == DType::f32 || info->dtype == DType::f16 || info->dtype == DType::bf16) {
      stored = info->dtype;
    }
  }
  Tensor t = w.get("weight", shape, stored);
  if (t.dtype() != w.dtype() && t.storage()->kind() != Storage::Kind::mapped_file) {
    t = t.to(w.dtype());  // a copy anyway: hold it in the weight dtype
  }
  return ops::LinalgWeight(std::move(t), w.dtype());
}

}  // namespace

Linear::Linear(const WeightLoader& w, int64_t in_features, int64_t out_features, bool has_bias,
               DType compute_dtype)
    : compute(compute_dtype) {
  weight = linalg_weight(w, {out_features, in_features});
  // Biases and norm parameters stay f32 whatever the weight dtype: they are tiny and the
  // activations they meet are f32.
  if (has_bias) bias = w.get("bias", {out_features}, DType::f32);
}

Conv2d::Conv2d(const WeightLoader& w, int64_t in_channels, int64_t out_channels, int64_t kernel,
               int64_t stride, int64_t padding, bool has_bias, DType compute_dtype)
    : compute(compute_dtype) {
  weight = linalg_weight(w, {out_channels, in_channels, kernel, kernel});
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
