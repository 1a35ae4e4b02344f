#include "src/pipelines/pipeline_utils.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <span>

#include "diffuse/core/log.h"
#include "diffuse/ops.h"

namespace diffuse::pipeline_utils {

Generators::Generators(const std::vector<uint64_t>& seeds, int64_t batch) : seeds_(seeds) {
  if (seeds_.empty()) {
    std::random_device rd;
    seeds_.push_back((static_cast<uint64_t>(rd()) << 32 | rd()) & ((uint64_t{1} << 53) - 1));
  }
  DIFFUSE_CHECK(seeds_.size() == 1 || static_cast<int64_t>(seeds_.size()) == batch,
                "You have passed a list of ", seeds_.size(),
                " seeds, but requested an effective batch size of ", batch,
                ". Make sure the batch size matches the length of the seeds.");
  for (const uint64_t s : seeds_) generators_.emplace_back(s);
}

Tensor Generators::randn(const Shape& shape) {
  return randn_tensor(shape, std::span<Generator>(generators_));
}

Tensor Generators::randn_leading(const Shape& shape) {
  if (generators_.size() <= 1 || shape.empty()) return randn(shape);
  DIFFUSE_CHECK(static_cast<std::size_t>(shape[0]) <= generators_.size(), "a batch of ", shape[0],
                " needs as many generators, got ", generators_.size());
  return randn_tensor(shape,
                      std::span<Generator>(generators_).first(static_cast<std::size_t>(shape[0])));
}

NoiseSource Generators::noise() {
  return [this](const Shape& shape, DType dtype) {
    return randn_tensor(shape, std::span<Generator>(generators_), dtype);
  };
}

void check_inputs(const StableDiffusionParams& p, int64_t height, int64_t width) {
  DIFFUSE_CHECK(height > 0 && width > 0 && height % 8 == 0 && width % 8 == 0,
                "`height` and `width` have to be divisible by 8 but are ", height, " and ", width,
                ".");
  DIFFUSE_CHECK(p.num_inference_steps > 0 || p.timesteps || p.sigmas,
                "num_inference_steps must be positive, got ", p.num_inference_steps);
  DIFFUSE_CHECK(!(p.timesteps && p.sigmas),
                "Only one of `timesteps` or `sigmas` can be passed. Please choose one to set "
                "custom values");
  DIFFUSE_CHECK(p.num_images_per_prompt >= 1, "num_images_per_prompt must be at least 1, got ",
                p.num_images_per_prompt);
  DIFFUSE_CHECK(!(p.prompt_embeds.defined() && !p.prompt.empty()),
                "Cannot forward both `prompt` and `prompt_embeds`. Please make sure to only "
                "forward one of the two.");
  DIFFUSE_CHECK(!(p.negative_prompt && p.negative_prompt_embeds.defined()),
                "Cannot forward both `negative_prompt` and `negative_prompt_embeds`.");
  DIFFUSE_CHECK(!p.clip_skip || *p.clip_skip >= 0, "clip_skip must be non-negative");
  DIFFUSE_CHECK(std::isfinite(p.guidance_scale) && std::isfinite(p.guidance_rescale),
                "guidance_scale and guidance_rescale must be finite");
}

Tensor repeat_batch(const Tensor& x, int64_t n) {
  if (n == 1) return x;
  return ops::concat(std::vector<Tensor>(static_cast<std::size_t>(n), x), 0);
}

Tensor prepare_latents(const Scheduler& scheduler, const Tensor& latents, const Shape& shape,
                       Generators& generators) {
  Tensor x;
  if (latents.defined()) {
    DIFFUSE_CHECK(latents.shape() == shape, "Unexpected latents shape, got ",
                  shape_str(latents.shape()), ", expected ", shape_str(shape));
    x = latents.to(DType::f32);
  } else {
    x = generators.randn(shape);
  }
  return ops::mul(x, scheduler.init_noise_sigma().value_or(1.0));
}

void retrieve_timesteps(Scheduler& scheduler, const StableDiffusionParams& p) {
  SetTimestepsArgs a;
  if (p.timesteps) {
    a.timesteps = p.timesteps;
  } else if (p.sigmas) {
    a.sigmas = p.sigmas;
  } else {
    a.num_inference_steps = p.num_inference_steps;
  }
  scheduler.set_timesteps(a);
}

std::vector<double> img2img_timesteps(Scheduler& scheduler, int64_t num_inference_steps,
                                      double strength) {
  DIFFUSE_CHECK(strength >= 0.0 && strength <= 1.0,
                "The value of strength should be in [0.0, 1.0] but is ", strength);
  // diffusers get_timesteps: int(num_inference_steps * strength) steps of the tail.
  const auto init_timestep =
      std::min(static_cast<int64_t>(static_cast<double>(num_inference_steps) * strength),
               num_inference_steps);
  const int64_t t_start = std::max<int64_t>(num_inference_steps - init_timestep, 0);
  const auto& all = scheduler.timesteps();
  const auto begin = static_cast<std::size_t>(t_start * scheduler.order());
  DIFFUSE_CHECK(begin < all.size(),
                "After adjusting the num_inference_steps by strength parameter: ", strength,
                ", the number of pipeline steps is ", num_inference_steps - t_start,
                " which is < 1 and not appropriate for this pipeline.");
  scheduler.set_begin_index(static_cast<int64_t>(begin));
  return {all.begin() + static_cast<std::ptrdiff_t>(begin), all.end()};
}

Tensor preprocess_image(const Tensor& image, int64_t height, int64_t width, const char* what) {
  Tensor x = image;
  if (x.dim() == 3) x = x.unsqueeze(0);
  DIFFUSE_CHECK(x.dim() == 4 && x.size(3) == 3, what, " must be NHWC [N, H, W, 3] in [0, 1], got ",
                shape_str(image.shape()));
  DIFFUSE_CHECK(x.size(1) == height && x.size(2) == width, what, " is ", x.size(2), "x", x.size(1),
                " but the pipeline runs at ", width, "x", height, "; resize it first");
  // [0, 1] -> [-1, 1], NHWC -> NCHW.
  return ops::sub(ops::mul(x.to(DType::f32), 2.0), 1.0).permute({0, 3, 1, 2}).contiguous();
}

Tensor postprocess_image(const Tensor& image) {
  const Tensor x = ops::clamp(ops::add(ops::mul(image, 0.5), 0.5), 0.0, 1.0);
  return x.permute({0, 2, 3, 1}).contiguous();
}

namespace {

Tensor channel_column(const std::vector<double>& v, int64_t channels) {
  DIFFUSE_CHECK(static_cast<int64_t>(v.size()) == channels,
                "the VAE's latents_mean/latents_std have ", v.size(),
                " channels but the latents have ", channels);
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), {1, channels, 1, 1});
}

}  // namespace

Tensor encode_vae_image(const AutoencoderKL& vae, const Tensor& image, Generators& generators,
                        bool latents_mean) {
  const auto posterior = vae.encode(image);
  const Tensor eps = generators.randn_leading(posterior.mean.shape());
  const Tensor z = posterior.sample(eps);
  const auto& cfg = vae.config();
  if (latents_mean && cfg.latents_mean && cfg.latents_std) {
    const int64_t ch = z.size(1);
    return ops::div(
        ops::mul(ops::sub(z, channel_column(*cfg.latents_mean, ch)), cfg.scaling_factor),
        channel_column(*cfg.latents_std, ch));
  }
  return ops::mul(z, cfg.scaling_factor);
}

namespace {

Tensor time_ids_row(const std::vector<double>& v) {
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()),
                             {1, static_cast<int64_t>(v.size())});
}

// (passed, expected) add_embedding input widths.
std::pair<int64_t, int64_t> add_embed_dims(const UNet2DConditionModel& unet, int64_t projection_dim,
                                           std::size_t n_ids) {
  const auto& cfg = unet.config();
  DIFFUSE_CHECK(cfg.addition_time_embed_dim && cfg.projection_class_embeddings_input_dim,
                "the UNet has no SDXL added conditioning (addition_embed_type \"text_time\" with "
                "addition_time_embed_dim and projection_class_embeddings_input_dim)");
  return {*cfg.addition_time_embed_dim * static_cast<int64_t>(n_ids) + projection_dim,
          *cfg.projection_class_embeddings_input_dim};
}

}  // namespace

Tensor xl_time_ids(const UNet2DConditionModel& unet, int64_t projection_dim, SizeHW original_size,
                   SizeHW crops_coords_top_left, SizeHW target_size) {
  const std::vector<double> ids{
      static_cast<double>(original_size[0]),         static_cast<double>(original_size[1]),
      static_cast<double>(crops_coords_top_left[0]), static_cast<double>(crops_coords_top_left[1]),
      static_cast<double>(target_size[0]),           static_cast<double>(target_size[1])};
  const auto [passed, expected] = add_embed_dims(unet, projection_dim, ids.size());
  DIFFUSE_CHECK(passed == expected, "Model expects an added time embedding vector of length ",
                expected, ", but a vector of ", passed,
                " was created. The model has an incorrect config. Please check "
                "`unet.config.time_embedding_type` and `text_encoder_2.config.projection_dim`.");
  return time_ids_row(ids);
}

XLTimeIds xl_img2img_time_ids(const UNet2DConditionModel& unet, int64_t projection_dim,
                              bool requires_aesthetics_score, const XLTimeIdsArgs& a) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  std::vector<double> pos{d(a.original_size[0]), d(a.original_size[1]),
                          d(a.crops_coords_top_left[0]), d(a.crops_coords_top_left[1])};
  std::vector<double> neg;
  if (requires_aesthetics_score) {
    pos.push_back(a.aesthetic_score);
    neg = {d(a.negative_original_size[0]), d(a.negative_original_size[1]),
           d(a.negative_crops_coords_top_left[0]), d(a.negative_crops_coords_top_left[1]),
           a.negative_aesthetic_score};
  } else {
    pos.insert(pos.end(), {d(a.target_size[0]), d(a.target_size[1])});
    neg = {d(a.negative_original_size[0]), d(a.negative_original_size[1]),
           d(a.crops_coords_top_left[0]),  d(a.crops_coords_top_left[1]),
           d(a.negative_target_size[0]),   d(a.negative_target_size[1])};
  }
  const auto [passed, expected] = add_embed_dims(unet, projection_dim, pos.size());
  const int64_t time_dim = *unet.config().addition_time_embed_dim;
  DIFFUSE_CHECK(!(expected > passed && expected - passed == time_dim),
                "Model expects an added time embedding vector of length ", expected,
                ", but a vector of ", passed,
                " was created. Please make sure to enable `requires_aesthetics_score` with "
                "`pipe.register_to_config(requires_aesthetics_score=True)` to make sure "
                "`aesthetic_score` ",
                a.aesthetic_score, " and `negative_aesthetic_score` ", a.negative_aesthetic_score,
                " is correctly used by the model.");
  DIFFUSE_CHECK(!(expected < passed && passed - expected == time_dim),
                "Model expects an added time embedding vector of length ", expected,
                ", but a vector of ", passed,
                " was created. Please make sure to disable `requires_aesthetics_score` with "
                "`pipe.register_to_config(requires_aesthetics_score=False)` to make sure "
                "`target_size` (",
                a.target_size[0], ", ", a.target_size[1], ") is correctly used by the model.");
  DIFFUSE_CHECK(passed == expected, "Model expects an added time embedding vector of length ",
                expected, ", but a vector of ", passed,
                " was created. The model has an incorrect config. Please check "
                "`unet.config.time_embedding_type` and `text_encoder_2.config.projection_dim`.");
  return {time_ids_row(pos), time_ids_row(neg)};
}

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

InpaintState prepare_inpaint(const AutoencoderKL& vae, Scheduler& scheduler, const InpaintArgs& a,
                             Generators& generators) {
  const int64_t batch = a.shape[0];
  const double init_sigma = scheduler.init_noise_sigma().value_or(1.0);
  InpaintState s;
  // prepare_latents: the image latents when blending, or when noise is added to them.
  const bool need_image_latents =
      a.regular_unet || (!a.latents.defined() && !a.is_strength_max) || !a.add_noise;
  if (need_image_latents) {
    if (a.image_latents.defined()) {
      s.image_latents = a.image_latents.to(DType::f32);
    } else {
      DIFFUSE_CHECK(a.init_image.defined(), "inpainting needs `image` or `image_latents`");
      s.image_latents = encode_vae_image(vae, a.init_image, generators);
    }
    DIFFUSE_CHECK(batch % s.image_latents.size(0) == 0, "Cannot duplicate `image` of batch size ",
                  s.image_latents.size(0), " to ", batch, " text prompts.");
    s.image_latents = repeat_batch(s.image_latents, batch / s.image_latents.size(0));
  }
  if (a.latents.defined() && a.add_noise) {
    DIFFUSE_CHECK(a.latents.shape() == a.shape, "Unexpected latents shape, got ",
                  shape_str(a.latents.shape()), ", expected ", shape_str(a.shape));
    s.noise = a.latents.to(DType::f32);
    s.latents = ops::mul(s.noise, init_sigma);
  } else {
    s.noise = generators.randn(a.shape);
    if (!a.add_noise)
      s.latents = s.image_latents;
    else if (a.is_strength_max)
      s.latents = ops::mul(s.noise, init_sigma);
    else
      s.latents = scheduler.add_noise(s.image_latents, s.noise, {a.first_timestep});
  }

  // prepare_mask_latents: the mask at latent size and the masked image's latents (encoded with
  // their own draw; also for 4-channel UNets, which do not read them, as diffusers does).
  s.mask = ops::upsample_nearest(a.mask_condition, Shape{a.shape[2], a.shape[3]});
  Tensor masked = a.masked_image_latents;
  if (masked.defined()) {
    masked = masked.to(DType::f32);
  } else if (a.init_image.defined()) {
    const Tensor masked_image = ops::mul(
        a.init_image, ops::sub(Tensor::full({1}, 1.0), a.mask_condition));  // init * (mask < 0.5)
    masked = encode_vae_image(vae, masked_image, generators);
  }
  DIFFUSE_CHECK(batch % s.mask.size(0) == 0,
                "The passed mask and the required batch size don't "
                "match. Masks are supposed to be duplicated to a total batch size of ",
                batch, ", but ", s.mask.size(0), " masks were passed.");
  s.mask = repeat_batch(s.mask, batch / s.mask.size(0));
  s.mask_in = a.cfg ? ops::concat({s.mask, s.mask}, 0) : s.mask;
  if (masked.defined()) {
    DIFFUSE_CHECK(batch % masked.size(0) == 0,
                  "The passed images and the required batch size "
                  "don't match. Images are supposed to be duplicated to a total batch size of ",
                  batch, ", but ", masked.size(0), " images were passed.");
    masked = repeat_batch(masked, batch / masked.size(0));
    s.masked_in = a.cfg ? ops::concat({masked, masked}, 0) : masked;
  }
  return s;
}

DenoiseHooks inpaint_hooks(const InpaintState& state, Scheduler& scheduler,
                           const std::vector<double>& timesteps, bool regular_unet) {
  DenoiseHooks hooks;
  if (!regular_unet) {
    DIFFUSE_CHECK(state.masked_in.defined(),
                  "a 9-channel inpainting UNet needs the masked image (pass `image` or "
                  "`masked_image_latents`)");
    hooks.extend_input = [&state](const Tensor& x) {
      return ops::concat({x, state.mask_in, state.masked_in}, 1);
    };
  } else {
    hooks.after_step = [&state, &scheduler, &timesteps](std::size_t i, Tensor& l) {
      Tensor proper = state.image_latents;
      if (i + 1 < timesteps.size())
        proper = scheduler.add_noise(proper, state.noise, {timesteps[i + 1]});
      l = ops::add(ops::mul(ops::sub(Tensor::full({1}, 1.0), state.mask), proper),
                   ops::mul(state.mask, l));
    };
  }
  return hooks;
}

UNet2DConditionInputs xl_img2img_added_conditioning(const StableDiffusionXLComponents& c,
                                                    const StableDiffusionXLParams& p,
                                                    const XLPromptEmbeds& embeds, int64_t height,
                                                    int64_t width, double aesthetic_score,
                                                    double negative_aesthetic_score, bool cfg) {
  XLTimeIdsArgs ids;
  ids.original_size = p.original_size.value_or(SizeHW{height, width});
  ids.crops_coords_top_left = p.crops_coords_top_left;
  ids.target_size = p.target_size.value_or(SizeHW{height, width});
  ids.aesthetic_score = aesthetic_score;
  ids.negative_aesthetic_score = negative_aesthetic_score;
  ids.negative_original_size = p.negative_original_size.value_or(ids.original_size);
  ids.negative_crops_coords_top_left = p.negative_crops_coords_top_left.value_or(SizeHW{0, 0});
  ids.negative_target_size = p.negative_target_size.value_or(ids.target_size);
  const auto time_ids = xl_img2img_time_ids(*c.unet, c.text_encoder_2->config().projection_dim,
                                            c.requires_aesthetics_score, ids);
  const int64_t batch = p.num_images_per_prompt;
  UNet2DConditionInputs added;
  if (cfg) {
    added.text_embeds =
        ops::concat({embeds.negative_pooled_prompt_embeds, embeds.pooled_prompt_embeds}, 0);
    added.time_ids = ops::concat(
        {repeat_batch(time_ids.negative, batch), repeat_batch(time_ids.positive, batch)}, 0);
  } else {
    added.text_embeds = embeds.pooled_prompt_embeds;
    added.time_ids = repeat_batch(time_ids.positive, batch);
  }
  return added;
}

XLImageInput xl_image_input(const StableDiffusionXLParams& p, const Tensor& image,
                            const Tensor& image_latents, int64_t vae_scale_factor,
                            int64_t latent_channels, const char* pipeline) {
  DIFFUSE_CHECK(image.defined() != image_latents.defined(), pipeline,
                ": pass exactly one of `image` and `image_latents`");
  XLImageInput in;
  if (image.defined()) {
    in.image = image.dim() == 3 ? image.unsqueeze(0) : image;
    DIFFUSE_CHECK(in.image.dim() == 4, pipeline, ": image must be NHWC, got ",
                  shape_str(image.shape()));
    in.height = p.height.value_or(in.image.size(1) / vae_scale_factor * vae_scale_factor);
    in.width = p.width.value_or(in.image.size(2) / vae_scale_factor * vae_scale_factor);
  } else {
    DIFFUSE_CHECK(image_latents.dim() == 4 && image_latents.size(1) == latent_channels,
                  "image_latents must be [N, ", latent_channels, ", h, w], got ",
                  shape_str(image_latents.shape()));
    in.height = image_latents.size(2) * vae_scale_factor;
    in.width = image_latents.size(3) * vae_scale_factor;
  }
  return in;
}

void check_xl_img2img_inputs(const StableDiffusionXLParams& p, int64_t height, int64_t width,
                             double strength, std::optional<double> denoising_start) {
  check_inputs(p, height, width);
  DIFFUSE_CHECK(strength >= 0.0 && strength <= 1.0,
                "The value of strength should in [0.0, 1.0] but is ", strength);
  DIFFUSE_CHECK(!(denoising_value_valid(denoising_start) &&
                  denoising_value_valid(p.denoising_end) && *denoising_start >= *p.denoising_end),
                "`denoising_start`: ", denoising_start.value_or(0),
                " cannot be larger than or equal to `denoising_end`: ", p.denoising_end.value_or(0),
                " when using type float.");
}

bool denoising_value_valid(std::optional<double> value) {
  return value && *value > 0.0 && *value < 1.0;
}

namespace {

// int(round(num_train_timesteps - fraction * num_train_timesteps)) with Python's round.
double discrete_timestep_cutoff(const Scheduler& scheduler, double fraction) {
  const auto config = scheduler.config();
  const double n =
      config.contains("num_train_timesteps") && config["num_train_timesteps"].is_number()
          ? config["num_train_timesteps"].get<double>()
          : 1000.0;
  return std::nearbyint(n - fraction * n);  // default rounding mode: half to even
}

}  // namespace

std::vector<double> cut_denoising_end(const Scheduler& scheduler, std::vector<double> timesteps,
                                      std::optional<double> denoising_end) {
  if (!denoising_value_valid(denoising_end)) return timesteps;
  const double cutoff = discrete_timestep_cutoff(scheduler, *denoising_end);
  const auto keep =
      std::count_if(timesteps.begin(), timesteps.end(), [&](double t) { return t >= cutoff; });
  timesteps.resize(static_cast<std::size_t>(keep));
  DIFFUSE_CHECK(!timesteps.empty(), "denoising_end ", *denoising_end, " leaves no timestep to run");
  return timesteps;
}

std::vector<double> xl_img2img_timesteps(Scheduler& scheduler, int64_t num_inference_steps,
                                         double strength, std::optional<double> denoising_start) {
  if (!denoising_value_valid(denoising_start))
    return img2img_timesteps(scheduler, num_inference_steps, strength);
  const double cutoff = discrete_timestep_cutoff(scheduler, *denoising_start);
  const auto& all = scheduler.timesteps();
  auto n = std::count_if(all.begin(), all.end(), [&](double t) { return t < cutoff; });
  // A 2nd-order scheduler's timesteps come in pairs; an even count would start mid-pair.
  if (scheduler.order() == 2 && n % 2 == 0) n += 1;
  n = std::min<std::ptrdiff_t>(n, static_cast<std::ptrdiff_t>(all.size()));
  DIFFUSE_CHECK(n > 0, "denoising_start ", *denoising_start, " leaves no timestep to run");
  const auto t_start = static_cast<int64_t>(all.size()) - n;
  scheduler.set_begin_index(t_start);
  return {all.begin() + t_start, all.end()};
}

namespace {

// diffusers rescale_noise_cfg (Common Diffusion Noise Schedules and Sample Steps are Flawed,
// §3.4): match the per-sample std of the guided prediction to the text prediction's.
Tensor rescale_noise_cfg(const Tensor& noise_cfg, const Tensor& noise_pred_text,
                         double guidance_rescale) {
  const int64_t b = noise_cfg.size(0);
  const auto stdev = [&](const Tensor& x) {
    return ops::sqrt(ops::var(x.reshape({b, -1}), 1, 1, true)).reshape({b, 1, 1, 1});
  };
  const Tensor rescaled = ops::mul(noise_cfg, ops::div(stdev(noise_pred_text), stdev(noise_cfg)));
  return ops::add(ops::mul(rescaled, guidance_rescale),
                  ops::mul(noise_cfg, 1.0 - guidance_rescale));
}

// diffusers get_guidance_scale_embedding (guidance-distilled UNets with time_cond_proj_dim).
Tensor guidance_scale_embedding(double w, int64_t batch, int64_t dim) {
  const Tensor ws = Tensor::full({batch}, (w - 1.0) * 1000.0, DType::f32);
  const int64_t half = dim / 2;
  std::vector<float> freqs(static_cast<std::size_t>(half));
  const float step = std::log(10000.0f) / static_cast<float>(half - 1);
  for (int64_t i = 0; i < half; ++i) freqs[i] = std::exp(static_cast<float>(i) * -step);
  const Tensor arg = ops::mul(ws.unsqueeze(1), Tensor::from_vector(freqs, {1, half}));
  Tensor emb = ops::concat({ops::sin(arg), ops::cos(arg)}, 1);
  if (dim % 2 == 1) emb = ops::pad(emb, {0, 1});
  return emb;
}

}  // namespace

Tensor denoise(UNet2DConditionModel& unet, Scheduler& scheduler, const StableDiffusionParams& p,
               Tensor latents, const std::vector<double>& timesteps, const PromptEmbeds& embeds,
               Generators& generators, const DenoiseHooks& hooks, UNet2DConditionInputs inputs) {
  const auto& ucfg = unet.config();
  const bool cfg = p.guidance_scale > 1.0 && !ucfg.time_cond_proj_dim;
  const Tensor context = cfg ? ops::concat({embeds.negative_prompt_embeds, embeds.prompt_embeds}, 0)
                             : embeds.prompt_embeds;
  if (ucfg.time_cond_proj_dim)
    inputs.timestep_cond =
        guidance_scale_embedding(p.guidance_scale, latents.size(0), *ucfg.time_cond_proj_dim);
  StepArgs step_args;
  step_args.eta = p.eta;
  step_args.noise = generators.noise();

  for (std::size_t i = 0; i < timesteps.size(); ++i) {
    const double t = timesteps[i];
    // 1. Model input: CFG batch, scheduler scaling, extra channels.
    Tensor input = cfg ? ops::concat({latents, latents}, 0) : latents;
    input = scheduler.scale_model_input(input, t);
    if (hooks.extend_input) input = hooks.extend_input(input);
    // 2. Noise prediction and guidance.
    Tensor noise_pred = unet.forward(input, Tensor::from_vector<double>({t}, {}), context, inputs);
    if (cfg) {
      const auto parts = noise_pred.chunk(2, 0);
      const Tensor& uncond = parts[0];
      const Tensor& text = parts[1];
      noise_pred = ops::add(uncond, ops::mul(ops::sub(text, uncond), p.guidance_scale));
      if (p.guidance_rescale > 0.0)
        noise_pred = rescale_noise_cfg(noise_pred, text, p.guidance_rescale);
    }
    // 3. Scheduler step.
    latents = scheduler.step(noise_pred, t, latents, step_args).prev_sample;
    if (hooks.after_step) hooks.after_step(i, latents);
    if (p.callback) {
      StepInfo info{static_cast<int64_t>(i), static_cast<int64_t>(timesteps.size()), t, &latents};
      DIFFUSE_CHECK(p.callback(info), "cancelled by the step callback at step ", i + 1, " of ",
                    timesteps.size());
    }
  }
  return latents;
}

PipelineOutput finish(const AutoencoderKL& vae, const StableDiffusionParams& p,
                      const Tensor& latents, const Generators& generators) {
  PipelineOutput out;
  out.latents = latents;
  out.seeds = generators.seeds();
  if (p.output_type == OutputType::image) {
    const auto& vcfg = vae.config();
    Tensor z;
    if (vcfg.latents_mean && vcfg.latents_std) {
      const int64_t ch = latents.size(1);
      z = ops::add(
          ops::div(ops::mul(latents, channel_column(*vcfg.latents_std, ch)), vcfg.scaling_factor),
          channel_column(*vcfg.latents_mean, ch));
    } else {
      z = ops::div(latents, vcfg.scaling_factor);
    }
    out.images = postprocess_image(vae.decode(z));
  }
  return out;
}

std::optional<std::string> component_class(const nlohmann::json& index, const std::string& name,
                                           const std::filesystem::path& where) {
  if (!index.contains(name)) return std::nullopt;
  const auto& e = index[name];
  DIFFUSE_CHECK(e.is_array() && e.size() == 2, where.string(), ": model_index.json entry '", name,
                "' is not a [library, class] pair");
  if (e[1].is_null()) return std::nullopt;
  DIFFUSE_CHECK(e[1].is_string(), where.string(), ": model_index.json entry '", name,
                "' has no class name");
  return e[1].get<std::string>();
}

}  // namespace diffuse::pipeline_utils
