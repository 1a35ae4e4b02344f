// diffusers pipelines/stable_diffusion/pipeline_stable_diffusion_inpaint.py.
#include "diffuse/ops.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

StableDiffusionInpaintPipeline::StableDiffusionInpaintPipeline(StableDiffusionComponents components)
    : components_(std::move(components)) {}

namespace {

// VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True) of a float
// mask: [N, 1, H, W] of 0/1 (>= 0.5 -> 1).
Tensor preprocess_mask(const Tensor& mask, int64_t height, int64_t width) {
  Tensor m = mask;
  if (m.dim() == 2) m = m.unsqueeze(0).unsqueeze(-1);
  if (m.dim() == 3) m = m.unsqueeze(-1);
  DIFFUSE_CHECK(m.dim() == 4 && m.size(3) == 1, "mask_image must be [N, H, W, 1] or [H, W], got ",
                shape_str(mask.shape()));
  DIFFUSE_CHECK(m.size(1) == height && m.size(2) == width, "mask_image is ", m.size(2), "x",
                m.size(1), " but the pipeline runs at ", width, "x", height, "; resize it first");
  m = m.to(DType::f32).permute({0, 3, 1, 2}).contiguous();
  std::vector<float> v = m.to_vector<float>();
  for (float& x : v) x = x < 0.5f ? 0.0f : 1.0f;  // mask[mask < 0.5] = 0; mask[mask >= 0.5] = 1
  return Tensor::from_vector(v, m.shape());
}

}  // namespace

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
  const Tensor init_image = pu::preprocess_image(img, height, width, "image");
  const Tensor mask_condition = preprocess_mask(p.mask_image, height, width);

  // 5. Latents (random draws in diffusers' order: image latents, then noise).
  pu::Generators generators(p.seeds, batch);
  const bool regular_unet = unet_channels == 4;
  const Shape shape{batch, latent_channels, height / vsf, width / vsf};
  Tensor image_latents;
  if (regular_unet || (!p.latents.defined() && !is_strength_max)) {
    image_latents = pu::encode_vae_image(*c.vae, init_image, generators);
    image_latents = pu::repeat_batch(image_latents, batch / image_latents.size(0));
  }
  Tensor latents, noise;
  if (!p.latents.defined()) {
    noise = generators.randn(shape);
    latents = is_strength_max ? ops::mul(noise, c.scheduler->init_noise_sigma().value_or(1.0))
                              : c.scheduler->add_noise(image_latents, noise, {timesteps.front()});
  } else {
    DIFFUSE_CHECK(p.latents.shape() == shape, "Unexpected latents shape, got ",
                  shape_str(p.latents.shape()), ", expected ", shape_str(shape));
    noise = p.latents.to(DType::f32);
    latents = ops::mul(noise, c.scheduler->init_noise_sigma().value_or(1.0));
  }

  // 6. Mask and masked-image latents (the masked image is encoded with its own draw).
  const Tensor masked_image = ops::mul(
      init_image, ops::sub(Tensor::full({1}, 1.0), mask_condition));  // init * (mask < 0.5)
  Tensor mask = ops::upsample_nearest(mask_condition, Shape{height / vsf, width / vsf});
  Tensor masked_latents = pu::encode_vae_image(*c.vae, masked_image, generators);
  mask = pu::repeat_batch(mask, batch / mask.size(0));
  masked_latents = pu::repeat_batch(masked_latents, batch / masked_latents.size(0));
  const Tensor mask_in = cfg ? ops::concat({mask, mask}, 0) : mask;
  const Tensor masked_in = cfg ? ops::concat({masked_latents, masked_latents}, 0) : masked_latents;

  // 7. Denoising loop: 9-channel UNets see mask + masked image; 4-channel UNets get the known
  // region re-noised to the next timestep and blended back after each step.
  pu::DenoiseHooks hooks;
  if (!regular_unet) {
    DIFFUSE_CHECK(latent_channels + 1 + latent_channels == unet_channels,
                  "Incorrect configuration settings! The config of `pipeline.unet` expects ",
                  unet_channels, " but received latents, mask and masked image channels of ",
                  latent_channels + 1 + latent_channels);
    hooks.extend_input = [&](const Tensor& x) { return ops::concat({x, mask_in, masked_in}, 1); };
  } else {
    hooks.after_step = [&](std::size_t i, Tensor& l) {
      Tensor proper = image_latents;
      if (i + 1 < timesteps.size())
        proper = c.scheduler->add_noise(proper, noise, {timesteps[i + 1]});
      l = ops::add(ops::mul(ops::sub(Tensor::full({1}, 1.0), mask), proper), ops::mul(mask, l));
    };
  }
  latents = pu::denoise(c, p, latents, timesteps, embeds, generators, hooks);

  // 8. Decode.
  return pu::finish(c, p, latents, generators);
}

}  // namespace diffuse
