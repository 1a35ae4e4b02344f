// diffusers/schedulers/scheduling_edm_euler.py (v0.31)
#include "diffuse/schedulers/scheduling_edm_euler.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kOwner = "EDMEulerScheduler";
}  // namespace

EDMEulerSchedulerConfig EDMEulerSchedulerConfig::from_json(const nlohmann::json& config) {
  EDMEulerSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("sigma_min", c.sigma_min);
  r.get("sigma_max", c.sigma_max);
  r.get("sigma_data", c.sigma_data);
  r.get("sigma_schedule", c.sigma_schedule);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("prediction_type", c.prediction_type);
  r.get("rho", c.rho);
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.finish();
  return c;
}

nlohmann::json EDMEulerSchedulerConfig::to_json() const {
  return {{"sigma_min", sigma_min},
          {"sigma_max", sigma_max},
          {"sigma_data", sigma_data},
          {"sigma_schedule", sigma_schedule},
          {"num_train_timesteps", num_train_timesteps},
          {"prediction_type", prediction_type},
          {"rho", rho},
          {"final_sigmas_type", final_sigmas_type}};
}

EDMEulerScheduler::EDMEulerScheduler(EDMEulerSchedulerConfig config) : config_(std::move(config)) {
  const EDMEulerSchedulerConfig& c = config_;
  DIFFUSE_CHECK(c.sigma_schedule == "karras" || c.sigma_schedule == "exponential", kOwner,
                ": Wrong value for provided for `sigma_schedule='", c.sigma_schedule,
                "'` (expected 'karras' or 'exponential')");
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "v_prediction", kOwner,
                ": Prediction type ", c.prediction_type,
                " is not supported (expected 'epsilon' or 'v_prediction')");
  DIFFUSE_CHECK(c.final_sigmas_type == "zero" || c.final_sigmas_type == "sigma_min", kOwner,
                ": `final_sigmas_type` must be one of 'zero', or 'sigma_min', but got ",
                c.final_sigmas_type);
  DIFFUSE_CHECK(c.sigma_min > 0 && c.sigma_max > 0 && c.rho > 0 && c.sigma_data > 0, kOwner,
                ": sigma_min, sigma_max, sigma_data and rho must be positive");
  DIFFUSE_CHECK(c.num_train_timesteps >= 1 && c.num_train_timesteps < 100000000, kOwner,
                ": num_train_timesteps must be a positive count, got ", c.num_train_timesteps);
  // __init__: the schedule over num_train_timesteps, before any set_timesteps.
  set_schedule(compute_sigmas(c.num_train_timesteps));
}

std::vector<float> EDMEulerScheduler::compute_sigmas(int64_t n) const {
  const EDMEulerSchedulerConfig& c = config_;
  const std::vector<float> ramp = torch_linspace_f32(0, 1, n);
  std::vector<float> sigmas(ramp.size());
  if (c.sigma_schedule == "karras") {
    // _compute_karras_sigmas on the float32 ramp: (max^(1/rho) + ramp * (min^(1/rho) -
    // max^(1/rho))) ^ rho, Python-float constants applied to a float32 tensor.
    const double min_inv_rho = std::pow(c.sigma_min, 1 / c.rho);
    const double max_inv_rho = std::pow(c.sigma_max, 1 / c.rho);
    const float span = static_cast<float>(min_inv_rho - max_inv_rho);
    const float base = static_cast<float>(max_inv_rho);
    const float rho = static_cast<float>(c.rho);
    for (std::size_t i = 0; i < ramp.size(); ++i) {
      const float v = base + ramp[i] * span;
      sigmas[i] = static_cast<float>(std::pow(static_cast<double>(v), static_cast<double>(rho)));
    }
  } else {
    // _compute_exponential_sigmas (k-diffusion): exp(linspace(log min, log max, n)), flipped.
    const std::vector<float> lin =
        torch_linspace_f32(std::log(c.sigma_min), std::log(c.sigma_max), n);
    for (std::size_t i = 0; i < lin.size(); ++i) sigmas[lin.size() - 1 - i] = std::exp(lin[i]);
  }
  return sigmas;
}

void EDMEulerScheduler::set_schedule(const std::vector<float>& sigmas) {
  timesteps_.resize(sigmas.size());
  sigmas_.resize(sigmas.size() + 1);
  for (std::size_t i = 0; i < sigmas.size(); ++i) {
    // precondition_noise: c_noise = 0.25 * log(sigma) in float32.
    timesteps_[i] = 0.25f * std::log(sigmas[i]);
    sigmas_[i] = sigmas[i];
  }
  sigmas_.back() =
      config_.final_sigmas_type == "sigma_min" && !sigmas.empty() ? sigmas.back() : 0.0;
  step_index_.reset();
  begin_index_.reset();
}

void EDMEulerScheduler::set_timesteps(const SetTimestepsArgs& args) {
  DIFFUSE_CHECK(!args.timesteps && !args.sigmas && !args.mu && !args.strength, kOwner,
                ".set_timesteps: takes only num_inference_steps (no custom timesteps, sigmas, "
                "mu or strength)");
  DIFFUSE_CHECK(args.num_inference_steps.has_value() && *args.num_inference_steps >= 1 &&
                    *args.num_inference_steps < 100000000,
                kOwner, ".set_timesteps: num_inference_steps must be a positive count");
  num_inference_steps_ = *args.num_inference_steps;
  set_schedule(compute_sigmas(*num_inference_steps_));
}

std::optional<double> EDMEulerScheduler::init_noise_sigma() const {
  return std::sqrt(config_.sigma_max * config_.sigma_max + 1);
}

void EDMEulerScheduler::init_step_index(double timestep) {
  if (step_index_) return;
  step_index_ = begin_index_
                    ? *begin_index_
                    : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kOwner));
  DIFFUSE_CHECK(*step_index_ >= 0 && *step_index_ < static_cast<int64_t>(timesteps_.size()), kOwner,
                ": begin index ", *step_index_, " is outside the schedule of ", timesteps_.size(),
                " timesteps");
}

Tensor EDMEulerScheduler::scale_model_input(const Tensor& sample, double timestep) {
  DIFFUSE_CHECK(sample.defined() && is_floating(sample.dtype()), kOwner,
                ".scale_model_input: expected a floating-point sample");
  init_step_index(timestep);
  const float sigma = static_cast<float>(sigmas_[static_cast<std::size_t>(*step_index_)]);
  // precondition_inputs: c_in = 1 / (sigma ** 2 + sigma_data ** 2) ** 0.5 in float32.
  const float sd2 = static_cast<float>(config_.sigma_data * config_.sigma_data);
  const float c_in = 1.0f / std::sqrt(sigma * sigma + sd2);
  const DType s = sample.dtype();
  std::vector<double> x = values(sample);
  for (double& v : x) v = round_to(s, v * c_in);
  return from_values(x, sample.shape(), s);
}

SchedulerOutput EDMEulerScheduler::step(const Tensor& model_output, double timestep,
                                        const Tensor& sample, const StepArgs& args) {
  check_step_inputs(model_output, sample, kOwner);
  init_step_index(timestep);
  const auto i = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(i + 1 < sigmas_.size(), kOwner, ".step: called more often than there are ",
                "timesteps; call set_timesteps again");

  const DType m = model_output.dtype();
  const std::vector<double> mo = values(model_output);
  // sample = sample.to(torch.float32)
  std::vector<double> x = values(sample);
  for (double& v : x) v = f32(v);
  DType x_dtype = DType::f32;
  const std::size_t size = x.size();

  const float sigma = static_cast<float>(sigmas_[i]);
  const bool churn_on =
      static_cast<float>(args.s_tmin) <= sigma && sigma <= static_cast<float>(args.s_tmax);
  const double gamma = churn_on ? std::min(args.s_churn / static_cast<double>(sigmas_.size() - 1),
                                           std::sqrt(2.0) - 1)
                                : 0.0;
  const float sigma_hat = sigma * static_cast<float>(gamma + 1);
  if (gamma > 0) {
    const Tensor noise = noise_like(args, model_output.shape(), m, kOwner);
    const std::vector<double> z = values(noise);
    const double s_noise = scalar_in(m, args.s_noise);
    const float scale = std::sqrt(sigma_hat * sigma_hat - sigma * sigma);
    const DType nd = promote(x_dtype, m);
    for (std::size_t k = 0; k < size; ++k) {
      const double eps = round_to(m, z[k] * s_noise);
      x[k] = round_to(nd, x[k] + round_to(m, eps * scale));
    }
    x_dtype = nd;
  }

  // precondition_outputs(sample, model_output, sigma_hat) in float32 coefficients; c_skip is a
  // Python float divided by a tensor, which torch computes as reciprocal(tensor) * float.
  const float sd = static_cast<float>(config_.sigma_data);
  const float sd2 = static_cast<float>(config_.sigma_data * config_.sigma_data);
  const float denom = sigma_hat * sigma_hat + sd2;
  const float c_skip = (1.0f / denom) * sd2;
  float c_out = sigma_hat * sd / std::sqrt(denom);
  if (config_.prediction_type == "v_prediction") c_out = -sigma_hat * sd / std::sqrt(denom);
  const DType den_dtype = promote(x_dtype, m);
  const DType deriv_dtype = promote(x_dtype, den_dtype);
  const float dt = static_cast<float>(sigmas_[i + 1]) - sigma_hat;
  const DType out_dtype = promote(x_dtype, deriv_dtype);
  std::vector<double> denoised(size);
  std::vector<double> prev(size);
  for (std::size_t k = 0; k < size; ++k) {
    denoised[k] =
        round_to(den_dtype, round_to(x_dtype, c_skip * x[k]) + round_to(m, c_out * mo[k]));
    const double derivative =
        round_to(deriv_dtype, round_to(deriv_dtype, x[k] - denoised[k]) / sigma_hat);
    // prev_sample = sample + derivative * dt, then cast to model_output's dtype
    prev[k] = round_to(m, round_to(out_dtype, x[k] + round_to(deriv_dtype, derivative * dt)));
  }
  ++*step_index_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), m);
  out.pred_original_sample = from_values(denoised, sample.shape(), den_dtype);
  return out;
}

Tensor EDMEulerScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                    const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.dim() >= 1 &&
                    original.shape() == noise.shape(),
                kOwner, ".add_noise: original and noise must be defined tensors of one shape");
  const DType s = original.dtype();
  const int64_t batch = original.size(0);
  const std::vector<double> ts = timesteps_per_item(timesteps, batch, kOwner);
  const std::vector<double> x = values(original);
  const std::vector<double> z = values(noise);
  const int64_t per_item = batch > 0 ? original.numel() / batch : 0;
  std::vector<double> out(x.size());
  for (int64_t b = 0; b < batch; ++b) {
    // begin_index unset: look each timestep up; else the current (or begin) index.
    std::size_t idx;
    if (!begin_index_) {
      idx = index_for_timestep(ts[static_cast<std::size_t>(b)], timesteps_, kOwner);
    } else {
      idx = static_cast<std::size_t>(step_index_ ? *step_index_ : *begin_index_);
    }
    DIFFUSE_CHECK(idx < sigmas_.size(), kOwner, ".add_noise: index ", idx,
                  " is outside the schedule");
    const double sigma = round_to(s, sigmas_[idx]);
    for (int64_t k = b * per_item; k < (b + 1) * per_item; ++k) {
      const auto j = static_cast<std::size_t>(k);
      out[j] = round_to(s, x[j] + round_to(s, z[j] * sigma));
    }
  }
  return from_values(out, original.shape(), s);
}

namespace schedulers {

std::unique_ptr<Scheduler> make_edm_euler_scheduler(const nlohmann::json& config) {
  return std::make_unique<EDMEulerScheduler>(EDMEulerSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
