// Pieces the Stable Diffusion pipelines share (diffusers keeps them as "Copied from" functions):
// generators, classifier-free guidance, the denoising loop, image pre/post-processing.
#pragma once

#include <functional>
#include <vector>

#include "diffuse/pipelines/stable_diffusion.h"

namespace diffuse::pipeline_utils {

// The call's random generators: one for every draw (one seed), or one per image (diffusers'
// list of generators: each batch item drawn from its own generator).
class Generators {
 public:
  // No seed: a random one. One seed: a single generator. batch seeds: one per image.
  Generators(const std::vector<uint64_t>& seeds, int64_t batch);
  // randn_tensor(shape, generator(s)).
  Tensor randn(const Shape& shape);
  NoiseSource noise();
  const std::vector<uint64_t>& seeds() const { return seeds_; }

 private:
  std::vector<uint64_t> seeds_;
  std::vector<Generator> generators_;
};

// diffusers check_inputs for height/width/steps/guidance; throws diffuse::Error.
void check_inputs(const StableDiffusionParams& p, int64_t height, int64_t width);

// torch.cat([x] * n) along dim 0.
Tensor repeat_batch(const Tensor& x, int64_t n);

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
// VAE posterior sample * scaling_factor (diffusers _encode_vae_image / retrieve_latents).
Tensor encode_vae_image(const AutoencoderKL& vae, const Tensor& image, Generators& generators);

// The denoising loop: CFG batching, scale_model_input, UNet, guidance (+ rescale), step,
// callback. `extend_input` may append channels to the scaled UNet input (9-channel inpainting);
// `after_step(i, latents)` may modify the latents after each step (4-channel inpainting).
struct DenoiseHooks {
  std::function<Tensor(const Tensor& scaled_input)> extend_input;
  std::function<void(std::size_t i, Tensor& latents)> after_step;
};
Tensor denoise(StableDiffusionComponents& c, const StableDiffusionParams& p, Tensor latents,
               const std::vector<double>& timesteps, const PromptEmbeds& embeds,
               Generators& generators, const DenoiseHooks& hooks = {});

// Decodes latents (unless output_type is latent) into the pipeline output.
PipelineOutput finish(const StableDiffusionComponents& c, const StableDiffusionParams& p,
                      const Tensor& latents, const Generators& generators);

}  // namespace diffuse::pipeline_utils
