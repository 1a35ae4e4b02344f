// AutoencoderKL: the VAE of Stable Diffusion 1.x / 2.x / XL (diffusers
// models/autoencoders/autoencoder_kl.py + vae.py Encoder/Decoder), with diffusers' tiled
// encode/decode (enable_tiling) and batch slicing (enable_slicing).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/generator.h"
#include "diffuse/core/tensor.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/model_options.h"

namespace diffuse {

struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<std::string> down_block_types = {"DownEncoderBlock2D"};
  std::vector<std::string> up_block_types = {"UpDecoderBlock2D"};
  std::vector<int64_t> block_out_channels = {64};
  int64_t layers_per_block = 1;
  std::string act_fn = "silu";
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  IntOrList sample_size = 32;
  double scaling_factor = 0.18215;  // SD VAE latent scale (LDM paper §4.3, diffusers default)
  std::optional<double> shift_factor;
  std::optional<std::vector<double>> latents_mean;
  std::optional<std::vector<double>> latents_std;
  bool force_upcast = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  static AutoencoderKLConfig from_json(const nlohmann::json& json);
  void validate() const;
};

// diffusers DiagonalGaussianDistribution: the posterior of encode().
struct DiagonalGaussianDistribution {
  Tensor mean;
  Tensor logvar;  // clamped to [-30, 20]
  Tensor std;     // exp(0.5 * logvar)

  // mean + std * eps with eps drawn from `generator` (randn_tensor semantics).
  Tensor sample(Generator& generator) const;
  // mean + std * eps with the given eps.
  Tensor sample(const Tensor& eps) const;
  const Tensor& mode() const { return mean; }
};

class AutoencoderKL {
 public:
  AutoencoderKL(const AutoencoderKLConfig& config, const WeightLoader& weights,
                DType compute_dtype = DType::f32);
  static AutoencoderKL from_pretrained(const std::filesystem::path& folder,
                                       const ModelOptions& options = {});
  ~AutoencoderKL();
  AutoencoderKL(AutoencoderKL&&) noexcept;
  AutoencoderKL& operator=(AutoencoderKL&&) noexcept;

  // image [B, in_channels, H, W] in [-1, 1] -> posterior over latents [B, latent_channels,
  // H / f, W / f] (f = 2^(blocks - 1)).
  DiagonalGaussianDistribution encode(const Tensor& image) const;
  // latents (already divided by scaling_factor) -> image [B, out_channels, H * f, W * f].
  Tensor decode(const Tensor& latents) const;

  // diffusers enable_tiling / disable_tiling: encode and decode large inputs in overlapping
  // tiles of sample_size pixels, blended linearly (bounded memory for any size).
  void enable_tiling(bool on = true) { use_tiling_ = on; }
  // diffusers enable_slicing: encode/decode batch items one at a time.
  void enable_slicing(bool on = true) { use_slicing_ = on; }
  // Overrides the tile size in pixels (default: config sample_size) and overlap (0.25).
  void set_tile_size(int64_t sample_pixels, double overlap_factor = 0.25);

  // 2^(len(block_out_channels) - 1): pixels per latent.
  int64_t scale_factor() const;
  const AutoencoderKLConfig& config() const;

 private:
  Tensor encode_moments(const Tensor& image) const;
  Tensor tiled_encode_moments(const Tensor& image) const;
  Tensor decode_one(const Tensor& latents) const;
  Tensor tiled_decode(const Tensor& latents) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool use_tiling_ = false;
  bool use_slicing_ = false;
  int64_t tile_sample_min_size_ = 0;
  int64_t tile_latent_min_size_ = 0;
  double tile_overlap_factor_ = 0.25;
};

}  // namespace diffuse
