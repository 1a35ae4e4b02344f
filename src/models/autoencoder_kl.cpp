// diffusers models/autoencoders/autoencoder_kl.py, with the Encoder / Decoder of
// models/autoencoders/vae.py and the blocks of unet_2d_blocks.py they use.
#include "diffuse/models/autoencoder_kl.h"

#include <algorithm>

#include "diffuse/formats/tensor_source.h"
#include "src/nn/attention.h"
#include "src/nn/embeddings.h"
#include "src/nn/resnet.h"
#include "src/ops/memory.h"

namespace diffuse {

namespace {
constexpr const char* kOwner = "AutoencoderKL";
// Encoder/Decoder resnets and norms use eps 1e-6 (vae.py), whatever the config says.
constexpr double kEps = 1e-6;
}  // namespace

AutoencoderKLConfig AutoencoderKLConfig::from_json(const nlohmann::json& json) {
  AutoencoderKLConfig c;
  ConfigReader r(json, kOwner);
  r.get("in_channels", c.in_channels);
  r.get("out_channels", c.out_channels);
  r.get("down_block_types", c.down_block_types);
  r.get("up_block_types", c.up_block_types);
  r.get("block_out_channels", c.block_out_channels);
  r.get("layers_per_block", c.layers_per_block);
  r.get("act_fn", c.act_fn);
  r.get("latent_channels", c.latent_channels);
  r.get("norm_num_groups", c.norm_num_groups);
  r.get("sample_size", c.sample_size);
  r.get("scaling_factor", c.scaling_factor);
  r.get("shift_factor", c.shift_factor);
  r.get("latents_mean", c.latents_mean);
  r.get("latents_std", c.latents_std);
  r.get("force_upcast", c.force_upcast);
  r.get("use_quant_conv", c.use_quant_conv);
  r.get("use_post_quant_conv", c.use_post_quant_conv);
  r.get("mid_block_add_attention", c.mid_block_add_attention);
  r.finish();
  c.validate();
  return c;
}

void AutoencoderKLConfig::validate() const {
  DIFFUSE_CHECK(!block_out_channels.empty(), kOwner, ": block_out_channels is empty");
  DIFFUSE_CHECK(down_block_types.size() == block_out_channels.size() &&
                    up_block_types.size() == block_out_channels.size(),
                kOwner,
                ": down_block_types, up_block_types and block_out_channels must have the "
                "same length (",
                down_block_types.size(), ", ", up_block_types.size(), ", ",
                block_out_channels.size(), ")");
  for (const auto& t : down_block_types)
    DIFFUSE_CHECK(t == "DownEncoderBlock2D", kOwner, ": unsupported down block type '", t,
                  "' (supported: DownEncoderBlock2D)");
  for (const auto& t : up_block_types)
    DIFFUSE_CHECK(t == "UpDecoderBlock2D", kOwner, ": unsupported up block type '", t,
                  "' (supported: UpDecoderBlock2D)");
  DIFFUSE_CHECK(layers_per_block > 0 && latent_channels > 0 && norm_num_groups > 0, kOwner,
                ": layers_per_block, latent_channels and norm_num_groups must be positive");
}

// --- Blocks -------------------------------------------------------------------------------------

namespace {

nn::ResnetBlock2D vae_resnet(const WeightLoader& w, int64_t in, int64_t out, int64_t groups,
                             ops::Activation act, DType compute) {
  nn::ResnetBlock2DConfig rc;
  rc.in_channels = in;
  rc.out_channels = out;
  rc.groups = groups;
  rc.eps = kEps;
  rc.non_linearity = act;
  return nn::ResnetBlock2D(w, rc, compute);
}

// UNetMidBlock2D without time embedding: resnet, [attention (one head over all channels,
// group-normed, residual), resnet].
struct MidBlock {
  std::vector<nn::ResnetBlock2D> resnets;
  std::optional<nn::Attention> attention;

  MidBlock(const WeightLoader& w, int64_t channels, int64_t groups, ops::Activation act,
           bool add_attention, DType compute) {
    resnets.push_back(
        vae_resnet(w.scope("resnets").scope(0), channels, channels, groups, act, compute));
    if (add_attention) {
      nn::AttentionConfig ac;
      ac.query_dim = channels;
      ac.heads = 1;
      ac.dim_head = channels;
      ac.bias = true;
      ac.norm_num_groups = groups;
      ac.eps = kEps;
      ac.residual_connection = true;
      attention.emplace(w.scope("attentions").scope(0), ac, compute);
    }
    resnets.push_back(
        vae_resnet(w.scope("resnets").scope(1), channels, channels, groups, act, compute));
  }

  Tensor operator()(Tensor h) const {
    h = resnets[0](h);
    if (attention) h = (*attention)(h);
    return resnets[1](h);
  }
};

}  // namespace

struct AutoencoderKL::Impl {
  AutoencoderKLConfig config;
  ops::Activation act = ops::Activation::silu;

  // Encoder.
  nn::Conv2d enc_conv_in;
  std::vector<std::vector<nn::ResnetBlock2D>> enc_resnets;
  std::vector<std::optional<nn::Downsample2D>> enc_down;
  std::optional<MidBlock> enc_mid;
  nn::GroupNorm enc_norm_out;
  nn::Conv2d enc_conv_out;
  std::optional<nn::Conv2d> quant_conv;

  // Decoder.
  std::optional<nn::Conv2d> post_quant_conv;
  nn::Conv2d dec_conv_in;
  std::optional<MidBlock> dec_mid;
  std::vector<std::vector<nn::ResnetBlock2D>> dec_resnets;
  std::vector<std::optional<nn::Upsample2D>> dec_up;
  nn::GroupNorm dec_norm_out;
  nn::Conv2d dec_conv_out;

  Tensor encoder(const Tensor& x) const {
    Tensor h = enc_conv_in(x);
    for (std::size_t i = 0; i < enc_resnets.size(); ++i) {
      for (const auto& r : enc_resnets[i]) h = r(h);
      if (enc_down[i]) h = (*enc_down[i])(h);
    }
    h = (*enc_mid)(h);
    h = enc_norm_out(h, act);
    return enc_conv_out(h);
  }

  Tensor decoder(const Tensor& z) const {
    Tensor h = dec_conv_in(z);
    h = (*dec_mid)(h);
    for (std::size_t i = 0; i < dec_resnets.size(); ++i) {
      for (const auto& r : dec_resnets[i]) h = r(h);
      if (dec_up[i]) h = (*dec_up[i])(h);
    }
    h = dec_norm_out(h, act);
    return dec_conv_out(h);
  }
};

AutoencoderKL::AutoencoderKL(const AutoencoderKLConfig& config, const WeightLoader& weights,
                             DType compute)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  Impl& m = *impl_;
  m.config = config;
  m.act = nn::parse_activation(config.act_fn, "AutoencoderKL act_fn");
  const auto& boc = config.block_out_channels;
  const std::size_t n = boc.size();
  const int64_t groups = config.norm_num_groups;

  // Encoder (double_z: mean and logvar).
  const WeightLoader e = weights.scope("encoder");
  m.enc_conv_in =
      nn::Conv2d(e.scope("conv_in"), config.in_channels, boc[0], 3, 1, 1, true, compute);
  int64_t out_ch = boc[0];
  for (std::size_t i = 0; i < n; ++i) {
    const WeightLoader b = e.scope("down_blocks").scope(static_cast<int64_t>(i));
    const int64_t in_ch = out_ch;
    out_ch = boc[i];
    std::vector<nn::ResnetBlock2D> resnets;
    for (int64_t j = 0; j < config.layers_per_block; ++j)
      resnets.push_back(vae_resnet(b.scope("resnets").scope(j), j == 0 ? in_ch : out_ch, out_ch,
                                   groups, m.act, compute));
    m.enc_resnets.push_back(std::move(resnets));
    std::optional<nn::Downsample2D> down;
    if (i + 1 < n) down.emplace(b.scope("downsamplers").scope(0), out_ch, out_ch, 0, compute);
    m.enc_down.push_back(std::move(down));
  }
  m.enc_mid.emplace(e.scope("mid_block"), boc.back(), groups, m.act, config.mid_block_add_attention,
                    compute);
  m.enc_norm_out = nn::GroupNorm(e.scope("conv_norm_out"), groups, boc.back(), kEps);
  m.enc_conv_out = nn::Conv2d(e.scope("conv_out"), boc.back(), 2 * config.latent_channels, 3, 1, 1,
                              true, compute);
  if (config.use_quant_conv)
    m.quant_conv.emplace(weights.scope("quant_conv"), 2 * config.latent_channels,
                         2 * config.latent_channels, 1, 1, 0, true, compute);

  // Decoder.
  if (config.use_post_quant_conv)
    m.post_quant_conv.emplace(weights.scope("post_quant_conv"), config.latent_channels,
                              config.latent_channels, 1, 1, 0, true, compute);
  const WeightLoader d = weights.scope("decoder");
  m.dec_conv_in =
      nn::Conv2d(d.scope("conv_in"), config.latent_channels, boc.back(), 3, 1, 1, true, compute);
  m.dec_mid.emplace(d.scope("mid_block"), boc.back(), groups, m.act, config.mid_block_add_attention,
                    compute);
  out_ch = boc.back();
  for (std::size_t i = 0; i < n; ++i) {
    const WeightLoader b = d.scope("up_blocks").scope(static_cast<int64_t>(i));
    const int64_t prev_ch = out_ch;
    out_ch = boc[n - 1 - i];
    std::vector<nn::ResnetBlock2D> resnets;
    for (int64_t j = 0; j < config.layers_per_block + 1; ++j)
      resnets.push_back(vae_resnet(b.scope("resnets").scope(j), j == 0 ? prev_ch : out_ch, out_ch,
                                   groups, m.act, compute));
    m.dec_resnets.push_back(std::move(resnets));
    std::optional<nn::Upsample2D> up;
    if (i + 1 < n) up.emplace(b.scope("upsamplers").scope(0), out_ch, out_ch, compute);
    m.dec_up.push_back(std::move(up));
  }
  m.dec_norm_out = nn::GroupNorm(d.scope("conv_norm_out"), groups, boc[0], kEps);
  m.dec_conv_out =
      nn::Conv2d(d.scope("conv_out"), boc[0], config.out_channels, 3, 1, 1, true, compute);

  set_tile_size(config.sample_size.values.at(0));
}

AutoencoderKL AutoencoderKL::from_pretrained(const std::filesystem::path& folder,
                                             const ModelOptions& options) {
  const auto config = AutoencoderKLConfig::from_json(read_json_file(folder / "config.json"));
  WeightLoader w(open_tensor_source(folder, options.variant), options.weight_dtype);
  AutoencoderKL model(config, w, options.compute_dtype);
  w.finish();
  return model;
}

AutoencoderKL::~AutoencoderKL() = default;
AutoencoderKL::AutoencoderKL(AutoencoderKL&&) noexcept = default;
AutoencoderKL& AutoencoderKL::operator=(AutoencoderKL&&) noexcept = default;

const AutoencoderKLConfig& AutoencoderKL::config() const {
  return impl_->config;
}

int64_t AutoencoderKL::scale_factor() const {
  return int64_t{1} << (impl_->config.block_out_channels.size() - 1);
}

void AutoencoderKL::set_tile_size(int64_t sample_pixels, double overlap_factor) {
  DIFFUSE_CHECK(sample_pixels > 0 && overlap_factor >= 0 && overlap_factor < 1, kOwner,
                ": invalid tile size ", sample_pixels, " / overlap ", overlap_factor);
  tile_sample_min_size_ = sample_pixels;
  // diffusers: int(sample_size / 2 ** (len(block_out_channels) - 1)).
  tile_latent_min_size_ = sample_pixels / scale_factor();
  tile_overlap_factor_ = overlap_factor;
}

// --- Encode -------------------------------------------------------------------------------------

Tensor DiagonalGaussianDistribution::sample(const Tensor& eps) const {
  DIFFUSE_CHECK(eps.shape() == mean.shape(), "DiagonalGaussianDistribution::sample: noise shape ",
                shape_str(eps.shape()), " differs from the latent shape ", shape_str(mean.shape()));
  return ops::add(mean, ops::mul(std, eps.to(mean.dtype())));
}

Tensor DiagonalGaussianDistribution::sample(Generator& generator) const {
  return sample(generator.randn(mean.shape(), mean.dtype()));
}

Tensor AutoencoderKL::encode_moments(const Tensor& image) const {
  const Impl& m = *impl_;
  if (use_tiling_ &&
      (image.size(2) > tile_sample_min_size_ || image.size(3) > tile_sample_min_size_))
    return tiled_encode_moments(image);
  Tensor h = m.encoder(image);
  if (m.quant_conv) h = (*m.quant_conv)(h);
  return h;
}

DiagonalGaussianDistribution AutoencoderKL::encode(const Tensor& image) const {
  const auto& c = impl_->config;
  DIFFUSE_CHECK(image.dim() == 4 && image.size(1) == c.in_channels, kOwner, ": encode expects [B, ",
                c.in_channels, ", H, W], got ", shape_str(image.shape()));
  Tensor moments;
  if (use_slicing_ && image.size(0) > 1) {
    std::vector<Tensor> parts;
    for (int64_t b = 0; b < image.size(0); ++b)
      parts.push_back(encode_moments(image.narrow(0, b, 1)));
    moments = ops::concat(parts, 0);
  } else {
    moments = encode_moments(image);
  }
  DiagonalGaussianDistribution post;
  const auto halves = moments.chunk(2, 1);
  post.mean = halves[0].contiguous();
  post.logvar = ops::clamp(halves[1], -30.0, 20.0);
  post.std = ops::exp(ops::mul(post.logvar, 0.5));
  return post;
}

// --- Decode -------------------------------------------------------------------------------------

Tensor AutoencoderKL::decode_one(const Tensor& latents) const {
  const Impl& m = *impl_;
  if (use_tiling_ &&
      (latents.size(2) > tile_latent_min_size_ || latents.size(3) > tile_latent_min_size_))
    return tiled_decode(latents);
  Tensor z = latents;
  if (m.post_quant_conv) z = (*m.post_quant_conv)(z);
  return m.decoder(z);
}

Tensor AutoencoderKL::decode(const Tensor& latents) const {
  const auto& c = impl_->config;
  DIFFUSE_CHECK(latents.dim() == 4 && latents.size(1) == c.latent_channels, kOwner,
                ": decode expects [B, ", c.latent_channels, ", h, w], got ",
                shape_str(latents.shape()));
  // The decoder's activations are large (hundreds of MB at 512x512) and come straight from the
  // system: first hand back what the heap still holds from the denoising steps' activations,
  // so that the two do not add up in the pipeline's peak.
  ops::release_free_memory();
  if (use_slicing_ && latents.size(0) > 1) {
    std::vector<Tensor> parts;
    for (int64_t b = 0; b < latents.size(0); ++b)
      parts.push_back(decode_one(latents.narrow(0, b, 1)));
    return ops::concat(parts, 0);
  }
  return decode_one(latents);
}

// --- Tiling (diffusers blend_v / blend_h / tiled_encode / tiled_decode) -------------------------

namespace {

// Blends the last `extent` rows (dim 2) or columns (dim 3) of `a` into the first ones of `b`,
// in place: b[y] = a[-extent + y] * (1 - y / extent) + b[y] * (y / extent).
void blend(const Tensor& a, Tensor& b, int64_t extent, int64_t dim) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  for (int64_t y = 0; y < extent; ++y) {
    const double t = static_cast<double>(y) / static_cast<double>(extent);
    Tensor dst = b.narrow(dim, y, 1);
    const Tensor mixed =
        ops::add(ops::mul(a.narrow(dim, a.size(dim) - extent + y, 1), 1.0 - t), ops::mul(dst, t));
    dst.copy_(mixed);
  }
}

// Splits `x` into overlapping tiles, runs `fn` on each, blends neighbours and stitches the
// kept parts. in_tile/in_step in input pixels; out_blend/out_keep in output pixels.
template <typename Fn>
Tensor tiled(const Tensor& x, int64_t in_tile, int64_t in_step, int64_t out_blend, int64_t out_keep,
             Fn&& fn) {
  DIFFUSE_CHECK(in_step > 0, kOwner, ": tile size too small for tiling");
  std::vector<std::vector<Tensor>> rows;
  for (int64_t i = 0; i < x.size(2); i += in_step) {
    std::vector<Tensor> row;
    for (int64_t j = 0; j < x.size(3); j += in_step)
      row.push_back(fn(x.slice(2, i, i + in_tile).slice(3, j, j + in_tile).contiguous()));
    rows.push_back(std::move(row));
  }
  std::vector<Tensor> result_rows;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<Tensor> result_row;
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      Tensor& tile = rows[i][j];
      if (i > 0) blend(rows[i - 1][j], tile, out_blend, 2);
      if (j > 0) blend(rows[i][j - 1], tile, out_blend, 3);
      result_row.push_back(tile.slice(2, 0, out_keep).slice(3, 0, out_keep));
    }
    result_rows.push_back(ops::concat(result_row, 3));
  }
  return ops::concat(result_rows, 2);
}

}  // namespace

Tensor AutoencoderKL::tiled_encode_moments(const Tensor& image) const {
  const Impl& m = *impl_;
  const auto overlap =
      static_cast<int64_t>(static_cast<double>(tile_sample_min_size_) * (1 - tile_overlap_factor_));
  const auto blend_extent =
      static_cast<int64_t>(static_cast<double>(tile_latent_min_size_) * tile_overlap_factor_);
  return tiled(image, tile_sample_min_size_, overlap, blend_extent,
               tile_latent_min_size_ - blend_extent, [&](const Tensor& tile) {
                 Tensor h = m.encoder(tile);
                 if (m.quant_conv) h = (*m.quant_conv)(h);
                 return h;
               });
}

Tensor AutoencoderKL::tiled_decode(const Tensor& latents) const {
  const Impl& m = *impl_;
  const auto overlap =
      static_cast<int64_t>(static_cast<double>(tile_latent_min_size_) * (1 - tile_overlap_factor_));
  const auto blend_extent =
      static_cast<int64_t>(static_cast<double>(tile_sample_min_size_) * tile_overlap_factor_);
  return tiled(latents, tile_latent_min_size_, overlap, blend_extent,
               tile_sample_min_size_ - blend_extent, [&](const Tensor& tile) {
                 Tensor z = tile;
                 if (m.post_quant_conv) z = (*m.post_quant_conv)(z);
                 return m.decoder(z);
               });
}

}  // namespace diffuse
