// Pieces the Stable Diffusion pipelines share (diffusers keeps them as "Copied from" functions):
// generators, classifier-free guidance, the denoising loop, image pre/post-processing.
#pragma once

#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/pipelines/stable_diffusion.h"
#include "diffuse/pipelines/stable_diffusion_xl.h"

namespace diffuse::pipeline_utils {

// The class name of the [library, class] entry `name` of model_index.json; nullopt when the
// entry is absent or [null, null]. Throws diffuse::Error for a malformed entry.
std::optional<std::string> component_class(const nlohmann::json& index, const std::string& name,
                                           const std::filesystem::path& where);

// The call's random generators: one for every draw (one seed), or one per image (diffusers'
// list of generators: each batch item drawn from its own generator).
class Generators {
 public:
  // No seed: a random one. One seed: a single generator. batch seeds: one per image.
  Generators(const std::vector<uint64_t>& seeds, int64_t batch);
  // randn_tensor(shape, generator(s)).
  Tensor randn(const Shape& shape);
  // Like randn, but with several generators only the first shape[0] of them draw (diffusers'
  // `for i in range(image.shape[0])` loops over a generator list).
  Tensor randn_leading(const Shape& shape);
  NoiseSource noise();
  std::size_t count() const { return generators_.size(); }
  const std::vector<uint64_t>& seeds() const { return seeds_; }

 private:
  std::vector<uint64_t> seeds_;
  std::vector<Generator> generators_;
};

// diffusers check_inputs for height/width/steps/guidance; throws diffuse::Error.
void check_inputs(const StableDiffusionParams& p, int64_t height, int64_t width);

// torch.cat([x] * n) along dim 0.
Tensor repeat_batch(const Tensor& x, int64_t n);

// prepare_latents of text-to-image: the caller's latents (shape-checked) or a draw from the
// generators, times the scheduler's init_noise_sigma.
Tensor prepare_latents(const Scheduler& scheduler, const Tensor& latents, const Shape& shape,
                       Generators& generators);

// retrieve_timesteps: set_timesteps with the steps, custom timesteps or custom sigmas.
void retrieve_timesteps(Scheduler& scheduler, const StableDiffusionParams& p);

// get_timesteps for image-to-image: the tail of the schedule for `strength`, sets the
// scheduler's begin index; returns (timesteps, num_inference_steps).
std::vector<double> img2img_timesteps(Scheduler& scheduler, int64_t num_inference_steps,
                                      double strength);

// NHWC [0, 1] -> NCHW [-1, 1] (VaeImageProcessor.preprocess of a float numpy image of the right
// size). Throws when the size is not height x width.
Tensor preprocess_image(const Tensor& image, int64_t height, int64_t width, const char* what);
// NCHW decoder output -> NHWC [0, 1] (denormalize + clamp).
Tensor postprocess_image(const Tensor& image);
// VAE posterior sample * scaling_factor (diffusers _encode_vae_image / retrieve_latents); image
// i draws from generator i when there are several. With `latents_mean` (SDXL pipelines) and a
// VAE config that has latents_mean/latents_std: (z - mean) * scaling_factor / std.
Tensor encode_vae_image(const AutoencoderKL& vae, const Tensor& image, Generators& generators,
                        bool latents_mean = false);

// The denoising loop: CFG batching, scale_model_input, UNet, guidance (+ rescale), step,
// callback. `extend_input` may append channels to the scaled UNet input (9-channel inpainting);
// `after_step(i, latents)` may modify the latents after each step (4-channel inpainting).
struct DenoiseHooks {
  std::function<Tensor(const Tensor& scaled_input)> extend_input;
  std::function<void(std::size_t i, Tensor& latents)> after_step;
};
// `inputs` carries extra UNet conditioning already batched for CFG (SDXL text_embeds/time_ids).
Tensor denoise(UNet2DConditionModel& unet, Scheduler& scheduler, const StableDiffusionParams& p,
               Tensor latents, const std::vector<double>& timesteps, const PromptEmbeds& embeds,
               Generators& generators, const DenoiseHooks& hooks = {},
               UNet2DConditionInputs inputs = {});

// Decodes latents (unless output_type is latent) into the pipeline output: latents /
// scaling_factor, or latents * latents_std / scaling_factor + latents_mean when the VAE config
// has both (SDXL pipelines).
PipelineOutput finish(const AutoencoderKL& vae, const StableDiffusionParams& p,
                      const Tensor& latents, const Generators& generators);

// --- inpainting ---------------------------------------------------------------------------------

// VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True) of a float
// mask: [N, 1, H, W] of 0/1 (>= 0.5 -> 1).
Tensor preprocess_mask(const Tensor& mask, int64_t height, int64_t width);

// prepare_latents + prepare_mask_latents of the inpainting pipelines (SD and SDXL), drawing from
// the generators in diffusers' order: image latents, noise, masked-image latents.
struct InpaintArgs {
  Tensor init_image;            // NCHW in [-1, 1]; undefined when image_latents are given
  Tensor image_latents;         // given image latents (SDXL) or undefined
  Tensor mask_condition;        // [N, 1, H, W] of 0/1
  Tensor masked_image_latents;  // given masked-image latents (SDXL) or undefined
  Tensor latents;               // the caller's initial latents or undefined
  Shape shape;                  // [batch, latent_channels, h, w]
  double first_timestep = 0;
  bool is_strength_max = true;
  bool add_noise = true;      // false: start from the image latents (SDXL denoising_start)
  bool regular_unet = false;  // a 4-channel UNet: blend the known region after every step
  bool cfg = false;
};
struct InpaintState {
  Tensor latents;        // the loop's initial latents
  Tensor noise;          // re-noises the known region (4-channel UNets)
  Tensor image_latents;  // the known region's latents (4-channel UNets)
  Tensor mask;           // [batch, 1, h, w]
  Tensor mask_in;        // mask and masked-image latents, doubled for CFG (9-channel UNets)
  Tensor masked_in;
};
InpaintState prepare_inpaint(const AutoencoderKL& vae, Scheduler& scheduler, const InpaintArgs& a,
                             Generators& generators);
// 9-channel UNets: the mask and masked-image latents appended to the input. 4-channel UNets: the
// known region re-noised to the next timestep and blended back after each step. `state` and
// `timesteps` must outlive the hooks.
DenoiseHooks inpaint_hooks(const InpaintState& state, Scheduler& scheduler,
                           const std::vector<double>& timesteps, bool regular_unet);

// --- SDXL -----------------------------------------------------------------------------------

// The timesteps for SDXL's `denoising_end` in (0, 1): those >= round(num_train_timesteps * (1 -
// denoising_end)) (Python's round, half to even). Other values keep every timestep.
std::vector<double> cut_denoising_end(const Scheduler& scheduler, std::vector<double> timesteps,
                                      std::optional<double> denoising_end);

// SDXL img2img get_timesteps with `denoising_start` in (0, 1): the timesteps below
// round(num_train_timesteps * (1 - denoising_start)) (one more for 2nd-order schedulers when
// the count is even); sets the scheduler's begin index. Without a valid denoising_start: the
// strength rule of img2img_timesteps.
std::vector<double> xl_img2img_timesteps(Scheduler& scheduler, int64_t num_inference_steps,
                                         double strength, std::optional<double> denoising_start);

// StableDiffusionXLPipeline._get_add_time_ids: [1, 6] = original_size + crops + target_size.
// Throws diffuse::Error (diffusers' message) when addition_time_embed_dim * 6 + projection_dim
// differs from the UNet's add_embedding input (projection_class_embeddings_input_dim).
Tensor xl_time_ids(const UNet2DConditionModel& unet, int64_t projection_dim, SizeHW original_size,
                   SizeHW crops_coords_top_left, SizeHW target_size);

// StableDiffusionXLImg2ImgPipeline._get_add_time_ids (also inpainting): with
// requires_aesthetics_score, original + crops + (aesthetic_score,) and the negative counterpart
// with negative_aesthetic_score; otherwise original + crops + target and negative_original +
// crops (the positive ones, as diffusers) + negative_target. Each [1, n].
struct XLTimeIds {
  Tensor positive;
  Tensor negative;
};
struct XLTimeIdsArgs {
  SizeHW original_size, crops_coords_top_left, target_size;
  double aesthetic_score = 6.0, negative_aesthetic_score = 2.5;
  SizeHW negative_original_size, negative_crops_coords_top_left, negative_target_size;
};
XLTimeIds xl_img2img_time_ids(const UNet2DConditionModel& unet, int64_t projection_dim,
                              bool requires_aesthetics_score, const XLTimeIdsArgs& a);

// The UNet's added conditioning of SDXL img2img / inpainting for the denoising batch
// ([negatives..., positives...] with CFG): pooled embeddings and xl_img2img_time_ids with
// diffusers' defaults (sizes: height x width; negative sizes: the positive ones).
UNet2DConditionInputs xl_img2img_added_conditioning(const StableDiffusionXLComponents& c,
                                                    const StableDiffusionXLParams& p,
                                                    const XLPromptEmbeds& embeds, int64_t height,
                                                    int64_t width, double aesthetic_score,
                                                    double negative_aesthetic_score, bool cfg);

// The image input of SDXL img2img / inpainting: exactly one of `image` (NHWC, [H, W, 3] or
// [N, H, W, 3]; returned as 4-D) and `image_latents` ([N, latent_channels, h, w]). The size comes
// from the image (height/width override it, rounded down to the VAE factor) or its latents.
struct XLImageInput {
  Tensor image;  // NHWC 4-D, or undefined when latents were given
  int64_t height = 0, width = 0;
};
XLImageInput xl_image_input(const StableDiffusionXLParams& p, const Tensor& image,
                            const Tensor& image_latents, int64_t vae_scale_factor,
                            int64_t latent_channels, const char* pipeline);

// check_inputs of SDXL img2img / inpainting: the common checks, strength in [0, 1] and
// denoising_start before denoising_end.
void check_xl_img2img_inputs(const StableDiffusionXLParams& p, int64_t height, int64_t width,
                             double strength, std::optional<double> denoising_start);

// isinstance(value, float) and 0 < value < 1 (diffusers denoising_value_valid).
bool denoising_value_valid(std::optional<double> value);

}  // namespace diffuse::pipeline_utils
