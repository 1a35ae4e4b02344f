// Stable Diffusion 1.x / 2.x pipelines (diffusers pipelines/stable_diffusion/):
// StableDiffusionPipeline (text-to-image), StableDiffusionImg2ImgPipeline and
// StableDiffusionInpaintPipeline, sharing one set of components like diffusers'
// `Img2ImgPipeline(**pipe.components)`.
//
// Parameters carry diffusers' names and defaults. Images go in and out as float32 NHWC tensors
// in [0, 1] (diffusers' output_type="np"); masks as [N, H, W, 1] (or [H, W]) in [0, 1].
// Thread-safety: a pipeline call mutates its scheduler; run one call at a time per pipeline.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "diffuse/core/generator.h"
#include "diffuse/core/tensor.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/models/clip_text_model.h"
#include "diffuse/models/model_options.h"
#include "diffuse/models/unet_2d_condition.h"
#include "diffuse/schedulers/scheduler.h"
#include "diffuse/tokenizers/clip_tokenizer.h"

namespace diffuse {

// The models of a Stable Diffusion pipeline (model_index.json components).
struct StableDiffusionComponents {
  std::shared_ptr<ClipTokenizer> tokenizer;
  std::shared_ptr<CLIPTextModel> text_encoder;
  std::shared_ptr<UNet2DConditionModel> unet;
  std::shared_ptr<AutoencoderKL> vae;
  std::shared_ptr<Scheduler> scheduler;

  // Loads a diffusers folder through model_index.json (tokenizer, text_encoder, unet, vae,
  // scheduler). Throws diffuse::Error naming the missing or unsupported component.
  static StableDiffusionComponents from_pretrained(const std::filesystem::path& folder,
                                                   const ModelOptions& options = {});
  // 2^(len(vae.block_out_channels) - 1).
  int64_t vae_scale_factor() const;
};

// What a step callback sees (diffusers callback_on_step_end).
struct StepInfo {
  int64_t step = 0;       // 0-based index of the finished step
  int64_t num_steps = 0;  // steps in this call
  double timestep = 0;
  Tensor* latents = nullptr;  // may be replaced by the callback
};
// Returns false to cancel the run (the call then throws diffuse::Error("cancelled")).
using StepCallback = std::function<bool(const StepInfo&)>;

enum class OutputType { image, latent };

struct StableDiffusionParams {
  std::string prompt;
  std::optional<std::string> negative_prompt;
  std::optional<int64_t> height;  // default: unet sample_size * vae_scale_factor
  std::optional<int64_t> width;
  int64_t num_inference_steps = 50;
  std::optional<std::vector<double>> timesteps;  // custom timesteps (schedulers that accept them)
  std::optional<std::vector<double>> sigmas;     // custom sigmas
  double guidance_scale = 7.5;
  double guidance_rescale = 0.0;
  int64_t num_images_per_prompt = 1;
  double eta = 0.0;  // DDIM
  // One seed: one torch.Generator("cpu").manual_seed(seed) for the whole call. Several seeds (one
  // per image): diffusers' list of generators. None: a random seed.
  std::vector<uint64_t> seeds;
  Tensor latents;                 // explicit initial latents [B, 4, h, w] (f32)
  Tensor prompt_embeds;           // instead of `prompt`
  Tensor negative_prompt_embeds;  // instead of `negative_prompt`
  std::optional<int64_t> clip_skip;
  // A1111 prompt syntax and prompts longer than 75 tokens (pipelines/prompt_weighting.h). Off by
  // default: diffusers reads prompts as literal text and truncates them to 77 tokens.
  bool prompt_weighting = false;
  OutputType output_type = OutputType::image;
  StepCallback callback;
};

struct Img2ImgParams : StableDiffusionParams {
  Tensor image;           // NHWC [N, H, W, 3] in [0, 1]
  double strength = 0.8;  // diffusers' default
};

struct InpaintParams : StableDiffusionParams {
  Tensor image;           // NHWC [N, H, W, 3] in [0, 1]
  Tensor mask_image;      // [N, H, W, 1] or [H, W] in [0, 1]; 1 = repaint (binarized at 0.5)
  double strength = 1.0;  // diffusers' default
};

struct PipelineOutput {
  Tensor images;                // [B, H, W, 3] f32 in [0, 1]; undefined for OutputType::latent
  Tensor latents;               // the final latents [B, 4, h, w] (before the VAE)
  std::vector<uint64_t> seeds;  // the seeds used (one, or one per image)
};

// diffusers StableDiffusionPipeline.encode_prompt: [num_images_per_prompt, 77, D] prompt
// embeddings (clip_skip applied to the prompt only, as diffusers 0.31 does) and, when
// `do_classifier_free_guidance`, the negative ones. With `prompt_weighting`, texts are encoded by
// encode_weighted_prompt ([num_images_per_prompt, 77 * chunks, D]) and the prompt and negative
// prompt are padded with empty chunks to the same chunk count.
struct PromptEmbeds {
  Tensor prompt_embeds;
  Tensor negative_prompt_embeds;
};
PromptEmbeds encode_prompt(const StableDiffusionComponents& components, const std::string& prompt,
                           int64_t num_images_per_prompt, bool do_classifier_free_guidance,
                           const std::optional<std::string>& negative_prompt,
                           std::optional<int64_t> clip_skip, const Tensor& prompt_embeds = {},
                           const Tensor& negative_prompt_embeds = {},
                           bool prompt_weighting = false);

class StableDiffusionPipeline {
 public:
  explicit StableDiffusionPipeline(StableDiffusionComponents components);
  static StableDiffusionPipeline from_pretrained(const std::filesystem::path& folder,
                                                 const ModelOptions& options = {});
  PipelineOutput operator()(const StableDiffusionParams& params);
  StableDiffusionComponents& components() { return components_; }

 private:
  StableDiffusionComponents components_;
};

class StableDiffusionImg2ImgPipeline {
 public:
  explicit StableDiffusionImg2ImgPipeline(StableDiffusionComponents components);
  PipelineOutput operator()(const Img2ImgParams& params);
  StableDiffusionComponents& components() { return components_; }

 private:
  StableDiffusionComponents components_;
};

// Works with 9-channel inpainting UNets (mask and masked-image latents concatenated to the
// input) and with regular 4-channel UNets (the known region is re-noised and blended back after
// every step).
class StableDiffusionInpaintPipeline {
 public:
  explicit StableDiffusionInpaintPipeline(StableDiffusionComponents components);
  PipelineOutput operator()(const InpaintParams& params);
  StableDiffusionComponents& components() { return components_; }

 private:
  StableDiffusionComponents components_;
};

}  // namespace diffuse
