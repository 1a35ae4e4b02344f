// diffusers v0.31 schedulers/scheduling_dpmsolver_singlestep.py
#include "diffuse/schedulers/scheduling_dpmsolver_singlestep.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/core/log.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/multistep_utils.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kName = "DPMSolverSinglestepScheduler";
}  // namespace

DPMSolverSinglestepSchedulerConfig DPMSolverSinglestepSchedulerConfig::from_json(
    const nlohmann::json& config) {
  DPMSolverSinglestepSchedulerConfig c;
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
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.get("lambda_min_clipped", c.lambda_min_clipped);
  r.get("variance_type", c.variance_type);
  r.finish();
  return c;
}

nlohmann::json DPMSolverSinglestepSchedulerConfig::to_json() const {
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
  j["final_sigmas_type"] = final_sigmas_type;
  j["lambda_min_clipped"] = config_float(lambda_min_clipped);
  j["variance_type"] = variance_type ? nlohmann::json(*variance_type) : nlohmann::json(nullptr);
  return j;
}

DPMSolverSinglestepScheduler::DPMSolverSinglestepScheduler(
    DPMSolverSinglestepSchedulerConfig config)
    : config_(std::move(config)) {
  auto& c = config_;
  check_sigma_schedule_flags(kName, c.use_karras_sigmas, c.use_exponential_sigmas,
                             c.use_beta_sigmas);
  VpSchedule s = make_vp_schedule(kName, c.beta_schedule, c.num_train_timesteps, c.beta_start,
                                  c.beta_end, c.trained_betas, false);
  alphas_cumprod_ = std::move(s.alphas_cumprod);
  train_sigmas_ = std::move(s.sigmas);
  log_sigmas_ = std::move(s.log_sigmas);
  lambda_t_ = std::move(s.lambda_t);
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
  DIFFUSE_CHECK(c.solver_order >= 1 && c.solver_order <= 3, kName,
                ": order > 3 is not supported by this scheduler (solver_order must be 1, 2 or 3, "
                "got ",
                c.solver_order, ")");
  // diffusers' thresholding for the noise-prediction algorithms indexes alpha_t with the
  // removed `timestep` argument (None) and fails; refuse the configuration up front.
  DIFFUSE_CHECK(
      !c.thresholding || c.algorithm_type == "dpmsolver++" || c.algorithm_type == "sde-dpmsolver++",
      kName, ": thresholding is only supported with dpmsolver++ / sde-dpmsolver++ ",
      "(it fails in diffusers v0.31 for algorithm_type '", c.algorithm_type, "')");
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
  order_list_ = order_list(c.num_train_timesteps);
}

std::vector<int> DPMSolverSinglestepScheduler::order_list(int64_t steps) const {
  const int64_t order = config_.solver_order;
  std::vector<int> out;
  auto repeat = [&](std::initializer_list<int> block, int64_t times) {
    for (int64_t k = 0; k < times; ++k) out.insert(out.end(), block);
  };
  if (config_.lower_order_final) {
    if (order == 3) {
      if (steps % 3 == 0) {
        repeat({1, 2, 3}, steps / 3 - 1);
        out.insert(out.end(), {1, 2, 1});
      } else if (steps % 3 == 1) {
        repeat({1, 2, 3}, steps / 3);
        out.push_back(1);
      } else {
        repeat({1, 2, 3}, steps / 3);
        out.insert(out.end(), {1, 2});
      }
    } else if (order == 2) {
      if (steps % 2 == 0) {
        repeat({1, 2}, steps / 2 - 1);
        out.insert(out.end(), {1, 1});
      } else {
        repeat({1, 2}, steps / 2);
        out.push_back(1);
      }
    } else {
      repeat({1}, steps);
    }
  } else {
    if (order == 3) {
      repeat({1, 2, 3}, steps / 3);
    } else if (order == 2) {
      repeat({1, 2}, steps / 2);
    } else {
      repeat({1}, steps);
    }
  }
  return out;
}

std::optional<std::vector<double>> DPMSolverSinglestepScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

void DPMSolverSinglestepScheduler::set_timesteps(const SetTimestepsArgs& args) {
  auto& c = config_;
  DIFFUSE_CHECK(!args.sigmas && !args.mu && !args.strength, kName,
                ".set_timesteps: only num_inference_steps or timesteps are accepted");
  DIFFUSE_CHECK(args.num_inference_steps.has_value() != args.timesteps.has_value(), kName,
                ".set_timesteps: pass exactly one of num_inference_steps or timesteps");
  DIFFUSE_CHECK(!(args.timesteps && c.use_karras_sigmas), kName,
                ".set_timesteps: cannot use custom timesteps with use_karras_sigmas=True");
  // diffusers v0.31 only defines log_sigmas in its Karras branch, so these two schedules end in
  // a NameError; reproduced as an error.
  DIFFUSE_CHECK(!c.use_exponential_sigmas && !c.use_beta_sigmas, kName,
                ": use_exponential_sigmas / use_beta_sigmas fail in diffusers v0.31's "
                "set_timesteps (NameError: log_sigmas); not supported");

  std::vector<double> timesteps;
  if (args.timesteps) {
    DIFFUSE_CHECK(!args.timesteps->empty(), kName, ".set_timesteps: timesteps is empty");
    for (double t : *args.timesteps) {
      DIFFUSE_CHECK(std::isfinite(t), kName, ".set_timesteps: timesteps must be finite");
      timesteps.push_back(std::trunc(t));
    }
  }
  const int64_t n =
      args.num_inference_steps ? *args.num_inference_steps : static_cast<int64_t>(timesteps.size());
  if (!args.timesteps) {
    timesteps = dpm_spacing_timesteps(kName, "linspace", c.num_train_timesteps,
                                      clipped_last_timestep(lambda_t_, c.lambda_min_clipped), n, 0);
  }

  std::vector<double> sigmas;
  if (c.use_karras_sigmas) {
    sigmas = karras_sigmas(train_sigmas_.front(), train_sigmas_.back(), n);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(np_round(sigma_to_t(s, log_sigmas_)));
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
  num_inference_steps_ = n;
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
  sample_ = Tensor();

  // diffusers rewrites its config here (register_to_config), so the change persists.
  if (!c.lower_order_final && n % c.solver_order != 0) {
    log_warn(kName, ": setting lower_order_final=True to handle ", n,
             " inference steps (not a multiple of solver_order ", c.solver_order, ")");
    c.lower_order_final = true;
  }
  if (!c.lower_order_final && c.final_sigmas_type == "zero") {
    log_warn(kName,
             ": final_sigmas_type='zero' is not supported with lower_order_final=False; "
             "setting lower_order_final=True");
    c.lower_order_final = true;
  }
  order_list_ = order_list(n);
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput DPMSolverSinglestepScheduler::step(const Tensor& model_output_in, double timestep,
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
  DIFFUSE_CHECK(i < timesteps_.size() && i < order_list_.size(), kName,
                ".step: called more times than there are timesteps (", timesteps_.size(), ")");

  const bool data_pred = c.algorithm_type == "dpmsolver++" || c.algorithm_type == "sde-dpmsolver++";
  const Values converted = dpm_convert_model_output(
      load(model_output_t), load(sample_in), sample_in.shape(), sigmas_[i], data_pred,
      c.prediction_type, c.thresholding, c.dynamic_thresholding_ratio, c.sample_max_value, kName);
  for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k)
    model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = store(converted, sample_in.shape());

  const bool sde = c.algorithm_type == "sde-dpmsolver" || c.algorithm_type == "sde-dpmsolver++";
  Values noise;
  if (sde) noise = load(draw_noise(args, model_output_t.shape(), converted.dtype, kName));

  int order = order_list_[i];
  // For img2img denoising might start with order > 1, which is not possible.
  while (!model_outputs_[model_outputs_.size() - static_cast<std::size_t>(order)].defined())
    --order;
  // For single-step solvers, the initial value of each update is the sample at its order-1 step.
  if (order == 1) sample_ = sample_in;
  DIFFUSE_CHECK(sample_.defined() && sample_.shape() == sample_in.shape(), kName,
                ".step: no start sample for this update");
  const Values x = load(sample_);

  const std::size_t k = model_outputs_.size();
  const AlphaSigma t = vp_alpha_sigma(sigmas_[i + 1]);
  const AlphaSigma s0 = vp_alpha_sigma(sigmas_[i]);
  const float lambda_t = lambda_of(t);
  Values x_t;
  if (order == 1) {
    // dpm_solver_first_order_update
    const Values& m = converted;
    const float h = lambda_t - lambda_of(s0);
    if (c.algorithm_type == "dpmsolver++") {
      x_t = (t.sigma / s0.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * m;
    } else if (c.algorithm_type == "dpmsolver") {
      x_t = (t.alpha / s0.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * m;
    } else if (c.algorithm_type == "sde-dpmsolver++") {
      x_t = (t.sigma / s0.sigma * std::exp(-h)) * x + (t.alpha * (1.0f - std::exp(-2.0f * h))) * m +
            (t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h))) * noise;
    } else {
      x_t = (t.alpha / s0.alpha) * x - (2.0f * (t.sigma * (std::exp(h) - 1.0f))) * m +
            (t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
    }
  } else if (order == 2) {
    // singlestep_dpm_solver_second_order_update: from the sample at sigma_s1.
    const AlphaSigma s1 = vp_alpha_sigma(sigmas_[i - 1]);
    const float lambda_s0 = lambda_of(s0);
    const float lambda_s1 = lambda_of(s1);
    const Values m0 = load(model_outputs_[k - 1]);
    const Values m1 = load(model_outputs_[k - 2]);
    const float h = lambda_t - lambda_s1;
    const float h_0 = lambda_s0 - lambda_s1;
    const float r0 = h_0 / h;
    const Values& D0 = m1;
    const Values D1 = (1.0f / r0) * (m0 - m1);
    const bool midpoint = c.solver_type == "midpoint";
    if (c.algorithm_type == "dpmsolver++") {
      if (midpoint) {
        x_t = (t.sigma / s1.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 -
              (0.5f * (t.alpha * (std::exp(-h) - 1.0f))) * D1;
      } else {
        x_t = (t.sigma / s1.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 +
              (t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f)) * D1;
      }
    } else if (c.algorithm_type == "dpmsolver") {
      if (midpoint) {
        x_t = (t.alpha / s1.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
              (0.5f * (t.sigma * (std::exp(h) - 1.0f))) * D1;
      } else {
        x_t = (t.alpha / s1.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
              (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f)) * D1;
      }
    } else if (c.algorithm_type == "sde-dpmsolver++") {
      if (midpoint) {
        x_t = (t.sigma / s1.sigma * std::exp(-h)) * x +
              (t.alpha * (1.0f - std::exp(-2.0f * h))) * D0 +
              (0.5f * (t.alpha * (1.0f - std::exp(-2.0f * h)))) * D1 +
              (t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h))) * noise;
      } else {
        x_t = (t.sigma / s1.sigma * std::exp(-h)) * x +
              (t.alpha * (1.0f - std::exp(-2.0f * h))) * D0 +
              (t.alpha * ((1.0f - std::exp(-2.0f * h)) / (-2.0f * h) + 1.0f)) * D1 +
              (t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h))) * noise;
      }
    } else {
      if (midpoint) {
        x_t = (t.alpha / s1.alpha) * x - (2.0f * (t.sigma * (std::exp(h) - 1.0f))) * D0 -
              (t.sigma * (std::exp(h) - 1.0f)) * D1 +
              (t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
      } else {
        x_t = (t.alpha / s1.alpha) * x - (2.0f * (t.sigma * (std::exp(h) - 1.0f))) * D0 -
              (2.0f * (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f))) * D1 +
              (t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
      }
    }
  } else {
    // singlestep_dpm_solver_third_order_update: from the sample at sigma_s2.
    DIFFUSE_CHECK(!sde, kName, ": solver_order 3 with ", c.algorithm_type,
                  " has no third-order update in diffusers (it fails there); use solver_order 2");
    const AlphaSigma s1 = vp_alpha_sigma(sigmas_[i - 1]);
    const AlphaSigma s2 = vp_alpha_sigma(sigmas_[i - 2]);
    const float lambda_s0 = lambda_of(s0);
    const float lambda_s1 = lambda_of(s1);
    const float lambda_s2 = lambda_of(s2);
    const Values m0 = load(model_outputs_[k - 1]);
    const Values m1 = load(model_outputs_[k - 2]);
    const Values m2 = load(model_outputs_[k - 3]);
    const float h = lambda_t - lambda_s2;
    const float h_0 = lambda_s0 - lambda_s2;
    const float h_1 = lambda_s1 - lambda_s2;
    const float r0 = h_0 / h;
    const float r1 = h_1 / h;
    const Values& D0 = m2;
    const Values D1_0 = (1.0f / r1) * (m1 - m2);
    const Values D1_1 = (1.0f / r0) * (m0 - m2);
    const Values D1 = (r0 * D1_0 - r1 * D1_1) / (r0 - r1);
    const Values D2 = (2.0 * (D1_1 - D1_0)) / (r0 - r1);
    const bool midpoint = c.solver_type == "midpoint";
    if (c.algorithm_type == "dpmsolver++") {
      if (midpoint) {
        x_t = (t.sigma / s2.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 +
              (t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f)) * D1_1;
      } else {
        x_t = (t.sigma / s2.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 +
              (t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f)) * D1 -
              (t.alpha * ((std::exp(-h) - 1.0f + h) / (h * h) - 0.5f)) * D2;
      }
    } else {
      if (midpoint) {
        x_t = (t.alpha / s2.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
              (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f)) * D1_1;
      } else {
        x_t = (t.alpha / s2.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
              (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f)) * D1 -
              (t.sigma * ((std::exp(h) - 1.0f - h) / (h * h) - 0.5f)) * D2;
      }
    }
  }
  step_index_ = *step_index_ + 1;
  SchedulerOutput out;
  out.prev_sample = store(x_t, sample_in.shape());
  return out;
}

Tensor DPMSolverSinglestepScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                               const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && original.dim() >= 1, kName,
                ".add_noise: expected a batched sample");
  const auto idx =
      add_noise_indices(timesteps, original.size(0), timesteps_, begin_index_, step_index_, kName);
  return vp_add_noise(original, noise, sigmas_, idx, kName);
}

namespace schedulers {
std::unique_ptr<Scheduler> make_dpmsolver_singlestep_scheduler(const nlohmann::json& config) {
  return std::make_unique<DPMSolverSinglestepScheduler>(
      DPMSolverSinglestepSchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
