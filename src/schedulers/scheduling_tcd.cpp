// diffusers/schedulers/scheduling_tcd.py (v0.31)
#include "diffuse/schedulers/scheduling_tcd.h"

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
constexpr const char* kOwner = "TCDScheduler";
constexpr double kDefaultEta = 0.3;  // TCDScheduler.step's default gamma
}  // namespace

TCDSchedulerConfig TCDSchedulerConfig::from_json(const nlohmann::json& config) {
  TCDSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("original_inference_steps", c.original_inference_steps);  // null: every timestep
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

nlohmann::json TCDSchedulerConfig::to_json() const {
  return {{"num_train_timesteps", num_train_timesteps},
          {"beta_start", beta_start},
          {"beta_end", beta_end},
          {"beta_schedule", beta_schedule},
          {"trained_betas", trained_betas ? nlohmann::json(*trained_betas) : nlohmann::json()},
          {"original_inference_steps",
           original_inference_steps ? nlohmann::json(*original_inference_steps) : nlohmann::json()},
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

TCDScheduler::TCDScheduler(TCDSchedulerConfig config) : config_(std::move(config)) {
  const TCDSchedulerConfig& c = config_;
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "sample" ||
                    c.prediction_type == "v_prediction",
                kOwner, ": prediction_type given as ", c.prediction_type,
                " must be one of `epsilon`, `sample` or `v_prediction` for `TCDScheduler`.");
  std::vector<float> betas = make_betas(kOwner, c.beta_schedule, c.num_train_timesteps,
                                        c.beta_start, c.beta_end, c.trained_betas);
  if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  alphas_cumprod_ = cumprod_f32(one_minus(betas));
  final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  for (int64_t t = c.num_train_timesteps - 1; t >= 0; --t)
    timesteps_.push_back(static_cast<double>(t));
}

void TCDScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const TCDSchedulerConfig& c = config_;
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

  // 1. The TCD training/distillation schedule.
  std::vector<int64_t> origin;
  const std::optional<int64_t> original_steps = c.original_inference_steps;
  if (original_steps) {
    DIFFUSE_CHECK(*original_steps >= 1 && *original_steps <= num_train, kOwner,
                  ".set_timesteps: `original_steps`: ", *original_steps,
                  " must be in [1, num_train_timesteps = ", num_train, "]");
    const int64_t k = num_train / *original_steps;
    const auto len = static_cast<int64_t>(static_cast<double>(*original_steps) * strength);
    for (int64_t i = 1; i <= len; ++i) origin.push_back(i * k - 1);
  } else {
    const auto len = static_cast<int64_t>(static_cast<double>(num_train) * strength);
    for (int64_t i = 0; i < len; ++i) origin.push_back(i);
  }
  const int64_t schedule_len = original_steps.value_or(num_train);

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
    std::size_t off_schedule = 0;
    for (std::size_t i = 1; i < custom.size(); ++i) {
      if (std::find(origin.begin(), origin.end(), static_cast<int64_t>(custom[i])) ==
              origin.end() ||
          custom[i] != std::floor(custom[i])) {
        ++off_schedule;
      }
    }
    if (strength == 1.0 && custom[0] != static_cast<double>(num_train - 1)) {
      log_warn(kOwner, ": the first timestep on the custom timestep schedule is ", custom[0],
               ", not num_train_timesteps - 1 = ", num_train - 1,
               ". You may get unexpected results when using this timestep schedule.");
    }
    if (off_schedule > 0) {
      log_warn(kOwner, ": the custom timestep schedule contains ", off_schedule,
               " timesteps which are not on the original training/distillation timestep "
               "schedule. You may get unexpected results when using this timestep schedule.");
    }
    if (static_cast<int64_t>(custom.size()) > schedule_len) {
      log_warn(kOwner, ": the custom timestep schedule has ", custom.size(),
               " timesteps, more than the training schedule's ", schedule_len,
               ". You may get unexpected results.");
    }
    const auto n = static_cast<int64_t>(custom.size());
    num_inference_steps_ = n;
    const int64_t init_timestep =
        std::min(static_cast<int64_t>(static_cast<double>(n) * strength), n);
    const int64_t t_start = std::max<int64_t>(n - init_timestep, 0);
    for (int64_t i = t_start; i < n; ++i) {
      ts.push_back(static_cast<int64_t>(custom[static_cast<std::size_t>(i)]));
    }
  } else {
    // 2.2 The standard TCD schedule: evenly spaced indices into the reversed origin schedule.
    const int64_t n = *args.num_inference_steps;
    DIFFUSE_CHECK(n >= 1 && n <= num_train, kOwner, ".set_timesteps: `num_inference_steps`: ", n,
                  " must be in [1, num_train_timesteps = ", num_train, "]");
    if (original_steps) {
      DIFFUSE_CHECK(static_cast<int64_t>(origin.size()) / n >= 1, kOwner,
                    ".set_timesteps: The combination of `original_steps x strength`: ",
                    *original_steps, " x ", strength, " is smaller than `num_inference_steps`: ", n,
                    ". Reduce `num_inference_steps` or increase `strength`.");
    }
    DIFFUSE_CHECK(n <= schedule_len, kOwner, ".set_timesteps: `num_inference_steps`: ", n,
                  " cannot be larger than the distillation schedule's ", schedule_len,
                  " timesteps");
    DIFFUSE_CHECK(!origin.empty(), kOwner, ".set_timesteps: strength ", strength,
                  " leaves no timesteps");
    num_inference_steps_ = n;
    const std::vector<int64_t> rev = reversed(origin);
    const double step = static_cast<double>(rev.size()) / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto j = static_cast<std::size_t>(std::floor(static_cast<double>(i) * step));
      ts.push_back(rev[std::min(j, rev.size() - 1)]);
    }
  }
  timesteps_.assign(ts.begin(), ts.end());
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput TCDScheduler::step(const Tensor& model_output, double timestep,
                                   const Tensor& sample, const StepArgs& args) {
  const TCDSchedulerConfig& c = config_;
  check_step_inputs(model_output, sample, kOwner);
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kOwner,
                ".step: Number of inference steps is 'None', you need to run 'set_timesteps' "
                "after creating the scheduler");
  const double eta = args.eta.value_or(kDefaultEta);
  DIFFUSE_CHECK(eta >= 0 && eta <= 1.0, kOwner, ".step: gamma (eta) must be in [0, 1], got ", eta);
  if (!step_index_) {
    step_index_ = begin_index_
                      ? *begin_index_
                      : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kOwner));
  }
  const int64_t num_train = c.num_train_timesteps;
  const int64_t t = train_timestep_index(timestep, num_train, kOwner);

  // 1. Previous timestep (0 after the last), and the intermediate s = floor((1 - eta) * prev)
  // computed on a float32 tensor.
  const auto prev_index = static_cast<std::size_t>(*step_index_ + 1);
  const int64_t prev_t = prev_index < timesteps_.size()
                             ? train_timestep_index(timesteps_[prev_index], num_train, kOwner)
                             : 0;
  const float s_f = std::floor(static_cast<float>(1 - eta) * static_cast<float>(prev_t));
  const int64_t timestep_s = train_timestep_index(s_f, num_train, kOwner);

  // 2. alphas and betas (float32 0-dim tensors).
  const float a_t = alphas_cumprod_[static_cast<std::size_t>(t)];
  const float b_t = 1.0f - a_t;
  const float a_prev =
      prev_t >= 0 ? alphas_cumprod_[static_cast<std::size_t>(prev_t)] : final_alpha_cumprod_;
  const float a_s = alphas_cumprod_[static_cast<std::size_t>(timestep_s)];
  const float b_s = 1.0f - a_s;

  // 3. x0, epsilon and the noised sample x_s for the parameterization.
  const DType s = sample.dtype();
  const DType m = model_output.dtype();
  const DType d = promote(s, m);
  const std::vector<double> x = values(sample);
  const std::vector<double> mo = values(model_output);
  const std::size_t size = x.size();
  const float sa = std::sqrt(a_t);
  const float sb = std::sqrt(b_t);
  const float sas = std::sqrt(a_s);
  const float sbs = std::sqrt(b_s);
  std::vector<double> noised(size);
  for (std::size_t k = 0; k < size; ++k) {
    double x0;
    double eps;
    if (c.prediction_type == "epsilon") {
      x0 = round_to(d, round_to(d, x[k] - round_to(m, sb * mo[k])) / sa);
      eps = mo[k];
    } else if (c.prediction_type == "sample") {
      x0 = mo[k];
      eps = round_to(d, round_to(d, x[k] - round_to(m, sa * x0)) / sb);
    } else {  // v_prediction
      x0 = round_to(d, round_to(s, sa * x[k]) - round_to(m, sb * mo[k]));
      eps = round_to(d, round_to(m, sa * mo[k]) + round_to(s, sb * x[k]));
    }
    noised[k] = round_to(d, round_to(d, sas * x0) + round_to(d, sbs * eps));
  }

  // 4. With eta > 0, re-noise from s to the previous timestep (not on the last step).
  std::vector<double> prev = noised;
  if (eta > 0 && *step_index_ != *num_inference_steps_ - 1) {
    const std::vector<double> z = values(noise_like(args, model_output.shape(), d, kOwner));
    const float ratio = a_prev / a_s;
    const float keep = std::sqrt(ratio);
    const float add = std::sqrt(1.0f - ratio);
    for (std::size_t k = 0; k < size; ++k) {
      prev[k] = round_to(d, round_to(d, keep * noised[k]) + round_to(d, add * z[k]));
    }
  }
  ++*step_index_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), d);
  return out;
}

Tensor TCDScheduler::add_noise(const Tensor& original, const Tensor& noise,
                               const std::vector<double>& timesteps) {
  return add_noise_alphas_cumprod(alphas_cumprod_, original, noise, timesteps, kOwner);
}

namespace schedulers {

std::unique_ptr<Scheduler> make_tcd_scheduler(const nlohmann::json& config) {
  return std::make_unique<TCDScheduler>(TCDSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
