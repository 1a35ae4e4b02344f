#include "src/nn/resnet.h"

#include <utility>

#include "src/ops/inplace.h"

namespace diffuse::nn {

ResnetBlock2D::ResnetBlock2D(const WeightLoader& w, const ResnetBlock2DConfig& config,
                             DType compute)
    : config_(config) {
  const int64_t in = config.in_channels;
  const int64_t out = config.out_channels.value_or(in);
  config_.out_channels = out;
  DIFFUSE_CHECK(
      config.time_embedding_norm == "default" || config.time_embedding_norm == "scale_shift",
      "ResnetBlock2D '", w.prefix(), "': unsupported time_embedding_norm '",
      config.time_embedding_norm, "' (expected default or scale_shift)");
  norm1_ = GroupNorm(w.scope("norm1"), config.groups, in, config.eps);
  conv1_ = Conv2d(w.scope("conv1"), in, out, 3, 1, 1, true, compute);
  if (config.temb_channels) {
    const int64_t proj_out = config.time_embedding_norm == "scale_shift" ? 2 * out : out;
    time_emb_proj_.emplace(w.scope("time_emb_proj"), *config.temb_channels, proj_out, true,
                           compute);
  }
  norm2_ = GroupNorm(w.scope("norm2"), config.groups_out.value_or(config.groups), out, config.eps);
  conv2_ = Conv2d(w.scope("conv2"), out, out, 3, 1, 1, true, compute);
  if (config.use_in_shortcut.value_or(in != out))
    conv_shortcut_.emplace(w.scope("conv_shortcut"), in, out, 1, 1, 0, config.conv_shortcut_bias,
                           compute);
}

Tensor ResnetBlock2D::operator()(const Tensor& x, const Tensor& temb) const {
  const ops::Activation act = config_.non_linearity;
  Tensor h = group_norm_conv(norm1_, x, act, conv1_);

  Tensor t;
  if (time_emb_proj_) {
    DIFFUSE_CHECK(temb.defined(), "ResnetBlock2D: the block needs a time embedding");
    t = config_.skip_time_act ? temb : ops::activation(temb, act);
    t = (*time_emb_proj_)(t).unsqueeze(-1).unsqueeze(-1);  // [B, C, 1, 1]
  }
  if (t.defined() && config_.time_embedding_norm == "default") {
    h = group_norm_conv(norm2_, ops::add(h, t), act, conv2_);
  } else if (t.defined()) {  // scale_shift: norm, then h * (1 + scale) + shift, then act
    const auto parts = t.chunk(2, 1);
    h = norm2_(h);
    h = ops::add(ops::mul(h, ops::add(parts[0], 1.0)), parts[1]);
    h = conv2_(ops::activation(h, act));
  } else {
    h = group_norm_conv(norm2_, h, act, conv2_);
  }

  // shortcut + h, written over whichever of the two is a temporary (x belongs to the caller).
  Tensor out =
      conv_shortcut_ ? ops::add_into((*conv_shortcut_)(x), h) : ops::add_into(std::move(h), x);
  if (config_.output_scale_factor != 1.0) out = ops::div(out, config_.output_scale_factor);
  return out;
}

Downsample2D::Downsample2D(const WeightLoader& w, int64_t channels, int64_t out_channels,
                           int64_t padding, DType compute)
    : conv_(w.scope("conv"), channels, out_channels, 3, 2, padding, true, compute),
      padding_(padding) {}

Tensor Downsample2D::operator()(const Tensor& x) const {
  if (padding_ == 0) return conv_(ops::pad(x, {0, 1, 0, 1}, ops::PadMode::constant, 0.0));
  return conv_(x);
}

Upsample2D::Upsample2D(const WeightLoader& w, int64_t channels, int64_t out_channels, DType compute)
    : conv_(w.scope("conv"), channels, out_channels, 3, 1, 1, true, compute) {}

Tensor Upsample2D::operator()(const Tensor& x, const Shape& output_size) const {
  if (output_size.empty()) {
    // Nearest 2x fused into the convolution's input conversion: same values, no upsampled copy.
    return ops::upsample_nearest2x_conv2d(x, conv_.weight, conv_.bias, conv_.params, conv_.compute);
  }
  return conv_(ops::upsample_nearest(x, output_size));
}

}  // namespace diffuse::nn
