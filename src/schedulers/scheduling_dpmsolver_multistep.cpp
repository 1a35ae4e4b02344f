// diffusers v0.31 schedulers/scheduling_dpmsolver_multistep.py
#include "diffuse/schedulers/scheduling_dpmsolver_multistep.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/multistep_utils.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kName = "DPMSolverMultistepScheduler";
}  // namespace

DPMSolverMultistepSchedulerConfig DPMSolverMultistepSchedulerConfig::from_json(
    const nlohmann::json& config) {
  DPMSolverMultistepSchedulerConfig c;
  ConfigReader r(config, kName);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("solver_order", c.solver_order);
  r.get("prediction_type", c.prediction_type);
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("sample_max_value", c.sample_max_value);
  r.get("algorithm_type", c.algorithm_type);
  r.get("solver_type", c.solver_type);
  r.get("lower_order_final", c.lower_order_final);
  r.get("euler_at_final", c.euler_at_final);
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_exponential_sigmas", c.use_exponential_sigmas);
  r.get("use_beta_sigmas", c.use_beta_sigmas);
  r.get("use_lu_lambdas", c.use_lu_lambdas);
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.get("lambda_min_clipped", c.lambda_min_clipped);
  r.get("variance_type", c.variance_type);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  r.finish();
  return c;
}

nlohmann::json DPMSolverMultistepSchedulerConfig::to_json() const {
  nlohmann::json j;
  j["num_train_timesteps"] = num_train_timesteps;
  j["beta_start"] = beta_start;
  j["beta_end"] = beta_end;
  j["beta_schedule"] = beta_schedule;
  j["trained_betas"] = config_floats(trained_betas);
  j["solver_order"] = solver_order;
  j["prediction_type"] = prediction_type;
  j["thresholding"] = thresholding;
  j["dynamic_thresholding_ratio"] = dynamic_thresholding_ratio;
  j["sample_max_value"] = sample_max_value;
  j["algorithm_type"] = algorithm_type;
  j["solver_type"] = solver_type;
  j["lower_order_final"] = lower_order_final;
  j["euler_at_final"] = euler_at_final;
  j["use_karras_sigmas"] = use_karras_sigmas;
  j["use_exponential_sigmas"] = use_exponential_sigmas;
  j["use_beta_sigmas"] = use_beta_sigmas;
  j["use_lu_lambdas"] = use_lu_lambdas;
  j["final_sigmas_type"] = final_sigmas_type;
  j["lambda_min_clipped"] = config_float(lambda_min_clipped);
  j["variance_type"] = variance_type ? nlohmann::json(*variance_type) : nlohmann::json(nullptr);
  j["timestep_spacing"] = timestep_spacing;
  j["steps_offset"] = steps_offset;
  j["rescale_betas_zero_snr"] = rescale_betas_zero_snr;
  return j;
}

DPMSolverMultistepScheduler::DPMSolverMultistepScheduler(DPMSolverMultistepSchedulerConfig config)
    : config_(std::move(config)) {
  auto& c = config_;
  check_sigma_schedule_flags(kName, c.use_karras_sigmas, c.use_exponential_sigmas,
                             c.use_beta_sigmas);
  check_solver_order(kName, c.solver_order);
  VpSchedule s = make_vp_schedule(kName, c.beta_schedule, c.num_train_timesteps, c.beta_start,
                                  c.beta_end, c.trained_betas, c.rescale_betas_zero_snr);
  alphas_cumprod_ = std::move(s.alphas_cumprod);
  train_sigmas_ = std::move(s.sigmas);
  log_sigmas_ = std::move(s.log_sigmas);
  lambda_t_ = std::move(s.lambda_t);

  // "deis" and the UniPC/DEIS solver types map onto this scheduler's own (diffusers does this
  // so that configs can be swapped between the multistep solvers).
  if (c.algorithm_type == "deis") c.algorithm_type = "dpmsolver++";
  DIFFUSE_CHECK(c.algorithm_type == "dpmsolver" || c.algorithm_type == "dpmsolver++" ||
                    c.algorithm_type == "sde-dpmsolver" || c.algorithm_type == "sde-dpmsolver++",
                kName, ": algorithm_type '", c.algorithm_type,
                "' is not implemented (expected dpmsolver++, sde-dpmsolver++, dpmsolver or "
                "sde-dpmsolver)");
  if (c.solver_type == "logrho" || c.solver_type == "bh1" || c.solver_type == "bh2") {
    c.solver_type = "midpoint";
  }
  DIFFUSE_CHECK(c.solver_type == "midpoint" || c.solver_type == "heun", kName, ": solver_type '",
                c.solver_type, "' is not implemented (expected midpoint or heun)");
  DIFFUSE_CHECK(c.algorithm_type == "dpmsolver++" || c.algorithm_type == "sde-dpmsolver++" ||
                    c.final_sigmas_type != "zero",
                kName, ": final_sigmas_type 'zero' is not supported for algorithm_type '",
                c.algorithm_type, "'; choose 'sigma_min' instead");
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "sample" ||
                    c.prediction_type == "v_prediction",
                kName, ": prediction_type '", c.prediction_type,
                "' must be one of epsilon, sample or v_prediction");
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
}

std::optional<std::vector<double>> DPMSolverMultistepScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

void DPMSolverMultistepScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(!args.sigmas && !args.mu && !args.strength, kName,
                ".set_timesteps: only num_inference_steps or timesteps are accepted");
  DIFFUSE_CHECK(args.num_inference_steps.has_value() != args.timesteps.has_value(), kName,
                ".set_timesteps: pass exactly one of num_inference_steps or timesteps");
  DIFFUSE_CHECK(!(args.timesteps && c.use_karras_sigmas), kName,
                ".set_timesteps: cannot use custom timesteps with use_karras_sigmas=True");
  DIFFUSE_CHECK(!(args.timesteps && c.use_lu_lambdas), kName,
                ".set_timesteps: cannot use custom timesteps with use_lu_lambdas=True");
  DIFFUSE_CHECK(!(args.timesteps && c.use_exponential_sigmas), kName,
                ".set_timesteps: cannot set timesteps with use_exponential_sigmas=True");
  DIFFUSE_CHECK(!(args.timesteps && c.use_beta_sigmas), kName,
                ".set_timesteps: cannot set timesteps with use_beta_sigmas=True");
  // diffusers v0.31 converts these schedules with num_inference_steps=self.num_inference_steps,
  // which is still None at that point: a TypeError for every fresh scheduler. Reproduced as an
  // error (use EulerDiscreteScheduler / DPMSolverSDEScheduler for these schedules).
  DIFFUSE_CHECK(!c.use_exponential_sigmas, kName,
                ": use_exponential_sigmas fails in diffusers v0.31's set_timesteps (it passes "
                "num_inference_steps=None to the conversion); not supported");
  DIFFUSE_CHECK(!c.use_beta_sigmas, kName,
                ": use_beta_sigmas fails in diffusers v0.31's set_timesteps (it passes "
                "num_inference_steps=None to the conversion); not supported");

  std::vector<double> timesteps;
  const int64_t n = args.num_inference_steps.value_or(0);
  if (args.timesteps) {
    DIFFUSE_CHECK(!args.timesteps->empty(), kName, ".set_timesteps: timesteps is empty");
    for (double t : *args.timesteps) {
      DIFFUSE_CHECK(std::isfinite(t), kName, ".set_timesteps: timesteps must be finite");
      timesteps.push_back(std::trunc(t));  // np.array(timesteps).astype(np.int64)
    }
  } else {
    const int64_t last = clipped_last_timestep(lambda_t_, c.lambda_min_clipped);
    timesteps = dpm_spacing_timesteps(kName, c.timestep_spacing, c.num_train_timesteps, last, n,
                                      c.steps_offset);
  }

  std::vector<double> sigmas;
  if (c.use_karras_sigmas) {
    // in_sigmas = np.flip(sigmas): sigma_min = train sigma 0, sigma_max = the last one.
    sigmas = karras_sigmas(train_sigmas_.front(), train_sigmas_.back(), n);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(np_round(sigma_to_t(s, log_sigmas_)));
  } else if (c.use_lu_lambdas) {
    // Lu et al. (2022): uniform in log-sigma between the training extremes (rho = 1).
    const double lambda_min = log_sigmas_.front();
    const double lambda_max = log_sigmas_.back();
    const std::vector<double> ramp = np_linspace(0, 1, n);
    sigmas.resize(ramp.size());
    timesteps.clear();
    for (std::size_t i = 0; i < ramp.size(); ++i) {
      sigmas[i] = std::exp(lambda_max + ramp[i] * (lambda_min - lambda_max));
      timesteps.push_back(np_round(sigma_to_t(sigmas[i], log_sigmas_)));
    }
  } else {
    std::vector<double> xp(train_sigmas_.size());
    for (std::size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
    sigmas = np_interp(timesteps, xp, to_f64(train_sigmas_));
  }

  double sigma_last = 0.0;
  if (c.final_sigmas_type == "sigma_min") {
    sigma_last = vp_sigma_min(alphas_cumprod_);
  } else {
    DIFFUSE_CHECK(c.final_sigmas_type == "zero", kName,
                  ": final_sigmas_type must be 'zero' or 'sigma_min', got '", c.final_sigmas_type,
                  "'");
  }
  sigmas.push_back(sigma_last);

  sigmas_ = to_f32(sigmas);
  timesteps_ = std::move(timesteps);
  num_inference_steps_ = static_cast<int64_t>(timesteps_.size());
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
  lower_order_nums_ = 0;
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput DPMSolverMultistepScheduler::step(const Tensor& model_output_in, double timestep,
                                                  const Tensor& sample_in, const StepArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ".step: number of inference steps is unset; call set_timesteps first");
  const bool learned =
      c.variance_type && (*c.variance_type == "learned" || *c.variance_type == "learned_range");
  Tensor model_output_t = model_output_in;
  if (learned && c.prediction_type == "epsilon")
    model_output_t = first_channels(model_output_in, 3);
  check_step_inputs(model_output_t, sample_in, kName);
  if (!step_index_) {
    step_index_ = begin_index_ ? *begin_index_
                               : static_cast<int64_t>(dpm_index_for_timestep(timestep, timesteps_));
  }
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const std::size_t n = timesteps_.size();
  DIFFUSE_CHECK(i < n, kName, ".step: called more times than there are timesteps (", n, ")");

  // Improve numerical stability for small numbers of steps.
  const bool lower_order_final =
      i == n - 1 &&
      (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == "zero");
  const bool lower_order_second = i + 2 == n && c.lower_order_final && n < 15;

  // convert_model_output
  const Values sample = load(sample_in);
  const Values mo = load(model_output_t);
  const AlphaSigma cur = vp_alpha_sigma(sigmas_[i]);
  const bool data_pred = c.algorithm_type == "dpmsolver++" || c.algorithm_type == "sde-dpmsolver++";
  const Values converted = dpm_convert_model_output(
      mo, sample, sample_in.shape(), sigmas_[i], data_pred, c.prediction_type, c.thresholding,
      c.dynamic_thresholding_ratio, c.sample_max_value, kName);
  for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k)
    model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = store(converted, sample_in.shape());

  // Upcast to avoid precision issues when computing prev_sample (diffusers: sample.to(float32),
  // so a float64 sample is stepped in mixed float32/float64 arithmetic).
  const Values x = to_dtype(sample, DType::f32);
  const bool sde = c.algorithm_type == "sde-dpmsolver" || c.algorithm_type == "sde-dpmsolver++";
  Values noise;
  if (sde)
    noise = to_dtype(load(draw_noise(args, model_output_t.shape(), DType::f32, kName)), DType::f32);

  const AlphaSigma t = vp_alpha_sigma(sigmas_[i + 1]);
  int order = 3;
  if (c.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final) {
    order = 1;
  } else if (c.solver_order == 2 || lower_order_nums_ < 2 || lower_order_second) {
    order = 2;
  }
  const std::size_t k = model_outputs_.size();
  const AlphaSigma s1 = order >= 2 ? vp_alpha_sigma(sigmas_[i - 1]) : AlphaSigma{};
  const AlphaSigma s2 = order >= 3 ? vp_alpha_sigma(sigmas_[i - 2]) : AlphaSigma{};
  const Values m1 = order >= 2 ? load(model_outputs_[k - 2]) : Values{};
  const Values m2 = order >= 3 ? load(model_outputs_[k - 3]) : Values{};
  Values x_t = dpm_multistep_update(order, c.algorithm_type, c.solver_type == "midpoint", t, cur,
                                    s1, s2, x, converted, m1, m2, noise, kName);
  if (lower_order_nums_ < c.solver_order) ++lower_order_nums_;
  // Cast back to the (converted) model output's dtype.
  x_t = to_dtype(x_t, converted.dtype);
  step_index_ = *step_index_ + 1;
  SchedulerOutput out;
  out.prev_sample = store(x_t, sample_in.shape());
  return out;
}

Tensor DPMSolverMultistepScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                              const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && original.dim() >= 1, kName,
                ".add_noise: expected a batched sample");
  const auto idx =
      add_noise_indices(timesteps, original.size(0), timesteps_, begin_index_, step_index_, kName);
  return vp_add_noise(original, noise, sigmas_, idx, kName);
}

namespace schedulers {
std::unique_ptr<Scheduler> make_dpmsolver_multistep_scheduler(const nlohmann::json& config) {
  return std::make_unique<DPMSolverMultistepScheduler>(
      DPMSolverMultistepSchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
