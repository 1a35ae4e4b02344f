#include "src/pipelines/pipeline_utils.h"

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

Tensor encode_vae_image(const AutoencoderKL& vae, const Tensor& image, Generators& generators) {
  const auto posterior = vae.encode(image);
  const Tensor eps = generators.randn(posterior.mean.shape());
  return ops::mul(posterior.sample(eps), vae.config().scaling_factor);
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

Tensor denoise(StableDiffusionComponents& c, const StableDiffusionParams& p, Tensor latents,
               const std::vector<double>& timesteps, const PromptEmbeds& embeds,
               Generators& generators, const DenoiseHooks& hooks) {
  const auto& ucfg = c.unet->config();
  const bool cfg = p.guidance_scale > 1.0 && !ucfg.time_cond_proj_dim;
  const Tensor context = cfg ? ops::concat({embeds.negative_prompt_embeds, embeds.prompt_embeds}, 0)
                             : embeds.prompt_embeds;
  UNet2DConditionInputs inputs;
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
    input = c.scheduler->scale_model_input(input, t);
    if (hooks.extend_input) input = hooks.extend_input(input);
    // 2. Noise prediction and guidance.
    Tensor noise_pred =
        c.unet->forward(input, Tensor::from_vector<double>({t}, {}), context, inputs);
    if (cfg) {
      const auto parts = noise_pred.chunk(2, 0);
      const Tensor& uncond = parts[0];
      const Tensor& text = parts[1];
      noise_pred = ops::add(uncond, ops::mul(ops::sub(text, uncond), p.guidance_scale));
      if (p.guidance_rescale > 0.0)
        noise_pred = rescale_noise_cfg(noise_pred, text, p.guidance_rescale);
    }
    // 3. Scheduler step.
    latents = c.scheduler->step(noise_pred, t, latents, step_args).prev_sample;
    if (hooks.after_step) hooks.after_step(i, latents);
    if (p.callback) {
      StepInfo info{static_cast<int64_t>(i), static_cast<int64_t>(timesteps.size()), t, &latents};
      DIFFUSE_CHECK(p.callback(info), "cancelled by the step callback at step ", i + 1, " of ",
                    timesteps.size());
    }
  }
  return latents;
}

PipelineOutput finish(const StableDiffusionComponents& c, const StableDiffusionParams& p,
                      const Tensor& latents, const Generators& generators) {
  PipelineOutput out;
  out.latents = latents;
  out.seeds = generators.seeds();
  if (p.output_type == OutputType::image) {
    const auto& vcfg = c.vae->config();
    const Tensor decoded = c.vae->decode(ops::div(latents, vcfg.scaling_factor));
    out.images = postprocess_image(decoded);
  }
  return out;
}

}  // namespace diffuse::pipeline_utils
