// diffusers pipelines/stable_diffusion/pipeline_stable_diffusion_inpaint.py.
#include "diffuse/ops.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

StableDiffusionInpaintPipeline::StableDiffusionInpaintPipeline(StableDiffusionComponents components)
    : components_(std::move(components)) {}

PipelineOutput StableDiffusionInpaintPipeline::operator()(const InpaintParams& p) {
  auto& c = components_;
  DIFFUSE_CHECK(p.image.defined() && p.mask_image.defined(),
                "StableDiffusionInpaintPipeline: `image` and `mask_image` are required");
  const int64_t vsf = c.vae_scale_factor();
  const Tensor& img = p.image.dim() == 3 ? p.image.unsqueeze(0) : p.image;
  const int64_t height = p.height.value_or(img.size(1) / vsf * vsf);
  const int64_t width = p.width.value_or(img.size(2) / vsf * vsf);
  const int64_t unet_channels = c.unet->config().in_channels;
  const int64_t latent_channels = c.vae->config().latent_channels;
  DIFFUSE_CHECK(unet_channels == 4 || unet_channels == 9 + latent_channels - 4,
                "The unet should have either 4 or 9 input channels, not ", unet_channels, ".");

  // 1. Check inputs.
  pu::check_inputs(p, height, width);
  DIFFUSE_CHECK(p.strength >= 0.0 && p.strength <= 1.0,
                "The value of strength should in [0.0, 1.0] but is ", p.strength);
  const int64_t batch = p.num_images_per_prompt;
  const bool cfg = p.guidance_scale > 1.0 && !c.unet->config().time_cond_proj_dim;

  // 2. Encode the prompt.
  const PromptEmbeds embeds =
      encode_prompt(c, p.prompt, batch, cfg, p.negative_prompt, p.clip_skip, p.prompt_embeds,
                    p.negative_prompt_embeds, p.prompt_weighting);

  // 3. Timesteps.
  pu::retrieve_timesteps(*c.scheduler, p);
  const std::vector<double> timesteps =
      pu::img2img_timesteps(*c.scheduler, p.num_inference_steps, p.strength);
  const bool is_strength_max = p.strength == 1.0;

  // 4. Preprocess image and mask.
  pu::InpaintArgs args;
  args.init_image = pu::preprocess_image(img, height, width, "image");
  args.mask_condition = pu::preprocess_mask(p.mask_image, height, width);
  args.latents = p.latents;
  args.shape = {batch, latent_channels, height / vsf, width / vsf};
  args.first_timestep = timesteps.front();
  args.is_strength_max = is_strength_max;
  args.regular_unet = unet_channels == 4;
  args.cfg = cfg;
  if (!args.regular_unet)
    DIFFUSE_CHECK(latent_channels + 1 + latent_channels == unet_channels,
                  "Incorrect configuration settings! The config of `pipeline.unet` expects ",
                  unet_channels, " but received latents, mask and masked image channels of ",
                  latent_channels + 1 + latent_channels);

  // 5. Latents, mask and masked-image latents (random draws in diffusers' order).
  pu::Generators generators(p.seeds, batch);
  const pu::InpaintState state = pu::prepare_inpaint(*c.vae, *c.scheduler, args, generators);

  // 6. Denoising loop: 9-channel UNets see mask + masked image; 4-channel UNets get the known
  // region re-noised to the next timestep and blended back after each step.
  const pu::DenoiseHooks hooks =
      pu::inpaint_hooks(state, *c.scheduler, timesteps, args.regular_unet);
  Tensor latents = state.latents;
  latents = pu::denoise(*c.unet, *c.scheduler, p, latents, timesteps, embeds, generators, hooks);

  // 7. Decode.
  return pu::finish(*c.vae, p, latents, generators);
}

}  // namespace diffuse
