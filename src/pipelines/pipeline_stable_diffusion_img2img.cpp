// diffusers pipelines/stable_diffusion/pipeline_stable_diffusion_img2img.py.
#include "diffuse/ops.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

StableDiffusionImg2ImgPipeline::StableDiffusionImg2ImgPipeline(StableDiffusionComponents components)
    : components_(std::move(components)) {}

PipelineOutput StableDiffusionImg2ImgPipeline::operator()(const Img2ImgParams& p) {
  auto& c = components_;
  DIFFUSE_CHECK(p.image.defined(), "StableDiffusionImg2ImgPipeline: `image` is required");
  const Tensor& img = p.image.dim() == 3 ? p.image.unsqueeze(0) : p.image;
  DIFFUSE_CHECK(img.dim() == 4, "StableDiffusionImg2ImgPipeline: image must be NHWC, got ",
                shape_str(p.image.shape()));
  // diffusers takes the size from the image (rounded down to the VAE factor).
  const int64_t vsf = c.vae_scale_factor();
  const int64_t height = p.height.value_or(img.size(1) / vsf * vsf);
  const int64_t width = p.width.value_or(img.size(2) / vsf * vsf);

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

  // 3. Preprocess the image.
  const Tensor image = pu::preprocess_image(img, height, width, "image");

  // 4. Timesteps: the tail of the schedule that `strength` keeps.
  pu::retrieve_timesteps(*c.scheduler, p);
  const std::vector<double> timesteps =
      pu::img2img_timesteps(*c.scheduler, p.num_inference_steps, p.strength);

  // 5. Latents: encode (posterior sample), duplicate per image, noise to the first timestep.
  pu::Generators generators(p.seeds, batch);
  // With one generator per image, diffusers repeats the image first so that each image's
  // posterior sample comes from its own generator.
  const bool per_image =
      generators.count() > 1 && image.size(0) < batch && batch % image.size(0) == 0;
  Tensor init = pu::encode_vae_image(
      *c.vae, per_image ? pu::repeat_batch(image, batch / image.size(0)) : image, generators);
  DIFFUSE_CHECK(batch % init.size(0) == 0, "Cannot duplicate `image` of batch size ", init.size(0),
                " to ", batch, " text prompts.");
  init = pu::repeat_batch(init, batch / init.size(0));
  const Tensor noise = generators.randn(init.shape());
  Tensor latents = c.scheduler->add_noise(init, noise, {timesteps.front()});

  // 6. Denoising loop.
  latents = pu::denoise(*c.unet, *c.scheduler, p, latents, timesteps, embeds, generators);

  // 7. Decode.
  return pu::finish(*c.vae, p, latents, generators);
}

}  // namespace diffuse
