// diffusers v0.31 schedulers/scheduling_unipc_multistep.py
#include "diffuse/schedulers/scheduling_unipc_multistep.h"

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

constexpr const char* kName = "UniPCMultistepScheduler";

// The B(h) linear system of UniP/UniC (float32 as in diffusers): R[k][j] = rks[j]**k and
// b[k] = h_phi_{k+1} * (k+1)! / B(h), for k < order.
struct BhSystem {
  float h_phi_1 = 0;
  float B_h = 0;
  std::vector<float> R;  // order x order, row-major
  std::vector<float> b;
};

BhSystem bh_system(const std::vector<float>& rks, float h, bool predict_x0, bool bh1) {
  const std::size_t order = rks.size();
  BhSystem s;
  const float hh = predict_x0 ? -h : h;
  s.h_phi_1 = std::expm1(hh);  // h * phi_1(h) = e^h - 1
  float h_phi_k = s.h_phi_1 / hh - 1.0f;
  int64_t factorial_i = 1;
  s.B_h = bh1 ? hh : std::expm1(hh);
  s.R.resize(order * order);
  for (std::size_t k = 1; k <= order; ++k) {
    for (std::size_t j = 0; j < order; ++j) {
      const float r = rks[j];
      // torch.pow(rks, k - 1): 0 -> ones, 1 -> identity, 2 -> square.
      float p = 1.0f;
      for (std::size_t e = 1; e < k; ++e) p = e == 1 ? r : p * r;
      s.R[(k - 1) * order + j] = p;
    }
    s.b.push_back(h_phi_k * static_cast<float>(factorial_i) / s.B_h);
    factorial_i *= static_cast<int64_t>(k) + 1;
    h_phi_k = h_phi_k / hh - static_cast<float>(1.0 / static_cast<double>(factorial_i));
  }
  return s;
}

// The leading n x n block of a row-major order x order matrix.
std::vector<float> leading_block(const std::vector<float>& m, std::size_t order, std::size_t n) {
  std::vector<float> out(n * n);
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t c = 0; c < n; ++c) out[r * n + c] = m[r * order + c];
  }
  return out;
}

// torch.einsum("k,bkc...->bc...", rhos, D1s): sum_k rhos[k] * D1s[k].
Values weighted_sum(const std::vector<double>& rhos, const std::vector<Values>& D1s) {
  Values acc = rhos[0] * D1s[0];
  for (std::size_t k = 1; k < D1s.size(); ++k) acc = acc + rhos[k] * D1s[k];
  return acc;
}

}  // namespace

UniPCMultistepSchedulerConfig UniPCMultistepSchedulerConfig::from_json(
    const nlohmann::json& config) {
  UniPCMultistepSchedulerConfig c;
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
  r.get("predict_x0", c.predict_x0);
  r.get("solver_type", c.solver_type);
  r.get("lower_order_final", c.lower_order_final);
  r.get("disable_corrector", c.disable_corrector);
  r.ignore({"solver_p"});
  DIFFUSE_CHECK(!config.contains("solver_p") || config.at("solver_p").is_null(), kName,
                ": solver_p (a scheduler object) cannot be given in a config; expected null");
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_exponential_sigmas", c.use_exponential_sigmas);
  r.get("use_beta_sigmas", c.use_beta_sigmas);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  r.finish();
  return c;
}

nlohmann::json UniPCMultistepSchedulerConfig::to_json() const {
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
  j["predict_x0"] = predict_x0;
  j["solver_type"] = solver_type;
  j["lower_order_final"] = lower_order_final;
  j["disable_corrector"] = disable_corrector;
  j["solver_p"] = nullptr;
  j["use_karras_sigmas"] = use_karras_sigmas;
  j["use_exponential_sigmas"] = use_exponential_sigmas;
  j["use_beta_sigmas"] = use_beta_sigmas;
  j["timestep_spacing"] = timestep_spacing;
  j["steps_offset"] = steps_offset;
  j["final_sigmas_type"] = final_sigmas_type;
  j["rescale_betas_zero_snr"] = rescale_betas_zero_snr;
  return j;
}

UniPCMultistepScheduler::UniPCMultistepScheduler(UniPCMultistepSchedulerConfig config)
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
  if (c.solver_type == "midpoint" || c.solver_type == "heun" || c.solver_type == "logrho") {
    c.solver_type = "bh2";
  }
  DIFFUSE_CHECK(c.solver_type == "bh1" || c.solver_type == "bh2", kName, ": solver_type '",
                c.solver_type, "' is not implemented (expected bh1 or bh2)");
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "sample" ||
                    c.prediction_type == "v_prediction",
                kName, ": prediction_type '", c.prediction_type,
                "' must be one of epsilon, sample or v_prediction");
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
}

std::optional<std::vector<double>> UniPCMultistepScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

void UniPCMultistepScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(
      args.num_inference_steps && !args.timesteps && !args.sigmas && !args.mu && !args.strength,
      kName, ".set_timesteps: expected num_inference_steps only");
  DIFFUSE_CHECK(!c.use_exponential_sigmas && !c.use_beta_sigmas, kName,
                ": use_exponential_sigmas / use_beta_sigmas fail in diffusers v0.31's "
                "set_timesteps (num_inference_steps=None is passed on); not supported");
  DIFFUSE_CHECK(c.final_sigmas_type == "zero" || c.final_sigmas_type == "sigma_min", kName,
                ": final_sigmas_type must be 'zero' or 'sigma_min', got '", c.final_sigmas_type,
                "'");
  const int64_t n = *args.num_inference_steps;
  std::vector<double> timesteps = dpm_spacing_timesteps(
      kName, c.timestep_spacing, c.num_train_timesteps, c.num_train_timesteps, n, c.steps_offset);
  const bool zero = c.final_sigmas_type == "zero";
  std::vector<double> sigmas;
  if (c.use_karras_sigmas) {
    sigmas = karras_sigmas(train_sigmas_.front(), train_sigmas_.back(), n);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(np_round(sigma_to_t(s, log_sigmas_)));
    sigmas.push_back(zero ? 0.0 : sigmas.back());
  } else {
    std::vector<double> xp(train_sigmas_.size());
    for (std::size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
    sigmas = np_interp(timesteps, xp, to_f64(train_sigmas_));
    sigmas.push_back(zero ? 0.0 : static_cast<double>(vp_sigma_min(alphas_cumprod_)));
  }
  sigmas_ = to_f32(sigmas);
  timesteps_ = std::move(timesteps);
  num_inference_steps_ = static_cast<int64_t>(timesteps_.size());
  model_outputs_.assign(static_cast<std::size_t>(c.solver_order), Tensor());
  lower_order_nums_ = 0;
  last_sample_ = Tensor();
  step_index_.reset();
  begin_index_.reset();
}

Tensor UniPCMultistepScheduler::uni_p_update(const Tensor& sample_t, int order) const {
  const auto& c = config_;
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const std::size_t k_end = model_outputs_.size();
  const Values m0 = load(model_outputs_[k_end - 1]);
  const Values x = load(sample_t);
  const AlphaSigma t = vp_alpha_sigma(sigmas_[i + 1]);
  const AlphaSigma s0 = vp_alpha_sigma(sigmas_[i]);
  const float lambda_s0 = lambda_of(s0);
  const float h = lambda_of(t) - lambda_s0;

  std::vector<float> rks;
  std::vector<Values> D1s;
  for (int k = 1; k < order; ++k) {
    const std::size_t si = i - static_cast<std::size_t>(k);
    const Values mi = load(model_outputs_[k_end - 1 - static_cast<std::size_t>(k)]);
    const float rk = (lambda_of(vp_alpha_sigma(sigmas_[si])) - lambda_s0) / h;
    rks.push_back(rk);
    D1s.push_back((mi - m0) / rk);
  }
  rks.push_back(1.0f);
  const BhSystem sys = bh_system(rks, h, c.predict_x0, c.solver_type == "bh1");

  std::vector<double> rhos_p;
  if (!D1s.empty()) {
    if (order == 2) {
      rhos_p = {0.5};  // the simplified order-2 predictor
    } else {
      const std::size_t m = static_cast<std::size_t>(order) - 1;
      const std::vector<float> r = solve_f32(
          leading_block(sys.R, rks.size(), m),
          std::vector<float>(sys.b.begin(), sys.b.begin() + static_cast<std::ptrdiff_t>(m)), m,
          kName);
      rhos_p.assign(r.begin(), r.end());
    }
  }
  Values x_t;
  const float scale = c.predict_x0 ? t.alpha : t.sigma;
  const Values x_t_ = c.predict_x0 ? (t.sigma / s0.sigma) * x - (t.alpha * sys.h_phi_1) * m0
                                   : (t.alpha / s0.alpha) * x - (t.sigma * sys.h_phi_1) * m0;
  if (!D1s.empty()) {
    x_t = x_t_ - (scale * sys.B_h) * weighted_sum(rhos_p, D1s);
  } else {
    x_t = x_t_ - (scale * sys.B_h) * 0.0f;  // pred_res = 0 (nan when B(h) is infinite)
  }
  return store(to_dtype(x_t, x.dtype), sample_t.shape());
}

Tensor UniPCMultistepScheduler::uni_c_update(const Tensor& this_model_output,
                                             const Tensor& this_sample, int order) const {
  const auto& c = config_;
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const std::size_t k_end = model_outputs_.size();
  const Values m0 = load(model_outputs_[k_end - 1]);
  const Values x = load(last_sample_);
  const Values model_t = load(this_model_output);
  const AlphaSigma t = vp_alpha_sigma(sigmas_[i]);
  const AlphaSigma s0 = vp_alpha_sigma(sigmas_[i - 1]);
  const float lambda_s0 = lambda_of(s0);
  const float h = lambda_of(t) - lambda_s0;

  std::vector<float> rks;
  std::vector<Values> D1s;
  for (int k = 1; k < order; ++k) {
    const std::size_t si = i - static_cast<std::size_t>(k + 1);
    const Values mi = load(model_outputs_[k_end - 1 - static_cast<std::size_t>(k)]);
    const float rk = (lambda_of(vp_alpha_sigma(sigmas_[si])) - lambda_s0) / h;
    rks.push_back(rk);
    D1s.push_back((mi - m0) / rk);
  }
  rks.push_back(1.0f);
  const BhSystem sys = bh_system(rks, h, c.predict_x0, c.solver_type == "bh1");

  std::vector<double> rhos_c;
  if (order == 1) {
    rhos_c = {0.5};  // the simplified order-1 corrector
  } else {
    const std::vector<float> r = solve_f32(sys.R, sys.b, rks.size(), kName);
    rhos_c.assign(r.begin(), r.end());
  }
  const float scale = c.predict_x0 ? t.alpha : t.sigma;
  const Values x_t_ = c.predict_x0 ? (t.sigma / s0.sigma) * x - (t.alpha * sys.h_phi_1) * m0
                                   : (t.alpha / s0.alpha) * x - (t.sigma * sys.h_phi_1) * m0;
  const Values D1_t = model_t - m0;
  Values corr = rhos_c.back() * D1_t;
  if (!D1s.empty()) {
    corr = weighted_sum(std::vector<double>(rhos_c.begin(), rhos_c.end() - 1), D1s) + corr;
  }
  const Values x_t = x_t_ - (scale * sys.B_h) * corr;
  (void)this_sample;
  return store(to_dtype(x_t, x.dtype), this_sample.shape());
}

SchedulerOutput UniPCMultistepScheduler::step(const Tensor& model_output, double timestep,
                                              const Tensor& sample_in, const StepArgs& args) {
  (void)args;
  const auto& c = config_;
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ".step: number of inference steps is unset; call set_timesteps first");
  check_step_inputs(model_output, sample_in, kName);
  if (!step_index_) {
    step_index_ = begin_index_ ? *begin_index_
                               : static_cast<int64_t>(dpm_index_for_timestep(timestep, timesteps_));
  }
  const int64_t i = *step_index_;
  const int64_t n = static_cast<int64_t>(timesteps_.size());
  DIFFUSE_CHECK(i < n, kName, ".step: called more times than there are timesteps (", n, ")");

  const bool use_corrector = i > 0 &&
                             std::find(c.disable_corrector.begin(), c.disable_corrector.end(),
                                       i - 1) == c.disable_corrector.end() &&
                             last_sample_.defined();
  const Values converted = dpm_convert_model_output(
      load(model_output), load(sample_in), sample_in.shape(), sigmas_[static_cast<std::size_t>(i)],
      c.predict_x0, c.prediction_type, c.predict_x0 && c.thresholding, c.dynamic_thresholding_ratio,
      c.sample_max_value, kName);
  const Tensor converted_t = store(converted, sample_in.shape());
  Tensor sample = sample_in;
  if (use_corrector) sample = uni_c_update(converted_t, sample_in, this_order_);

  for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k)
    model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = converted_t;

  int64_t this_order = c.lower_order_final ? std::min(c.solver_order, n - i) : c.solver_order;
  this_order_ = static_cast<int>(std::min(this_order, lower_order_nums_ + 1));  // warmup
  last_sample_ = sample;
  Tensor prev = uni_p_update(sample, this_order_);
  if (lower_order_nums_ < c.solver_order) ++lower_order_nums_;
  step_index_ = i + 1;
  SchedulerOutput out;
  out.prev_sample = prev;
  return out;
}

Tensor UniPCMultistepScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                          const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && original.dim() >= 1, kName,
                ".add_noise: expected a batched sample");
  const auto idx =
      add_noise_indices(timesteps, original.size(0), timesteps_, begin_index_, step_index_, kName);
  return vp_add_noise(original, noise, sigmas_, idx, kName);
}

namespace schedulers {
std::unique_ptr<Scheduler> make_unipc_multistep_scheduler(const nlohmann::json& config) {
  return std::make_unique<UniPCMultistepScheduler>(
      UniPCMultistepSchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
