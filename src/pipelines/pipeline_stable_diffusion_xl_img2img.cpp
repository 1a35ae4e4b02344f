// diffusers pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl_img2img.py: image-to-image
// and the refiner of the ensemble of expert denoisers (denoising_start).
#include "diffuse/ops.h"
#include "diffuse/pipelines/stable_diffusion_xl.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

StableDiffusionXLImg2ImgPipeline::StableDiffusionXLImg2ImgPipeline(
    StableDiffusionXLComponents components)
    : components_(std::move(components)) {}

StableDiffusionXLImg2ImgPipeline StableDiffusionXLImg2ImgPipeline::from_pretrained(
    const std::filesystem::path& folder, const ModelOptions& options) {
  return StableDiffusionXLImg2ImgPipeline(
      StableDiffusionXLComponents::from_pretrained(folder, options));
}

PipelineOutput StableDiffusionXLImg2ImgPipeline::operator()(
    const StableDiffusionXLImg2ImgParams& p) {
  auto& c = components_;
  const int64_t vsf = c.vae_scale_factor();
  // The size comes from the image (or its latents).
  const auto input =
      pu::xl_image_input(p, p.image, p.image_latents, vsf, c.vae->config().latent_channels,
                         "StableDiffusionXLImg2ImgPipeline");
  const int64_t height = input.height, width = input.width;
  const Tensor image =
      input.image.defined() ? pu::preprocess_image(input.image, height, width, "image") : Tensor();

  // 1. Check inputs.
  pu::check_xl_img2img_inputs(p, height, width, p.strength, p.denoising_start);
  const int64_t batch = p.num_images_per_prompt;
  const bool cfg = p.guidance_scale > 1.0 && !c.unet->config().time_cond_proj_dim;

  // 2. Encode the prompt.
  const XLPromptEmbeds embeds = encode_prompt(c, p, cfg);

  // 3. Timesteps: the tail that `strength` keeps, or the part after denoising_start.
  pu::retrieve_timesteps(*c.scheduler, p);
  std::vector<double> timesteps =
      pu::xl_img2img_timesteps(*c.scheduler, p.num_inference_steps, p.strength, p.denoising_start);
  // diffusers adds noise unless denoising_start is given at all (even an invalid value).
  const bool add_noise = !p.denoising_start.has_value();

  // 4. Latents: encode (one generator per image when several), duplicate per image, add noise.
  pu::Generators generators(p.seeds, batch);
  Tensor init;
  if (p.image_latents.defined()) {
    init = p.image_latents.to(DType::f32);
  } else {
    const bool per_image =
        generators.count() > 1 && image.size(0) < batch && batch % image.size(0) == 0;
    init = pu::encode_vae_image(
        *c.vae, per_image ? pu::repeat_batch(image, batch / image.size(0)) : image, generators,
        /*latents_mean=*/true);
  }
  DIFFUSE_CHECK(batch % init.size(0) == 0, "Cannot duplicate `image` of batch size ", init.size(0),
                " to ", batch, " text prompts.");
  init = pu::repeat_batch(init, batch / init.size(0));
  Tensor latents = init;
  if (add_noise) {
    const Tensor noise = generators.randn(init.shape());
    latents = c.scheduler->add_noise(init, noise, {timesteps.front()});
  }

  // 5. Added conditioning.
  const UNet2DConditionInputs added = pu::xl_img2img_added_conditioning(
      c, p, embeds, height, width, p.aesthetic_score, p.negative_aesthetic_score, cfg);

  // 6. Denoising loop (stopped early by denoising_end).
  timesteps = pu::cut_denoising_end(*c.scheduler, std::move(timesteps), p.denoising_end);
  latents =
      pu::denoise(*c.unet, *c.scheduler, p, latents, timesteps,
                  {embeds.prompt_embeds, embeds.negative_prompt_embeds}, generators, {}, added);

  // 7. Decode.
  return pu::finish(*c.vae, p, latents, generators);
}

}  // namespace diffuse
