// Stable Diffusion XL pipelines (diffusers pipelines/stable_diffusion_xl/):
// StableDiffusionXLPipeline (text-to-image), StableDiffusionXLImg2ImgPipeline (also the
// refiner) and StableDiffusionXLInpaintPipeline, sharing one set of components.
//
// What SDXL adds to Stable Diffusion 1.x / 2.x (stable_diffusion.h):
//   - two text encoders: CLIP ViT-L (`text_encoder`) and OpenCLIP bigG with projection
//     (`text_encoder_2`); their penultimate hidden states are concatenated along the feature axis
//     and the second one's projected pooled output conditions the UNet;
//   - micro-conditioning `add_time_ids`: original_size + crops_coords_top_left + target_size
//     (base), or original_size + crops_coords_top_left + aesthetic_score (refiner, whose
//     model_index.json sets requires_aesthetics_score);
//   - the ensemble of expert denoisers: the base stops at `denoising_end` (a fraction of the
//     schedule) and returns latents, the refiner (img2img with `image_latents`) starts at the
//     same `denoising_start`.
//
// Images go in and out as float32 NHWC tensors in [0, 1], masks as [N, H, W, 1] or [H, W], as
// in stable_diffusion.h. diffusers' invisible watermark is not applied (diffusers also skips it
// when the invisible-watermark package is missing). With `prompt_weighting`, both encoders read
// A1111 prompt syntax in 77-token chunks (pipelines/prompt_weighting.h) as A1111's SDXL
// conditioner does, pooled from the first chunk.
// Thread-safety: a pipeline call mutates its scheduler; run one call at a time per pipeline.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "diffuse/pipelines/stable_diffusion.h"

namespace diffuse {

// The models of an SDXL pipeline (model_index.json components and pipeline config).
struct StableDiffusionXLComponents {
  std::shared_ptr<ClipTokenizer> tokenizer;       // null for the refiner
  std::shared_ptr<CLIPTextModel> text_encoder;    // CLIP ViT-L; null for the refiner
  std::shared_ptr<ClipTokenizer> tokenizer_2;     // OpenCLIP's tokenizer (pad "!")
  std::shared_ptr<CLIPTextModel> text_encoder_2;  // CLIPTextModelWithProjection (bigG)
  std::shared_ptr<UNet2DConditionModel> unet;
  std::shared_ptr<AutoencoderKL> vae;
  std::shared_ptr<Scheduler> scheduler;
  // model_index.json: negative embeddings are zeros when no negative prompt is given (base).
  bool force_zeros_for_empty_prompt = true;
  // model_index.json: add_time_ids carry aesthetic scores instead of target_size (refiner).
  bool requires_aesthetics_score = false;

  // Loads a diffusers folder through model_index.json (StableDiffusionXL*Pipeline layouts; the
  // refiner's text_encoder / tokenizer may be null). Throws diffuse::Error naming the missing or
  // unsupported component.
  static StableDiffusionXLComponents from_pretrained(const std::filesystem::path& folder,
                                                     const ModelOptions& options = {});
  // 2^(len(vae.block_out_channels) - 1).
  int64_t vae_scale_factor() const;
};

// (height, width) or (top, left), as diffusers' tuples.
using SizeHW = std::array<int64_t, 2>;

struct StableDiffusionXLParams : StableDiffusionParams {
  std::optional<std::string> prompt_2;           // text_encoder_2's prompt; default: prompt
  std::optional<std::string> negative_prompt_2;  // default: negative_prompt
  Tensor pooled_prompt_embeds;                   // [1, projection_dim], with prompt_embeds
  Tensor negative_pooled_prompt_embeds;          // with negative_prompt_embeds
  // Micro-conditioning; defaults: (height, width), (0, 0), (height, width).
  std::optional<SizeHW> original_size;
  SizeHW crops_coords_top_left{0, 0};
  std::optional<SizeHW> target_size;
  // Defaults: the positive values (in img2img / inpaint the negative sizes default to the
  // positive ones too).
  std::optional<SizeHW> negative_original_size;
  std::optional<SizeHW> negative_crops_coords_top_left;
  std::optional<SizeHW> negative_target_size;
  // A fraction in (0, 1): stop after the timesteps >= (1 - denoising_end) * num_train_timesteps
  // (with OutputType::latent, to hand the latents to a refiner). Other values: run everything.
  std::optional<double> denoising_end;
};

struct StableDiffusionXLImg2ImgParams : StableDiffusionXLParams {
  Tensor image;           // NHWC [N, H, W, 3] in [0, 1], or
  Tensor image_latents;   // [N, 4, h, w]: latents of a base run (OutputType::latent), used as is
  double strength = 0.3;  // diffusers' default
  // A fraction in (0, 1): start at the first timestep below (1 - denoising_start) *
  // num_train_timesteps and do not add noise (the latents come from a base run stopped at the
  // same denoising_end). `strength` is then ignored.
  std::optional<double> denoising_start;
  double aesthetic_score = 6.0;           // requires_aesthetics_score models only
  double negative_aesthetic_score = 2.5;  // requires_aesthetics_score models only
};

struct StableDiffusionXLInpaintParams : StableDiffusionXLParams {
  Tensor image;          // NHWC [N, H, W, 3] in [0, 1], or
  Tensor image_latents;  // [N, 4, h, w] image latents (then masked_image_latents are needed by
                         // 9-channel UNets)
  Tensor mask_image;     // [N, H, W, 1] or [H, W] in [0, 1]; 1 = repaint (binarized at 0.5)
  Tensor masked_image_latents;  // optional: precomputed latents of the masked image
  double strength = 0.9999;     // diffusers' default
  std::optional<double> denoising_start;
  double aesthetic_score = 6.0;
  double negative_aesthetic_score = 2.5;
};

// diffusers StableDiffusionXLPipeline.encode_prompt: the two encoders' penultimate hidden states
// (clip_skip counts further back from there) concatenated along the last axis, [n, 77, D1 + D2],
// and text_encoder_2's text_embeds [n, projection_dim] as the pooled embeddings; the negative
// ones are zeros when `negative_prompt` is not given and force_zeros_for_empty_prompt is set.
// n = num_images_per_prompt.
struct XLPromptEmbeds {
  Tensor prompt_embeds;
  Tensor negative_prompt_embeds;
  Tensor pooled_prompt_embeds;
  Tensor negative_pooled_prompt_embeds;
};
XLPromptEmbeds encode_prompt(const StableDiffusionXLComponents& components,
                             const StableDiffusionXLParams& params,
                             bool do_classifier_free_guidance);

class StableDiffusionXLPipeline {
 public:
  explicit StableDiffusionXLPipeline(StableDiffusionXLComponents components);
  static StableDiffusionXLPipeline from_pretrained(const std::filesystem::path& folder,
                                                   const ModelOptions& options = {});
  PipelineOutput operator()(const StableDiffusionXLParams& params);
  StableDiffusionXLComponents& components() { return components_; }

 private:
  StableDiffusionXLComponents components_;
};

class StableDiffusionXLImg2ImgPipeline {
 public:
  explicit StableDiffusionXLImg2ImgPipeline(StableDiffusionXLComponents components);
  static StableDiffusionXLImg2ImgPipeline from_pretrained(const std::filesystem::path& folder,
                                                          const ModelOptions& options = {});
  PipelineOutput operator()(const StableDiffusionXLImg2ImgParams& params);
  StableDiffusionXLComponents& components() { return components_; }

 private:
  StableDiffusionXLComponents components_;
};

// Works with 9-channel inpainting UNets and with regular 4-channel UNets (the known region is
// re-noised and blended back after every step), as StableDiffusionInpaintPipeline.
class StableDiffusionXLInpaintPipeline {
 public:
  explicit StableDiffusionXLInpaintPipeline(StableDiffusionXLComponents components);
  static StableDiffusionXLInpaintPipeline from_pretrained(const std::filesystem::path& folder,
                                                          const ModelOptions& options = {});
  PipelineOutput operator()(const StableDiffusionXLInpaintParams& params);
  StableDiffusionXLComponents& components() { return components_; }

 private:
  StableDiffusionXLComponents components_;
};

}  // namespace diffuse
