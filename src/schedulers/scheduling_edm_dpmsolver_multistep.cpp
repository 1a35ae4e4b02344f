// diffusers v0.31 schedulers/scheduling_edm_dpmsolver_multistep.py
#include "diffuse/schedulers/scheduling_edm_dpmsolver_multistep.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/multistep_utils.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kName = "EDMDPMSolverMultistepScheduler";
}  // namespace

EDMDPMSolverMultistepSchedulerConfig EDMDPMSolverMultistepSchedulerConfig::from_json(
    const nlohmann::json& config) {
  EDMDPMSolverMultistepSchedulerConfig c;
  ConfigReader r(config, kName);
  r.get("sigma_min", c.sigma_min);
  r.get("sigma_max", c.sigma_max);
  r.get("sigma_data", c.sigma_data);
  r.get("sigma_schedule", c.sigma_schedule);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("prediction_type", c.prediction_type);
  r.get("rho", c.rho);
  r.get("solver_order", c.solver_order);
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("sample_max_value", c.sample_max_value);
  r.get("algorithm_type", c.algorithm_type);
  r.get("solver_type", c.solver_type);
  r.get("lower_order_final", c.lower_order_final);
  r.get("euler_at_final", c.euler_at_final);
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.finish();
  return c;
}

nlohmann::json EDMDPMSolverMultistepSchedulerConfig::to_json() const {
  nlohmann::json j;
  j["sigma_min"] = sigma_min;
  j["sigma_max"] = sigma_max;
  j["sigma_data"] = sigma_data;
  j["sigma_schedule"] = sigma_schedule;
  j["num_train_timesteps"] = num_train_timesteps;
  j["prediction_type"] = prediction_type;
  j["rho"] = rho;
  j["solver_order"] = solver_order;
  j["thresholding"] = thresholding;
  j["dynamic_thresholding_ratio"] = dynamic_thresholding_ratio;
  j["sample_max_value"] = sample_max_value;
  j["algorithm_type"] = algorithm_type;
  j["solver_type"] = solver_type;
  j["lower_order_final"] = lower_order_final;
  j["euler_at_final"] = euler_at_final;
  j["final_sigmas_type"] = final_sigmas_type;
  return j;
}

EDMDPMSolverMultistepScheduler::EDMDPMSolverMultistepScheduler(
    EDMDPMSolverMultistepSchedulerConfig config)
    : config_(std::move(config)) {
  auto& c = config_;
  if (c.algorithm_type == "deis") c.algorithm_type = "dpmsolver++";
  DIFFUSE_CHECK(c.algorithm_type == "dpmsolver++" || c.algorithm_type == "sde-dpmsolver++", kName,
                ": algorithm_type '", c.algorithm_type,
                "' is not implemented (expected dpmsolver++ or sde-dpmsolver++)");
  if (c.solver_type == "logrho" || c.solver_type == "bh1" || c.solver_type == "bh2") {
    c.solver_type = "midpoint";
  }
  DIFFUSE_CHECK(c.solver_type == "midpoint" || c.solver_type == "heun", kName, ": solver_type '",
                c.solver_type, "' is not implemented (expected midpoint or heun)");
  DIFFUSE_CHECK(c.sigma_schedule == "karras" || c.sigma_schedule == "exponential", kName,
                ": sigma_schedule must be 'karras' or 'exponential', got '", c.sigma_schedule, "'");
  DIFFUSE_CHECK(c.sigma_min > 0 && c.sigma_max > c.sigma_min && c.rho > 0, kName,
                ": expected 0 < sigma_min < sigma_max and rho > 0");
  check_solver_order(kName, c.solver_order);
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
}

std::optional<std::vector<double>> EDMDPMSolverMultistepScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

std::optional<double> EDMDPMSolverMultistepScheduler::init_noise_sigma() const {
  return std::sqrt(config_.sigma_max * config_.sigma_max + 1);
}

void EDMDPMSolverMultistepScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(
      args.num_inference_steps && !args.timesteps && !args.sigmas && !args.mu && !args.strength,
      kName, ".set_timesteps: expected num_inference_steps only");
  const int64_t n = *args.num_inference_steps;
  DIFFUSE_CHECK(n >= 1 && n <= 100000000, kName,
                ".set_timesteps: num_inference_steps must be a positive count, got ", n);
  const std::vector<float> ramp = torch_linspace_f32(0, 1, n);
  std::vector<float> sigmas(ramp.size());
  if (c.sigma_schedule == "karras") {
    // (max^(1/rho) + ramp * (min^(1/rho) - max^(1/rho))) ** rho on a float32 ramp.
    const double min_inv_rho = std::pow(c.sigma_min, 1 / c.rho);
    const double max_inv_rho = std::pow(c.sigma_max, 1 / c.rho);
    const float span = static_cast<float>(min_inv_rho - max_inv_rho);
    for (std::size_t i = 0; i < ramp.size(); ++i) {
      const float base = static_cast<float>(max_inv_rho) + ramp[i] * span;
      sigmas[i] = std::pow(base, static_cast<float>(c.rho));
    }
  } else {
    // torch.linspace(log(sigma_min), log(sigma_max), n).exp().flip(0)
    const std::vector<float> lin =
        torch_linspace_f32(std::log(c.sigma_min), std::log(c.sigma_max), n);
    for (std::size_t i = 0; i < lin.size(); ++i) sigmas[lin.size() - 1 - i] = std::exp(lin[i]);
  }
  timesteps_.resize(sigmas.size());
  for (std::size_t i = 0; i < sigmas.size(); ++i) timesteps_[i] = 0.25f * std::log(sigmas[i]);
  if (c.final_sigmas_type == "sigma_min") {
    sigmas.push_back(static_cast<float>(c.sigma_min));
  } else {
    DIFFUSE_CHECK(c.final_sigmas_type == "zero", kName,
                  ": final_sigmas_type must be 'zero' or 'sigma_min', got '", c.final_sigmas_type,
                  "'");
    sigmas.push_back(0.0f);
  }
  sigmas_ = std::move(sigmas);
  num_inference_steps_ = n;
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
  lower_order_nums_ = 0;
  step_index_.reset();
  begin_index_.reset();
}

void EDMDPMSolverMultistepScheduler::init_step_index(double timestep) {
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ": number of inference steps is unset; call set_timesteps first");
  step_index_ = begin_index_ ? *begin_index_
                             : static_cast<int64_t>(dpm_index_for_timestep(timestep, timesteps_));
}

Tensor EDMDPMSolverMultistepScheduler::scale_model_input(const Tensor& sample, double timestep) {
  if (!step_index_) init_step_index(timestep);
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(i < sigmas_.size(), kName, ".scale_model_input: step index out of range");
  const float sigma = sigmas_[i];
  const float sd2 = static_cast<float>(config_.sigma_data * config_.sigma_data);
  const float c_in = 1.0f / std::sqrt(sigma * sigma + sd2);
  const Values x = load(sample);
  return store(c_in * x, sample.shape());
}

SchedulerOutput EDMDPMSolverMultistepScheduler::step(const Tensor& model_output, double timestep,
                                                     const Tensor& sample_in,
                                                     const StepArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ".step: number of inference steps is unset; call set_timesteps first");
  check_step_inputs(model_output, sample_in, kName);
  if (!step_index_) init_step_index(timestep);
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const std::size_t n = timesteps_.size();
  DIFFUSE_CHECK(i < n, kName, ".step: called more times than there are timesteps (", n, ")");
  const bool lower_order_final =
      i == n - 1 &&
      (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == "zero");
  const bool lower_order_second = i + 2 == n && c.lower_order_final && n < 15;

  // convert_model_output = precondition_outputs (+ thresholding)
  const float sigma = sigmas_[i];
  const float sd2 = static_cast<float>(c.sigma_data * c.sigma_data);
  const float c_skip = sd2 / (sigma * sigma + sd2);
  float c_out;
  if (c.prediction_type == "epsilon") {
    c_out = sigma * static_cast<float>(c.sigma_data) / std::sqrt(sigma * sigma + sd2);
  } else if (c.prediction_type == "v_prediction") {
    c_out = -sigma * static_cast<float>(c.sigma_data) / std::sqrt(sigma * sigma + sd2);
  } else {
    DIFFUSE_FAIL(kName, ": prediction type ", c.prediction_type,
                 " is not supported (expected epsilon or v_prediction)");
  }
  const Values sample = load(sample_in);
  Values denoised = c_skip * sample + c_out * load(model_output);
  if (c.thresholding) {
    denoised = load(threshold_sample(store(denoised, sample_in.shape()),
                                     c.dynamic_thresholding_ratio, c.sample_max_value));
  }
  for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k)
    model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = store(denoised, sample_in.shape());

  Values noise;
  if (c.algorithm_type == "sde-dpmsolver++") {
    noise = load(draw_noise(args, model_output.shape(), denoised.dtype, kName));
  }
  int order = 3;
  if (c.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final) {
    order = 1;
  } else if (c.solver_order == 2 || lower_order_nums_ < 2 || lower_order_second) {
    order = 2;
  }
  // Inputs are pre-scaled before the denoiser, so alpha_t = 1 and sigma_t = sigma.
  const auto edm = [](float s) { return AlphaSigma{1.0f, s}; };
  const std::size_t k = model_outputs_.size();
  const Values m1 = order >= 2 ? load(model_outputs_[k - 2]) : Values{};
  const Values m2 = order >= 3 ? load(model_outputs_[k - 3]) : Values{};
  const Values x_t = dpm_multistep_update(
      order, c.algorithm_type, c.solver_type == "midpoint", edm(sigmas_[i + 1]), edm(sigmas_[i]),
      order >= 2 ? edm(sigmas_[i - 1]) : AlphaSigma{},
      order >= 3 ? edm(sigmas_[i - 2]) : AlphaSigma{}, sample, denoised, m1, m2, noise, kName);
  if (lower_order_nums_ < c.solver_order) ++lower_order_nums_;
  step_index_ = *step_index_ + 1;
  SchedulerOutput out;
  out.prev_sample = store(x_t, sample_in.shape());
  return out;
}

Tensor EDMDPMSolverMultistepScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                                 const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape() &&
                    original.dim() >= 1,
                kName, ".add_noise: original and noise must be tensors of one shape");
  const auto idx =
      add_noise_indices(timesteps, original.size(0), timesteps_, begin_index_, step_index_, kName);
  const Values x = load(original);
  const Values z = load(noise);
  const DType d = promote(x.dtype, z.dtype);
  const std::size_t each = idx.empty() ? 0 : x.v.size() / idx.size();
  Values out{std::vector<double>(x.v.size()), d};
  for (std::size_t b = 0; b < idx.size(); ++b) {
    DIFFUSE_CHECK(idx[b] < sigmas_.size(), kName, ".add_noise: step index out of range");
    const double sigma = round_to(x.dtype, sigmas_[idx[b]]);  // sigmas.to(original.dtype)
    for (std::size_t e = b * each; e < (b + 1) * each; ++e) {
      out.v[e] = round_to(d, x.v[e] + round_to(promote(z.dtype, x.dtype), z.v[e] * sigma));
    }
  }
  return store(out, original.shape());
}

namespace schedulers {
std::unique_ptr<Scheduler> make_edm_dpmsolver_multistep_scheduler(const nlohmann::json& config) {
  return std::make_unique<EDMDPMSolverMultistepScheduler>(
      EDMDPMSolverMultistepSchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
