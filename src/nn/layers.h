// Basic layers every model uses identically: Linear, Conv2d, GroupNorm, LayerNorm. Each holds
// its weights (loaded and shape-checked through a WeightLoader scope with torch.nn's names)
// and the compute dtype of its matrix products. Linear and Conv2d hold their weight as an
// ops::LinalgWeight: after the first call, the backend's copy in its compute layout is in
// general the only copy in memory (weight.tensor() gives the plain values back).
#pragma once

#include <cstdint>

#include "diffuse/formats/weight_loader.h"
#include "diffuse/ops.h"
#include "src/ops/linalg_weight.h"

namespace diffuse::nn {

// torch.nn.Linear: y = x W^T + b. Weights "weight" [out, in], "bias" [out].
struct Linear {
  ops::LinalgWeight weight;
  Tensor bias;
  DType compute = DType::f32;

  Linear() = default;
  Linear(const WeightLoader& w, int64_t in_features, int64_t out_features, bool has_bias,
         DType compute_dtype);
  Tensor operator()(const Tensor& x, ops::Activation post = ops::Activation::none) const {
    return ops::linear(x, weight, bias, compute, post);
  }
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
};

// torch.nn.Conv2d with square kernels. Weights "weight" [out, in / groups, k, k], "bias" [out].
struct Conv2d {
  ops::LinalgWeight weight;
  Tensor bias;
  ops::Conv2dParams params;
  DType compute = DType::f32;

  Conv2d() = default;
  Conv2d(const WeightLoader& w, int64_t in_channels, int64_t out_channels, int64_t kernel,
         int64_t stride, int64_t padding, bool has_bias, DType compute_dtype);
  Tensor operator()(const Tensor& x, ops::Activation post = ops::Activation::none) const {
    ops::Conv2dParams p = params;
    p.post = post;
    return ops::conv2d(x, weight, bias, p, compute);
  }
};

// torch.nn.GroupNorm (affine). Weights "weight" [C], "bias" [C].
struct GroupNorm {
  Tensor weight;
  Tensor bias;
  int64_t num_groups = 32;
  double eps = 1e-5;

  GroupNorm() = default;
  GroupNorm(const WeightLoader& w, int64_t groups, int64_t channels, double epsilon);
  // `post` fuses an activation (SiLU in resnets) into the normalization.
  Tensor operator()(const Tensor& x, ops::Activation post = ops::Activation::none) const {
    return ops::group_norm(x, num_groups, weight, bias, eps, post);
  }
};

// conv(norm(x, act)): the same values, without materializing the normalized tensor where the
// backend can fuse the two (large convolutions, e.g. the VAE decoder's).
inline Tensor group_norm_conv(const GroupNorm& norm, const Tensor& x, ops::Activation act,
                              const Conv2d& conv) {
  return ops::group_norm_conv2d(x, norm.num_groups, norm.weight, norm.bias, norm.eps, act,
                                conv.weight, conv.bias, conv.params, conv.compute);
}

// torch.nn.LayerNorm over the last dimension, with or without affine parameters.
struct LayerNorm {
  Tensor weight;
  Tensor bias;
  double eps = 1e-5;

  LayerNorm() = default;
  LayerNorm(const WeightLoader& w, int64_t dim, double epsilon, bool affine = true,
            bool has_bias = true);
  Tensor operator()(const Tensor& x) const { return ops::layer_norm(x, 1, weight, bias, eps); }
};

}  // namespace diffuse::nn
