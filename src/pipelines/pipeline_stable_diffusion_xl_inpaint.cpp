// diffusers pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl_inpaint.py.
#include "diffuse/ops.h"
#include "diffuse/pipelines/stable_diffusion_xl.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

StableDiffusionXLInpaintPipeline::StableDiffusionXLInpaintPipeline(
    StableDiffusionXLComponents components)
    : components_(std::move(components)) {}

StableDiffusionXLInpaintPipeline StableDiffusionXLInpaintPipeline::from_pretrained(
    const std::filesystem::path& folder, const ModelOptions& options) {
  return StableDiffusionXLInpaintPipeline(
      StableDiffusionXLComponents::from_pretrained(folder, options));
}

PipelineOutput StableDiffusionXLInpaintPipeline::operator()(
    const StableDiffusionXLInpaintParams& p) {
  auto& c = components_;
  DIFFUSE_CHECK(p.mask_image.defined(),
                "StableDiffusionXLInpaintPipeline: `mask_image` is required");
  const int64_t vsf = c.vae_scale_factor();
  const int64_t unet_channels = c.unet->config().in_channels;
  const int64_t latent_channels = c.vae->config().latent_channels;
  DIFFUSE_CHECK(unet_channels == 4 || unet_channels == 2 * latent_channels + 1,
                "The unet should have either 4 or 9 input channels, not ", unet_channels, ".");
  // The size comes from the image (or its latents); the mask must match it.
  const auto input = pu::xl_image_input(p, p.image, p.image_latents, vsf, latent_channels,
                                        "StableDiffusionXLInpaintPipeline");
  const int64_t height = input.height, width = input.width;

  // 1. Check inputs.
  pu::check_xl_img2img_inputs(p, height, width, p.strength, p.denoising_start);
  const int64_t batch = p.num_images_per_prompt;
  const bool cfg = p.guidance_scale > 1.0 && !c.unet->config().time_cond_proj_dim;

  // 2. Encode the prompt.
  const XLPromptEmbeds embeds = encode_prompt(c, p, cfg);

  // 3. Timesteps (strength, or denoising_start for a refiner).
  pu::retrieve_timesteps(*c.scheduler, p);
  std::vector<double> timesteps =
      pu::xl_img2img_timesteps(*c.scheduler, p.num_inference_steps, p.strength, p.denoising_start);

  // 4. Preprocess image and mask.
  pu::InpaintArgs args;
  if (input.image.defined())
    args.init_image = pu::preprocess_image(input.image, height, width, "image");
  args.image_latents = p.image_latents;
  args.mask_condition = pu::preprocess_mask(p.mask_image, height, width);
  args.masked_image_latents = p.masked_image_latents;
  args.latents = p.latents;
  args.shape = {batch, latent_channels, height / vsf, width / vsf};
  args.first_timestep = timesteps.front();
  args.is_strength_max = p.strength == 1.0;
  args.add_noise = !p.denoising_start.has_value();
  args.regular_unet = unet_channels == 4;
  args.cfg = cfg;

  // 5. Latents, mask and masked-image latents (random draws in diffusers' order).
  pu::Generators generators(p.seeds, batch);
  const pu::InpaintState state = pu::prepare_inpaint(*c.vae, *c.scheduler, args, generators);

  // 6. Added conditioning (as image-to-image).
  const UNet2DConditionInputs added = pu::xl_img2img_added_conditioning(
      c, p, embeds, height, width, p.aesthetic_score, p.negative_aesthetic_score, cfg);

  // 7. Denoising loop (stopped early by denoising_end): 9-channel UNets see mask + masked image,
  // 4-channel UNets get the known region blended back after each step.
  timesteps = pu::cut_denoising_end(*c.scheduler, std::move(timesteps), p.denoising_end);
  const pu::DenoiseHooks hooks =
      pu::inpaint_hooks(state, *c.scheduler, timesteps, args.regular_unet);
  const Tensor latents =
      pu::denoise(*c.unet, *c.scheduler, p, state.latents, timesteps,
                  {embeds.prompt_embeds, embeds.negative_prompt_embeds}, generators, hooks, added);

  // 8. Decode.
  return pu::finish(*c.vae, p, latents, generators);
}

}  // namespace diffuse
