// diffusers models/resnet.py: ResnetBlock2D, Downsample2D, Upsample2D (the forms the UNet and
// the VAE use).
#pragma once

#include <optional>

#include "src/nn/layers.h"

namespace diffuse::nn {

struct ResnetBlock2DConfig {
  int64_t in_channels = 0;
  std::optional<int64_t> out_channels;   // default: in_channels
  std::optional<int64_t> temb_channels;  // nullopt: no time embedding (VAE)
  int64_t groups = 32;
  std::optional<int64_t> groups_out;  // default: groups
  double eps = 1e-6;
  std::string time_embedding_norm = "default";  // "default" or "scale_shift"
  ops::Activation non_linearity = ops::Activation::silu;
  double output_scale_factor = 1.0;
  bool skip_time_act = false;
  std::optional<bool> use_in_shortcut;  // default: in_channels != out_channels
  bool conv_shortcut_bias = true;
};

class ResnetBlock2D {
 public:
  ResnetBlock2D() = default;
  ResnetBlock2D(const WeightLoader& w, const ResnetBlock2DConfig& config, DType compute);
  // x [B, C, H, W]; temb [B, temb_channels] or undefined.
  Tensor operator()(const Tensor& x, const Tensor& temb = {}) const;

 private:
  ResnetBlock2DConfig config_;
  GroupNorm norm1_, norm2_;
  Conv2d conv1_, conv2_;
  std::optional<Linear> time_emb_proj_;
  std::optional<Conv2d> conv_shortcut_;
};

// Downsample2D with use_conv=True: a 3x3 stride-2 convolution "conv"; with padding 0 the input
// is first padded by (0, 1, 0, 1) as diffusers does.
class Downsample2D {
 public:
  Downsample2D() = default;
  Downsample2D(const WeightLoader& w, int64_t channels, int64_t out_channels, int64_t padding,
               DType compute);
  Tensor operator()(const Tensor& x) const;

 private:
  Conv2d conv_;
  int64_t padding_ = 1;
};

// Upsample2D with use_conv=True: nearest x2 (or to `output_size`), then a 3x3 convolution.
class Upsample2D {
 public:
  Upsample2D() = default;
  Upsample2D(const WeightLoader& w, int64_t channels, int64_t out_channels, DType compute);
  Tensor operator()(const Tensor& x, const Shape& output_size = {}) const;

 private:
  Conv2d conv_;
};

}  // namespace diffuse::nn
