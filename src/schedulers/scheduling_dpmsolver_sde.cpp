// diffusers v0.31 schedulers/scheduling_dpmsolver_sde.py
#include "diffuse/schedulers/scheduling_dpmsolver_sde.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/multistep_utils.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {

constexpr const char* kName = "DPMSolverSDEScheduler";

// k-diffusion's time variable t = -log(sigma) and back, in float32.
float t_fn(float sigma) {
  return -std::log(sigma);
}
float sigma_fn(float t) {
  return std::exp(-t);
}

}  // namespace

DPMSolverSDESchedulerConfig DPMSolverSDESchedulerConfig::from_json(const nlohmann::json& config) {
  DPMSolverSDESchedulerConfig c;
  ConfigReader r(config, kName);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("prediction_type", c.prediction_type);
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_exponential_sigmas", c.use_exponential_sigmas);
  r.get("use_beta_sigmas", c.use_beta_sigmas);
  r.get("noise_sampler_seed", c.noise_sampler_seed);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.finish();
  return c;
}

nlohmann::json DPMSolverSDESchedulerConfig::to_json() const {
  nlohmann::json j;
  j["num_train_timesteps"] = num_train_timesteps;
  j["beta_start"] = beta_start;
  j["beta_end"] = beta_end;
  j["beta_schedule"] = beta_schedule;
  j["trained_betas"] = config_floats(trained_betas);
  j["prediction_type"] = prediction_type;
  j["use_karras_sigmas"] = use_karras_sigmas;
  j["use_exponential_sigmas"] = use_exponential_sigmas;
  j["use_beta_sigmas"] = use_beta_sigmas;
  j["noise_sampler_seed"] =
      noise_sampler_seed ? nlohmann::json(*noise_sampler_seed) : nlohmann::json(nullptr);
  j["timestep_spacing"] = timestep_spacing;
  j["steps_offset"] = steps_offset;
  return j;
}

DPMSolverSDEScheduler::DPMSolverSDEScheduler(DPMSolverSDESchedulerConfig config)
    : config_(std::move(config)) {
  const auto& c = config_;
  check_sigma_schedule_flags(kName, c.use_karras_sigmas, c.use_exponential_sigmas,
                             c.use_beta_sigmas);
  DIFFUSE_CHECK(c.timestep_spacing == "linspace" || c.timestep_spacing == "leading" ||
                    c.timestep_spacing == "trailing",
                kName, ": timestep_spacing '", c.timestep_spacing,
                "' is not supported (expected linspace, leading or trailing)");
  VpSchedule s = make_vp_schedule(kName, c.beta_schedule, c.num_train_timesteps, c.beta_start,
                                  c.beta_end, c.trained_betas, false);
  train_sigmas_ = std::move(s.sigmas);
  log_sigmas_ = std::move(s.log_sigmas);
}

std::optional<std::vector<double>> DPMSolverSDEScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

std::optional<double> DPMSolverSDEScheduler::init_noise_sigma() const {
  if (sigmas_.empty()) return 1.0;
  const float max = *std::max_element(sigmas_.begin(), sigmas_.end());
  if (config_.timestep_spacing == "linspace" || config_.timestep_spacing == "trailing") return max;
  return static_cast<float>(std::sqrt(max * max + 1.0f));
}

void DPMSolverSDEScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(
      args.num_inference_steps && !args.timesteps && !args.sigmas && !args.mu && !args.strength,
      kName, ".set_timesteps: expected num_inference_steps only");
  const int64_t n = *args.num_inference_steps;
  const int64_t T = c.num_train_timesteps;
  DIFFUSE_CHECK(n >= 1 && n <= 100000000, kName,
                ".set_timesteps: num_inference_steps must be a positive count, got ", n);
  std::vector<double> timesteps;
  if (c.timestep_spacing == "linspace") {
    timesteps = reversed(np_linspace(0, static_cast<double>(T - 1), n));
  } else if (c.timestep_spacing == "leading") {
    const int64_t ratio = T / n;
    for (int64_t i = n - 1; i >= 0; --i) {
      timesteps.push_back(static_cast<double>(i * ratio) + static_cast<double>(c.steps_offset));
    }
  } else {
    const double ratio = static_cast<double>(T) / static_cast<double>(n);
    timesteps = np_arange(static_cast<double>(T), 0.0, -ratio);
    for (double& v : timesteps) v = np_round(v) - 1;
  }

  std::vector<double> xp(train_sigmas_.size());
  for (std::size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
  std::vector<double> sigmas = np_interp(timesteps, xp, to_f64(train_sigmas_));
  if (c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas) {
    const double sigma_min = sigmas.back();
    const double sigma_max = sigmas.front();
    if (c.use_karras_sigmas) {
      sigmas = karras_sigmas(sigma_min, sigma_max, n);
    } else if (c.use_exponential_sigmas) {
      sigmas = exponential_sigmas(sigma_min, sigma_max, n);
    } else {
      sigmas = beta_sigmas(sigma_min, sigma_max, n);
    }
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(sigma_to_t(s, log_sigmas_));
  }

  // _second_order_timesteps: the timestep of each log-sigma midpoint.
  std::vector<double> second_order;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double t0 = -std::log(sigmas[i]);
    const double t1 = -std::log(sigmas[i + 1]);
    const double t_proposed = t0 + (t1 - t0) * 0.5;
    second_order.push_back(sigma_to_t(std::exp(-t_proposed), log_sigmas_));
  }

  std::vector<float> s32 = to_f32(sigmas);
  s32.push_back(0.0f);
  sigmas_.clear();
  sigmas_.push_back(s32.front());
  for (std::size_t i = 1; i + 1 < s32.size(); ++i) {
    sigmas_.push_back(s32[i]);
    sigmas_.push_back(s32[i]);
  }
  sigmas_.push_back(s32.back());

  timesteps_.clear();
  timesteps_.push_back(timesteps.front());
  for (std::size_t i = 1; i < timesteps.size(); ++i) {
    timesteps_.push_back(second_order[i - 1]);
    timesteps_.push_back(timesteps[i]);
  }
  num_inference_steps_ = n;
  sample_ = Tensor();
  mid_point_sigma_.reset();
  step_index_.reset();
  begin_index_.reset();
}

void DPMSolverSDEScheduler::init_step_index(double timestep) {
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ": number of inference steps is unset; call set_timesteps first");
  step_index_ = begin_index_
                    ? *begin_index_
                    : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kName));
}

Tensor DPMSolverSDEScheduler::scale_model_input(const Tensor& sample, double timestep) {
  if (!step_index_) init_step_index(timestep);
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(i < sigmas_.size(), kName, ".scale_model_input: step index out of range");
  const float sigma_input = !sample_.defined() ? sigmas_[i] : *mid_point_sigma_;
  return store(load(sample) / std::sqrt(sigma_input * sigma_input + 1.0f), sample.shape());
}

SchedulerOutput DPMSolverSDEScheduler::step(const Tensor& model_output, double timestep,
                                            const Tensor& sample_in, const StepArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ".step: number of inference steps is unset; call set_timesteps first");
  check_step_inputs(model_output, sample_in, kName);
  if (!step_index_) init_step_index(timestep);
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(i + 1 < sigmas_.size(), kName,
                ".step: called more times than there are timesteps (", timesteps_.size(), ")");
  const bool first_order = !sample_.defined();
  const float sigma = first_order ? sigmas_[i] : sigmas_[i - 1];
  const float sigma_next = first_order ? sigmas_[i + 1] : sigmas_[i];

  // The midpoint (in t = -log sigma) and the step size.
  const float t = t_fn(sigma);
  float t_next = t_fn(sigma_next);
  const float delta_time = t_next - t;
  const float t_proposed = t + delta_time * 0.5f;

  // 1. compute the predicted original sample (x_0) from the sigma-scaled predicted noise
  const Values sample = load(sample_in);
  const Values mo = load(model_output);
  const float sigma_input = first_order ? sigma : sigma_fn(t_proposed);
  Values pred;
  if (c.prediction_type == "epsilon") {
    pred = sample - sigma_input * mo;
  } else if (c.prediction_type == "v_prediction") {
    pred = (-sigma_input / std::sqrt(sigma_input * sigma_input + 1.0f)) * mo +
           sample / (sigma_input * sigma_input + 1.0f);
  } else {
    DIFFUSE_FAIL(kName, ": prediction_type '", c.prediction_type,
                 "' is not implemented (expected epsilon or v_prediction; diffusers has no ",
                 "'sample' here either)");
  }

  Values prev;
  if (sigma_next == 0.0f) {
    const Values derivative = (sample - pred) / sigma;
    const float dt = sigma_next - sigma;
    prev = sample + dt * derivative;
  } else {
    Values x = sample;
    if (first_order) {
      t_next = t_proposed;
    } else {
      x = load(sample_);
    }
    const float sigma_from = sigma_fn(t);
    const float sigma_to = sigma_fn(t_next);
    const float up =
        std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                  (sigma_from * sigma_from));
    const float sigma_up = up < sigma_to ? up : sigma_to;  // Python's min(sigma_to, up)
    const float sigma_down = std::sqrt(sigma_to * sigma_to - sigma_up * sigma_up);
    const float ancestral_t = t_fn(sigma_down);
    prev = (sigma_fn(ancestral_t) / sigma_fn(t)) * x - std::expm1(t - ancestral_t) * pred;
    // noise_sampler(sigma_fn(t), sigma_fn(t_next)): a standard-normal draw (see the header).
    const Values noise = load(draw_noise(args, sample_in.shape(), sample_in.dtype(), kName));
    prev = prev + sigma_up * (args.s_noise * noise);
    if (first_order) {
      sample_ = sample_in;  // store for the second-order half
      mid_point_sigma_ = sigma_fn(t_next);
    } else {
      sample_ = Tensor();
      mid_point_sigma_.reset();
    }
  }
  step_index_ = *step_index_ + 1;
  SchedulerOutput out;
  out.prev_sample = store(prev, sample_in.shape());
  out.pred_original_sample = store(pred, sample_in.shape());
  return out;
}

Tensor DPMSolverSDEScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                        const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape() &&
                    original.dim() >= 1,
                kName, ".add_noise: original and noise must be tensors of one shape");
  DIFFUSE_CHECK(!timesteps_.empty(), kName, ".add_noise: call set_timesteps first");
  const std::vector<double> per = timesteps_per_item(timesteps, original.size(0), kName);
  const Values x = load(original);
  const Values z = load(noise);
  const DType d = promote(x.dtype, z.dtype);
  const std::size_t each = per.empty() ? 0 : x.v.size() / per.size();
  Values out{std::vector<double>(x.v.size()), d};
  for (std::size_t b = 0; b < per.size(); ++b) {
    std::size_t idx;
    if (!begin_index_) {
      idx = index_for_timestep(per[b], timesteps_, kName);
    } else if (step_index_) {
      idx = static_cast<std::size_t>(*step_index_);
    } else {
      idx = static_cast<std::size_t>(*begin_index_);
    }
    DIFFUSE_CHECK(idx < sigmas_.size(), kName, ".add_noise: step index out of range");
    const double sigma = round_to(x.dtype, sigmas_[idx]);
    for (std::size_t e = b * each; e < (b + 1) * each; ++e) {
      out.v[e] = round_to(d, x.v[e] + round_to(promote(z.dtype, x.dtype), z.v[e] * sigma));
    }
  }
  return store(out, original.shape());
}

namespace schedulers {
std::unique_ptr<Scheduler> make_dpmsolver_sde_scheduler(const nlohmann::json& config) {
  return std::make_unique<DPMSolverSDEScheduler>(DPMSolverSDESchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
