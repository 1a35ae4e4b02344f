// diffusers v0.31 schedulers/scheduling_deis_multistep.py
#include "diffuse/schedulers/scheduling_deis_multistep.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/multistep_utils.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {

constexpr const char* kName = "DEISMultistepScheduler";

// Integrate[(log(t) - log(c)) / (log(b) - log(c)), {t}] in float32 (np.log of float32 values).
float ind_fn2(float t, float b, float c) {
  return t * (-std::log(c) + std::log(t) - 1.0f) / (std::log(b) - std::log(c));
}

// Integrate[(log(t) - log(c))(log(t) - log(d)) / ((log(b) - log(c))(log(b) - log(d))), {t}].
float ind_fn3(float t, float b, float c, float d) {
  const float lt = std::log(t);
  const float lc = std::log(c);
  const float ld = std::log(d);
  const float numerator = t * (lc * (ld - lt + 1.0f) - ld * lt + ld + lt * lt - 2.0f * lt + 2.0f);
  const float denominator = (std::log(b) - lc) * (std::log(b) - ld);
  return numerator / denominator;
}

}  // namespace

DEISMultistepSchedulerConfig DEISMultistepSchedulerConfig::from_json(const nlohmann::json& config) {
  DEISMultistepSchedulerConfig c;
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
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_exponential_sigmas", c.use_exponential_sigmas);
  r.get("use_beta_sigmas", c.use_beta_sigmas);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.finish();
  return c;
}

nlohmann::json DEISMultistepSchedulerConfig::to_json() const {
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
  j["use_karras_sigmas"] = use_karras_sigmas;
  j["use_exponential_sigmas"] = use_exponential_sigmas;
  j["use_beta_sigmas"] = use_beta_sigmas;
  j["timestep_spacing"] = timestep_spacing;
  j["steps_offset"] = steps_offset;
  return j;
}

DEISMultistepScheduler::DEISMultistepScheduler(DEISMultistepSchedulerConfig config)
    : config_(std::move(config)) {
  auto& c = config_;
  check_sigma_schedule_flags(kName, c.use_karras_sigmas, c.use_exponential_sigmas,
                             c.use_beta_sigmas);
  check_solver_order(kName, c.solver_order);
  VpSchedule s = make_vp_schedule(kName, c.beta_schedule, c.num_train_timesteps, c.beta_start,
                                  c.beta_end, c.trained_betas, false);
  alphas_cumprod_ = std::move(s.alphas_cumprod);
  train_sigmas_ = std::move(s.sigmas);
  log_sigmas_ = std::move(s.log_sigmas);
  if (c.algorithm_type == "dpmsolver" || c.algorithm_type == "dpmsolver++")
    c.algorithm_type = "deis";
  DIFFUSE_CHECK(c.algorithm_type == "deis", kName, ": algorithm_type '", c.algorithm_type,
                "' is not implemented (expected deis)");
  if (c.solver_type == "midpoint" || c.solver_type == "heun" || c.solver_type == "bh1" ||
      c.solver_type == "bh2") {
    c.solver_type = "logrho";
  }
  DIFFUSE_CHECK(c.solver_type == "logrho", kName, ": solver type '", c.solver_type,
                "' is not implemented (expected logrho)");
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "sample" ||
                    c.prediction_type == "v_prediction",
                kName, ": prediction_type '", c.prediction_type,
                "' must be one of epsilon, sample or v_prediction");
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
}

std::optional<std::vector<double>> DEISMultistepScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

void DEISMultistepScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(
      args.num_inference_steps && !args.timesteps && !args.sigmas && !args.mu && !args.strength,
      kName, ".set_timesteps: expected num_inference_steps only");
  DIFFUSE_CHECK(!c.use_exponential_sigmas && !c.use_beta_sigmas, kName,
                ": use_exponential_sigmas / use_beta_sigmas fail in diffusers v0.31's "
                "set_timesteps (num_inference_steps=None is passed on); not supported");
  const int64_t n = *args.num_inference_steps;
  std::vector<double> timesteps = dpm_spacing_timesteps(
      kName, c.timestep_spacing, c.num_train_timesteps, c.num_train_timesteps, n, c.steps_offset);
  std::vector<double> sigmas;
  if (c.use_karras_sigmas) {
    sigmas = karras_sigmas(train_sigmas_.front(), train_sigmas_.back(), n);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(np_round(sigma_to_t(s, log_sigmas_)));
    sigmas.push_back(sigmas.back());
  } else {
    std::vector<double> xp(train_sigmas_.size());
    for (std::size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
    sigmas = np_interp(timesteps, xp, to_f64(train_sigmas_));
    sigmas.push_back(vp_sigma_min(alphas_cumprod_));
  }
  sigmas_ = to_f32(sigmas);
  timesteps_ = std::move(timesteps);
  num_inference_steps_ = static_cast<int64_t>(timesteps_.size());
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
  lower_order_nums_ = 0;
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput DEISMultistepScheduler::step(const Tensor& model_output_in, double timestep,
                                             const Tensor& sample_in, const StepArgs& args) {
  (void)args;
  const auto& c = config_;
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ".step: number of inference steps is unset; call set_timesteps first");
  check_step_inputs(model_output_in, sample_in, kName);
  if (!step_index_) {
    step_index_ = begin_index_ ? *begin_index_
                               : static_cast<int64_t>(dpm_index_for_timestep(timestep, timesteps_));
  }
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const std::size_t n = timesteps_.size();
  DIFFUSE_CHECK(i < n, kName, ".step: called more times than there are timesteps (", n, ")");
  const bool lower_order_final = i == n - 1 && c.lower_order_final && n < 15;
  const bool lower_order_second = i + 2 == n && c.lower_order_final && n < 15;

  // convert_model_output: x0 from the model output, then DEIS's epsilon from x0.
  const Values sample = load(sample_in);
  const AlphaSigma cur = vp_alpha_sigma(sigmas_[i]);
  const Values x0 = dpm_convert_model_output(
      load(model_output_in), sample, sample_in.shape(), sigmas_[i], true, c.prediction_type,
      c.thresholding, c.dynamic_thresholding_ratio, c.sample_max_value, kName);
  const Values eps = (sample - cur.alpha * x0) / cur.sigma;
  for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k)
    model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = store(eps, sample_in.shape());

  const AlphaSigma t = vp_alpha_sigma(sigmas_[i + 1]);
  const std::size_t k = model_outputs_.size();
  Values x_t;
  if (c.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final) {
    const float h = lambda_of(t) - lambda_of(cur);
    x_t = (t.alpha / cur.alpha) * sample - (t.sigma * (std::exp(h) - 1.0f)) * eps;
  } else if (c.solver_order == 2 || lower_order_nums_ < 2 || lower_order_second) {
    const AlphaSigma s1 = vp_alpha_sigma(sigmas_[i - 1]);
    const Values m0 = load(model_outputs_[k - 1]);
    const Values m1 = load(model_outputs_[k - 2]);
    const float rho_t = t.sigma / t.alpha;
    const float rho_s0 = cur.sigma / cur.alpha;
    const float rho_s1 = s1.sigma / s1.alpha;
    const float coef1 = ind_fn2(rho_t, rho_s0, rho_s1) - ind_fn2(rho_s0, rho_s0, rho_s1);
    const float coef2 = ind_fn2(rho_t, rho_s1, rho_s0) - ind_fn2(rho_s0, rho_s1, rho_s0);
    x_t = t.alpha * (sample / cur.alpha + coef1 * m0 + coef2 * m1);
  } else {
    const AlphaSigma s1 = vp_alpha_sigma(sigmas_[i - 1]);
    const AlphaSigma s2 = vp_alpha_sigma(sigmas_[i - 2]);
    const Values m0 = load(model_outputs_[k - 1]);
    const Values m1 = load(model_outputs_[k - 2]);
    const Values m2 = load(model_outputs_[k - 3]);
    const float rho_t = t.sigma / t.alpha;
    const float rho_s0 = cur.sigma / cur.alpha;
    const float rho_s1 = s1.sigma / s1.alpha;
    const float rho_s2 = s2.sigma / s2.alpha;
    const float coef1 =
        ind_fn3(rho_t, rho_s0, rho_s1, rho_s2) - ind_fn3(rho_s0, rho_s0, rho_s1, rho_s2);
    const float coef2 =
        ind_fn3(rho_t, rho_s1, rho_s2, rho_s0) - ind_fn3(rho_s0, rho_s1, rho_s2, rho_s0);
    const float coef3 =
        ind_fn3(rho_t, rho_s2, rho_s0, rho_s1) - ind_fn3(rho_s0, rho_s2, rho_s0, rho_s1);
    x_t = t.alpha * (sample / cur.alpha + coef1 * m0 + coef2 * m1 + coef3 * m2);
  }
  if (lower_order_nums_ < c.solver_order) ++lower_order_nums_;
  step_index_ = *step_index_ + 1;
  SchedulerOutput out;
  out.prev_sample = store(x_t, sample_in.shape());
  return out;
}

Tensor DEISMultistepScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                         const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && original.dim() >= 1, kName,
                ".add_noise: expected a batched sample");
  const auto idx =
      add_noise_indices(timesteps, original.size(0), timesteps_, begin_index_, step_index_, kName);
  return vp_add_noise(original, noise, sigmas_, idx, kName);
}

namespace schedulers {
std::unique_ptr<Scheduler> make_deis_multistep_scheduler(const nlohmann::json& config) {
  return std::make_unique<DEISMultistepScheduler>(DEISMultistepSchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
