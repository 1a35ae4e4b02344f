// diffusers/schedulers/scheduling_lcm.py (v0.31)
#include "diffuse/schedulers/scheduling_lcm.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/core/log.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kOwner = "LCMScheduler";
}  // namespace

LCMSchedulerConfig LCMSchedulerConfig::from_json(const nlohmann::json& config) {
  LCMSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("original_inference_steps", c.original_inference_steps);
  r.get("clip_sample", c.clip_sample);
  r.get("clip_sample_range", c.clip_sample_range);
  r.get("set_alpha_to_one", c.set_alpha_to_one);
  r.get("steps_offset", c.steps_offset);
  r.get("prediction_type", c.prediction_type);
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("sample_max_value", c.sample_max_value);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("timestep_scaling", c.timestep_scaling);
  r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  r.finish();
  return c;
}

nlohmann::json LCMSchedulerConfig::to_json() const {
  return {{"num_train_timesteps", num_train_timesteps},
          {"beta_start", beta_start},
          {"beta_end", beta_end},
          {"beta_schedule", beta_schedule},
          {"trained_betas", trained_betas ? nlohmann::json(*trained_betas) : nlohmann::json()},
          {"original_inference_steps", original_inference_steps},
          {"clip_sample", clip_sample},
          {"clip_sample_range", clip_sample_range},
          {"set_alpha_to_one", set_alpha_to_one},
          {"steps_offset", steps_offset},
          {"prediction_type", prediction_type},
          {"thresholding", thresholding},
          {"dynamic_thresholding_ratio", dynamic_thresholding_ratio},
          {"sample_max_value", sample_max_value},
          {"timestep_spacing", timestep_spacing},
          {"timestep_scaling", timestep_scaling},
          {"rescale_betas_zero_snr", rescale_betas_zero_snr}};
}

LCMScheduler::LCMScheduler(LCMSchedulerConfig config) : config_(std::move(config)) {
  const LCMSchedulerConfig& c = config_;
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "sample" ||
                    c.prediction_type == "v_prediction",
                kOwner, ": prediction_type given as ", c.prediction_type,
                " must be one of `epsilon`, `sample` or `v_prediction` for `LCMScheduler`.");
  std::vector<float> betas = make_betas(kOwner, c.beta_schedule, c.num_train_timesteps,
                                        c.beta_start, c.beta_end, c.trained_betas);
  if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  alphas_cumprod_ = cumprod_f32(one_minus(betas));
  final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  // Before set_timesteps: every training timestep, descending.
  for (int64_t t = c.num_train_timesteps - 1; t >= 0; --t)
    timesteps_.push_back(static_cast<double>(t));
}

void LCMScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const LCMSchedulerConfig& c = config_;
  DIFFUSE_CHECK(!args.sigmas && !args.mu, kOwner, ".set_timesteps: takes no sigmas or mu");
  DIFFUSE_CHECK(args.num_inference_steps.has_value() || args.timesteps.has_value(), kOwner,
                ".set_timesteps: Must pass exactly one of `num_inference_steps` or "
                "`custom_timesteps`.");
  DIFFUSE_CHECK(
      !(args.num_inference_steps.has_value() && args.timesteps.has_value()), kOwner,
      ".set_timesteps: Can only pass one of `num_inference_steps` or `custom_timesteps`.");
  const double strength = args.strength.value_or(1.0);
  DIFFUSE_CHECK(std::isfinite(strength) && strength >= 0 && strength <= 1, kOwner,
                ".set_timesteps: strength must be in [0, 1], got ", strength);
  const int64_t num_train = c.num_train_timesteps;

  // 1. The LCM training/distillation schedule: k - 1, 2k - 1, ..., with k = T // original.
  const int64_t original_steps = c.original_inference_steps;
  DIFFUSE_CHECK(original_steps >= 1 && original_steps <= num_train, kOwner,
                ".set_timesteps: `original_steps`: ", original_steps,
                " must be in [1, num_train_timesteps = ", num_train, "]");
  const int64_t k = num_train / original_steps;
  const auto origin_len = static_cast<int64_t>(static_cast<double>(original_steps) * strength);
  std::vector<int64_t> origin;
  for (int64_t i = 1; i <= origin_len; ++i) origin.push_back(i * k - 1);

  std::vector<int64_t> ts;
  if (args.timesteps) {
    // 2.1 Custom timestep schedule.
    const std::vector<double>& custom = *args.timesteps;
    DIFFUSE_CHECK(!custom.empty(), kOwner, ".set_timesteps: custom timesteps are empty");
    for (std::size_t i = 0; i < custom.size(); ++i) {
      DIFFUSE_CHECK(custom[i] >= 0 && custom[i] < static_cast<double>(num_train), kOwner,
                    ".set_timesteps: `timesteps` must be in [0, num_train_timesteps = ", num_train,
                    "), got ", custom[i]);
      DIFFUSE_CHECK(i == 0 || custom[i] < custom[i - 1], kOwner,
                    ".set_timesteps: `custom_timesteps` must be in descending order.");
    }
    std::vector<double> off_schedule;
    for (std::size_t i = 1; i < custom.size(); ++i) {
      if (std::find(origin.begin(), origin.end(), static_cast<int64_t>(custom[i])) ==
              origin.end() ||
          custom[i] != std::floor(custom[i])) {
        off_schedule.push_back(custom[i]);
      }
    }
    if (strength == 1.0 && custom[0] != static_cast<double>(num_train - 1)) {
      log_warn(kOwner, ": the first timestep on the custom timestep schedule is ", custom[0],
               ", not num_train_timesteps - 1 = ", num_train - 1,
               ". You may get unexpected results when using this timestep schedule.");
    }
    if (!off_schedule.empty()) {
      log_warn(kOwner, ": the custom timestep schedule contains ", off_schedule.size(),
               " timesteps which are not on the original training/distillation timestep "
               "schedule. You may get unexpected results when using this timestep schedule.");
    }
    if (static_cast<int64_t>(custom.size()) > original_steps) {
      log_warn(kOwner, ": the custom timestep schedule has ", custom.size(),
               " timesteps, more than the training schedule's ", original_steps,
               ". You may get unexpected results.");
    }
    const auto n = static_cast<int64_t>(custom.size());
    num_inference_steps_ = n;
    // Strength as in StableDiffusionImg2ImgPipeline.get_timesteps (order 1).
    const int64_t init_timestep =
        std::min(static_cast<int64_t>(static_cast<double>(n) * strength), n);
    const int64_t t_start = std::max<int64_t>(n - init_timestep, 0);
    for (int64_t i = t_start; i < n; ++i) {
      ts.push_back(static_cast<int64_t>(custom[static_cast<std::size_t>(i)]));
    }
  } else {
    // 2.2 The standard LCM schedule: evenly spaced indices into the reversed origin schedule.
    const int64_t n = *args.num_inference_steps;
    DIFFUSE_CHECK(n >= 1 && n <= num_train, kOwner, ".set_timesteps: `num_inference_steps`: ", n,
                  " must be in [1, num_train_timesteps = ", num_train, "]");
    DIFFUSE_CHECK(static_cast<int64_t>(origin.size()) / n >= 1, kOwner,
                  ".set_timesteps: The combination of `original_steps x strength`: ",
                  original_steps, " x ", strength, " is smaller than `num_inference_steps`: ", n,
                  ". Make sure to either reduce `num_inference_steps` to a value smaller than ",
                  origin_len, " or increase `strength` to a value higher than ",
                  static_cast<double>(n) / static_cast<double>(original_steps), ".");
    DIFFUSE_CHECK(n <= original_steps, kOwner, ".set_timesteps: `num_inference_steps`: ", n,
                  " cannot be larger than `original_inference_steps`: ", original_steps);
    num_inference_steps_ = n;
    const std::vector<int64_t> rev = reversed(origin);
    // np.floor(np.linspace(0, len, num=n, endpoint=False))
    const double step = static_cast<double>(rev.size()) / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto j = static_cast<std::size_t>(std::floor(static_cast<double>(i) * step));
      ts.push_back(rev[j]);
    }
  }
  timesteps_.assign(ts.begin(), ts.end());
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput LCMScheduler::step(const Tensor& model_output, double timestep,
                                   const Tensor& sample, const StepArgs& args) {
  const LCMSchedulerConfig& c = config_;
  check_step_inputs(model_output, sample, kOwner);
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kOwner,
                ".step: Number of inference steps is 'None', you need to run 'set_timesteps' "
                "after creating the scheduler");
  if (!step_index_) {
    step_index_ = begin_index_
                      ? *begin_index_
                      : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kOwner));
  }
  const int64_t num_train = c.num_train_timesteps;
  const int64_t t = train_timestep_index(timestep, num_train, kOwner);

  // 1. The previous timestep: the next entry of the schedule, or this one at the end.
  const auto prev_index = static_cast<std::size_t>(*step_index_ + 1);
  const double prev_t = prev_index < timesteps_.size() ? timesteps_[prev_index] : timestep;

  // 2. alphas and betas (float32 0-dim tensors).
  const float a_t = alphas_cumprod_[static_cast<std::size_t>(t)];
  const float a_prev = prev_t >= 0 ? alphas_cumprod_[static_cast<std::size_t>(
                                         train_timestep_index(prev_t, num_train, kOwner))]
                                   : final_alpha_cumprod_;
  const float b_t = 1.0f - a_t;
  const float b_prev = 1.0f - a_prev;

  // 3. Boundary-condition scalings, float32 (an int64 timestep tensor times a Python float);
  // sigma_data = 0.5. c_skip is a Python float over a tensor: reciprocal(tensor) * 0.25.
  const float scaled = static_cast<float>(t) * static_cast<float>(c.timestep_scaling);
  const float denom = scaled * scaled + 0.25f;
  const float c_skip = (1.0f / denom) * 0.25f;
  const float c_out = scaled / std::sqrt(denom);

  // 4. Predicted x0 for the parameterization.
  const DType s = sample.dtype();
  const DType m = model_output.dtype();
  const std::vector<double> x = values(sample);
  const std::vector<double> mo = values(model_output);
  const std::size_t size = x.size();
  std::vector<double> x0(size);
  DType x0_dtype = promote(s, m);
  const float sa = std::sqrt(a_t);
  const float sb = std::sqrt(b_t);
  if (c.prediction_type == "epsilon") {
    for (std::size_t k = 0; k < size; ++k) {
      x0[k] = round_to(x0_dtype, round_to(x0_dtype, x[k] - round_to(m, sb * mo[k])) / sa);
    }
  } else if (c.prediction_type == "sample") {
    x0 = mo;
    x0_dtype = m;
  } else {  // v_prediction
    for (std::size_t k = 0; k < size; ++k) {
      x0[k] = round_to(x0_dtype, round_to(s, sa * x[k]) - round_to(m, sb * mo[k]));
    }
  }

  // 5. Clip or threshold x0.
  if (c.thresholding) {
    x0 = values(threshold_sample(from_values(x0, sample.shape(), x0_dtype),
                                 c.dynamic_thresholding_ratio, c.sample_max_value));
  } else if (c.clip_sample) {
    const double lo = scalar_in(x0_dtype, -c.clip_sample_range);
    const double hi = scalar_in(x0_dtype, c.clip_sample_range);
    for (double& v : x0) v = std::clamp(v, lo, hi);
  }

  // 6. Denoise with the boundary conditions.
  const DType den_dtype = promote(x0_dtype, s);
  std::vector<double> denoised(size);
  for (std::size_t k = 0; k < size; ++k) {
    denoised[k] =
        round_to(den_dtype, round_to(x0_dtype, c_out * x0[k]) + round_to(s, c_skip * x[k]));
  }

  // 7. Re-noise to the previous timestep, except on the last step of the schedule.
  std::vector<double> prev = denoised;
  if (*step_index_ != *num_inference_steps_ - 1) {
    const std::vector<double> z = values(noise_like(args, model_output.shape(), den_dtype, kOwner));
    const float sap = std::sqrt(a_prev);
    const float sbp = std::sqrt(b_prev);
    for (std::size_t k = 0; k < size; ++k) {
      prev[k] = round_to(den_dtype,
                         round_to(den_dtype, sap * denoised[k]) + round_to(den_dtype, sbp * z[k]));
    }
  }
  ++*step_index_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), den_dtype);
  out.pred_original_sample = from_values(denoised, sample.shape(), den_dtype);
  return out;
}

Tensor LCMScheduler::add_noise(const Tensor& original, const Tensor& noise,
                               const std::vector<double>& timesteps) {
  return add_noise_alphas_cumprod(alphas_cumprod_, original, noise, timesteps, kOwner);
}

namespace schedulers {

std::unique_ptr<Scheduler> make_lcm_scheduler(const nlohmann::json& config) {
  return std::make_unique<LCMScheduler>(LCMSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
