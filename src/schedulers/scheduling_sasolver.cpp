// diffusers v0.31 schedulers/scheduling_sasolver.py
#include "diffuse/schedulers/scheduling_sasolver.h"

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

constexpr const char* kName = "SASolverScheduler";

// diffusers' default tau_func: 1 inside t in [200, 800], else 0 (a Python int).
int tau_func(double t) {
  return t >= 200 && t <= 800 ? 1 : 0;
}

// Integral of exp(-x) * x**order over [start, end] (float32, as diffusers evaluates it).
float exponential_negative(int order, float start, float end) {
  switch (order) {
    case 0:
      return std::exp(-end) * (std::exp(end - start) - 1.0f);
    case 1:
      return std::exp(-end) * ((start + 1.0f) * std::exp(end - start) - (end + 1.0f));
    case 2:
      return std::exp(-end) * ((start * start + 2.0f * start + 2.0f) * std::exp(end - start) -
                               (end * end + 2.0f * end + 2.0f));
    default:
      return std::exp(-end) *
             ((start * start * start + 3.0f * (start * start) + 6.0f * start + 6.0f) *
                  std::exp(end - start) -
              (end * end * end + 3.0f * (end * end) + 6.0f * end + 6.0f));
  }
}

// Integral of exp(x * (1 + tau**2)) * x**order over [start, end].
float exponential_positive(int order, float start, float end, int tau) {
  const int one_plus = 1 + tau * tau;
  const float op = static_cast<float>(one_plus);
  const float e = op * end;  // after the change of variable
  const float s = op * start;
  const float decay = std::exp(-(e - s));
  switch (order) {
    case 0:
      return std::exp(e) * (1.0f - decay) / op;
    case 1:
      return std::exp(e) * ((e - 1.0f) - (s - 1.0f) * decay) /
             static_cast<float>(one_plus * one_plus);
    case 2:
      return std::exp(e) * ((e * e - 2.0f * e + 2.0f) - (s * s - 2.0f * s + 2.0f) * decay) /
             static_cast<float>(one_plus * one_plus * one_plus);
    default:
      return std::exp(e) *
             ((e * e * e - 3.0f * (e * e) + 6.0f * e - 6.0f) -
              (s * s * s - 3.0f * (s * s) + 6.0f * s - 6.0f) * decay) /
             static_cast<float>(one_plus * one_plus * one_plus * one_plus);
  }
}

// Coefficients (highest power first) of the Lagrange basis polynomials through lambda_list.
std::vector<std::vector<float>> lagrange_coefficients(const std::vector<float>& l) {
  const std::size_t n = l.size();
  std::vector<std::vector<float>> out(n);
  if (n == 1) {
    out[0] = {1.0f};
    return out;
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<float> o;  // the other nodes, in order
    for (std::size_t j = 0; j < n; ++j) {
      if (j != i) o.push_back(l[j]);
    }
    float d = l[i] - o[0];
    for (std::size_t j = 1; j < o.size(); ++j) d = d * (l[i] - o[j]);
    std::vector<float>& row = out[i];
    row.push_back(1.0f / d);
    if (o.size() == 1) {
      row.push_back(-o[0] / d);
    } else if (o.size() == 2) {
      row.push_back((-o[0] - o[1]) / d);
      row.push_back(o[0] * o[1] / d);
    } else {
      row.push_back((-o[0] - o[1] - o[2]) / d);
      row.push_back((o[0] * o[1] + o[0] * o[2] + o[1] * o[2]) / d);
      row.push_back(-o[0] * o[1] * o[2] / d);
    }
  }
  return out;
}

// get_coefficients_fn: the gradient coefficient of each past model output.
std::vector<float> gradient_coefficients(int order, float start, float end,
                                         const std::vector<float>& lambda_list, int tau,
                                         bool predict_x0) {
  const auto lag = lagrange_coefficients(lambda_list);
  std::vector<float> out;
  for (int i = 0; i < order; ++i) {
    float c = 0.0f;
    for (int j = 0; j < order; ++j) {
      const float integral = predict_x0 ? exponential_positive(order - 1 - j, start, end, tau)
                                        : exponential_negative(order - 1 - j, start, end);
      c = c + lag[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] * integral;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

SASolverSchedulerConfig SASolverSchedulerConfig::from_json(const nlohmann::json& config) {
  SASolverSchedulerConfig c;
  ConfigReader r(config, kName);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("predictor_order", c.predictor_order);
  r.get("corrector_order", c.corrector_order);
  r.get("prediction_type", c.prediction_type);
  r.ignore({"tau_func"});
  DIFFUSE_CHECK(!config.contains("tau_func") || config.at("tau_func").is_null(), kName,
                ": tau_func (a Python callable) cannot be given in a config; expected null");
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("sample_max_value", c.sample_max_value);
  r.get("algorithm_type", c.algorithm_type);
  r.get("lower_order_final", c.lower_order_final);
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_exponential_sigmas", c.use_exponential_sigmas);
  r.get("use_beta_sigmas", c.use_beta_sigmas);
  r.get("lambda_min_clipped", c.lambda_min_clipped);
  r.get("variance_type", c.variance_type);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.finish();
  return c;
}

nlohmann::json SASolverSchedulerConfig::to_json() const {
  nlohmann::json j;
  j["num_train_timesteps"] = num_train_timesteps;
  j["beta_start"] = beta_start;
  j["beta_end"] = beta_end;
  j["beta_schedule"] = beta_schedule;
  j["trained_betas"] = config_floats(trained_betas);
  j["predictor_order"] = predictor_order;
  j["corrector_order"] = corrector_order;
  j["prediction_type"] = prediction_type;
  j["tau_func"] = nullptr;
  j["thresholding"] = thresholding;
  j["dynamic_thresholding_ratio"] = dynamic_thresholding_ratio;
  j["sample_max_value"] = sample_max_value;
  j["algorithm_type"] = algorithm_type;
  j["lower_order_final"] = lower_order_final;
  j["use_karras_sigmas"] = use_karras_sigmas;
  j["use_exponential_sigmas"] = use_exponential_sigmas;
  j["use_beta_sigmas"] = use_beta_sigmas;
  j["lambda_min_clipped"] = config_float(lambda_min_clipped);
  j["variance_type"] = variance_type ? nlohmann::json(*variance_type) : nlohmann::json(nullptr);
  j["timestep_spacing"] = timestep_spacing;
  j["steps_offset"] = steps_offset;
  return j;
}

SASolverScheduler::SASolverScheduler(SASolverSchedulerConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  check_sigma_schedule_flags(kName, c.use_karras_sigmas, c.use_exponential_sigmas,
                             c.use_beta_sigmas);
  // get_coefficients_fn asserts order in [1, 4].
  DIFFUSE_CHECK(c.predictor_order >= 1 && c.predictor_order <= 4, kName,
                ": predictor_order must be 1..4, got ", c.predictor_order);
  DIFFUSE_CHECK(c.corrector_order >= 1 && c.corrector_order <= 4, kName,
                ": corrector_order must be 1..4, got ", c.corrector_order);
  DIFFUSE_CHECK(c.algorithm_type == "data_prediction" || c.algorithm_type == "noise_prediction",
                kName, ": algorithm_type '", c.algorithm_type,
                "' is not implemented (expected data_prediction or noise_prediction)");
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "sample" ||
                    c.prediction_type == "v_prediction",
                kName, ": prediction_type '", c.prediction_type,
                "' must be one of epsilon, sample or v_prediction");
  // diffusers' noise_prediction thresholding indexes alpha_t with the removed `timestep`
  // argument (None) and fails.
  DIFFUSE_CHECK(!c.thresholding || c.algorithm_type == "data_prediction", kName,
                ": thresholding is only supported with algorithm_type data_prediction (it fails "
                "in diffusers v0.31 for noise_prediction)");
  VpSchedule s = make_vp_schedule(kName, c.beta_schedule, c.num_train_timesteps, c.beta_start,
                                  c.beta_end, c.trained_betas, false);
  alphas_cumprod_ = std::move(s.alphas_cumprod);
  train_sigmas_ = std::move(s.sigmas);
  log_sigmas_ = std::move(s.log_sigmas);
  lambda_t_ = std::move(s.lambda_t);
  const std::size_t slots =
      static_cast<std::size_t>(std::max(c.predictor_order, c.corrector_order - 1));
  model_outputs_.assign(slots, Tensor());
  timestep_list_.assign(slots, std::nullopt);
}

std::optional<std::vector<double>> SASolverScheduler::sigmas() const {
  if (sigmas_.empty()) return std::nullopt;
  return to_f64(sigmas_);
}

void SASolverScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(
      args.num_inference_steps && !args.timesteps && !args.sigmas && !args.mu && !args.strength,
      kName, ".set_timesteps: expected num_inference_steps only");
  DIFFUSE_CHECK(!c.use_exponential_sigmas && !c.use_beta_sigmas, kName,
                ": use_exponential_sigmas / use_beta_sigmas fail in diffusers v0.31's "
                "set_timesteps (num_inference_steps=None is passed on); not supported");
  const int64_t n = *args.num_inference_steps;
  std::vector<double> timesteps = dpm_spacing_timesteps(
      kName, c.timestep_spacing, c.num_train_timesteps,
      clipped_last_timestep(lambda_t_, c.lambda_min_clipped), n, c.steps_offset);
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
  model_outputs_.assign(model_outputs_.size(), Tensor());
  lower_order_nums_ = 0;
  last_sample_ = Tensor();
  last_noise_ = Tensor();
  step_index_.reset();
  begin_index_.reset();
}

Tensor SASolverScheduler::predictor_update(const Tensor& sample_t, const Tensor& noise_t, int order,
                                           int tau) const {
  const bool predict_x0 = config_.algorithm_type == "data_prediction";
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const AlphaSigma t = vp_alpha_sigma(sigmas_[i + 1]);
  const AlphaSigma s0 = vp_alpha_sigma(sigmas_[i]);
  const float lambda_t = lambda_of(t);
  const float lambda_s0 = lambda_of(s0);
  const float h = lambda_t - lambda_s0;
  std::vector<float> lambda_list;
  for (int k = 0; k < order; ++k) {
    lambda_list.push_back(lambda_of(vp_alpha_sigma(sigmas_[i - static_cast<std::size_t>(k)])));
  }
  std::vector<float> coef =
      gradient_coefficients(order, lambda_s0, lambda_t, lambda_list, tau, predict_x0);
  const int tau2 = tau * tau;
  const float op = static_cast<float>(1 + tau2);
  if (predict_x0 && order == 2) {
    // An O(h^3) modification as in UniPC, used for few-step sampling.
    const float temp_lambda_s = lambda_of(vp_alpha_sigma(sigmas_[i - 1]));
    const float extra = 1.0f * std::exp(op * lambda_t) *
                        (h * h / 2.0f - (h * op - 1.0f + std::exp(op * -h)) /
                                            static_cast<float>((1 + tau2) * (1 + tau2))) /
                        (lambda_s0 - temp_lambda_s);
    coef[0] = coef[0] + extra;
    coef[1] = coef[1] - extra;
  }
  const Values x = load(sample_t);
  const Values noise = load(noise_t);
  Values gradient_part = zeros_like(x);
  for (int k = 0; k < order; ++k) {
    const Values m = load(model_outputs_[model_outputs_.size() - 1 - static_cast<std::size_t>(k)]);
    if (predict_x0) {
      gradient_part += (op * t.sigma * std::exp(static_cast<float>(-tau2) * lambda_t) *
                        coef[static_cast<std::size_t>(k)]) *
                       m;
    } else {
      gradient_part += (-op * t.alpha * coef[static_cast<std::size_t>(k)]) * m;
    }
  }
  Values x_t;
  if (predict_x0) {
    const Values noise_part =
        (t.sigma * std::sqrt(1.0f - std::exp(static_cast<float>(-2 * tau2) * h))) * noise;
    x_t = (std::exp(static_cast<float>(-tau2) * h) * (t.sigma / s0.sigma)) * x + gradient_part +
          noise_part;
  } else {
    const Values noise_part =
        (static_cast<float>(tau) * t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
    x_t = (t.alpha / s0.alpha) * x + gradient_part + noise_part;
  }
  return store(to_dtype(x_t, x.dtype), sample_t.shape());
}

Tensor SASolverScheduler::corrector_update(const Tensor& this_model_output, int order,
                                           int tau) const {
  const bool predict_x0 = config_.algorithm_type == "data_prediction";
  const std::size_t i = static_cast<std::size_t>(*step_index_);
  const AlphaSigma t = vp_alpha_sigma(sigmas_[i]);
  const AlphaSigma s0 = vp_alpha_sigma(sigmas_[i - 1]);
  const float lambda_t = lambda_of(t);
  const float lambda_s0 = lambda_of(s0);
  const float h = lambda_t - lambda_s0;
  std::vector<float> lambda_list;
  for (int k = 0; k < order; ++k) {
    lambda_list.push_back(lambda_of(vp_alpha_sigma(sigmas_[i - static_cast<std::size_t>(k)])));
  }
  std::vector<float> coef =
      gradient_coefficients(order, lambda_s0, lambda_t, lambda_list, tau, predict_x0);
  const int tau2 = tau * tau;
  const float op = static_cast<float>(1 + tau2);
  if (predict_x0 && order == 2) {
    const float extra = 1.0f * std::exp(op * lambda_t) *
                        (h / 2.0f - (h * op - 1.0f + std::exp(op * -h)) /
                                        (static_cast<float>((1 + tau2) * (1 + tau2)) * h));
    coef[0] = coef[0] + extra;
    coef[1] = coef[1] - extra;
  }
  const Values x = load(last_sample_);
  const Values noise = load(last_noise_);
  Values gradient_part = zeros_like(x);  // torch.zeros_like(this_sample)
  for (int k = 0; k < order; ++k) {
    // model_prev_list = model_outputs + [this_model_output]
    const Tensor& mt = k == 0 ? this_model_output
                              : model_outputs_[model_outputs_.size() - static_cast<std::size_t>(k)];
    const Values m = load(mt);
    if (predict_x0) {
      gradient_part += (op * t.sigma * std::exp(static_cast<float>(-tau2) * lambda_t) *
                        coef[static_cast<std::size_t>(k)]) *
                       m;
    } else {
      gradient_part += (-op * t.alpha * coef[static_cast<std::size_t>(k)]) * m;
    }
  }
  Values x_t;
  if (predict_x0) {
    const Values noise_part =
        (t.sigma * std::sqrt(1.0f - std::exp(static_cast<float>(-2 * tau2) * h))) * noise;
    x_t = (std::exp(static_cast<float>(-tau2) * h) * (t.sigma / s0.sigma)) * x + gradient_part +
          noise_part;
  } else {
    const Values noise_part =
        (static_cast<float>(tau) * t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
    x_t = (t.alpha / s0.alpha) * x + gradient_part + noise_part;
  }
  return store(to_dtype(x_t, x.dtype), last_sample_.shape());
}

SchedulerOutput SASolverScheduler::step(const Tensor& model_output_in, double timestep,
                                        const Tensor& sample_in, const StepArgs& args) {
  const auto& c = config_;
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kName,
                ".step: number of inference steps is unset; call set_timesteps first");
  const bool learned =
      c.variance_type && (*c.variance_type == "learned" || *c.variance_type == "learned_range");
  Tensor model_output = model_output_in;
  if (learned && c.prediction_type == "epsilon") model_output = first_channels(model_output_in, 3);
  check_step_inputs(model_output, sample_in, kName);
  if (!step_index_) {
    step_index_ = begin_index_ ? *begin_index_
                               : static_cast<int64_t>(dpm_index_for_timestep(timestep, timesteps_));
  }
  const int64_t i = *step_index_;
  const int64_t n = static_cast<int64_t>(timesteps_.size());
  DIFFUSE_CHECK(i < n, kName, ".step: called more times than there are timesteps (", n, ")");

  const bool use_corrector = i > 0 && last_sample_.defined();
  const bool predict_x0 = c.algorithm_type == "data_prediction";
  const Values converted = dpm_convert_model_output(
      load(model_output), load(sample_in), sample_in.shape(), sigmas_[static_cast<std::size_t>(i)],
      predict_x0, c.prediction_type, c.thresholding, c.dynamic_thresholding_ratio,
      c.sample_max_value, kName);
  const Tensor converted_t = store(converted, sample_in.shape());
  Tensor sample = sample_in;
  if (use_corrector) {
    const int tau = tau_func(timestep_list_.back().value_or(timestep));
    sample = corrector_update(converted_t, this_corrector_order_, tau);
  }
  for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k) {
    model_outputs_[k] = model_outputs_[k + 1];
    timestep_list_[k] = timestep_list_[k + 1];
  }
  model_outputs_.back() = converted_t;
  timestep_list_.back() = timestep;

  // randn_tensor(model_output.shape, dtype=model_output.dtype)
  const Tensor noise = draw_noise(args, model_output_in.shape(), model_output_in.dtype(), kName);

  int64_t this_p = c.predictor_order;
  int64_t this_c = c.corrector_order;
  if (c.lower_order_final) {
    this_p = std::min(c.predictor_order, n - i);
    this_c = std::min(c.corrector_order, n - i + 1);
  }
  this_predictor_order_ = static_cast<int>(std::min(this_p, lower_order_nums_ + 1));  // warmup
  this_corrector_order_ = static_cast<int>(std::min(this_c, lower_order_nums_ + 2));
  last_sample_ = sample;
  last_noise_ = noise;
  const Tensor prev = predictor_update(sample, noise, this_predictor_order_, tau_func(timestep));
  if (lower_order_nums_ < std::max(c.predictor_order, c.corrector_order - 1)) ++lower_order_nums_;
  step_index_ = i + 1;
  SchedulerOutput out;
  out.prev_sample = prev;
  return out;
}

Tensor SASolverScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                    const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape() &&
                    original.dim() >= 1,
                kName, ".add_noise: original and noise must be tensors of one shape");
  const std::vector<double> per = timesteps_per_item(timesteps, original.size(0), kName);
  const Values x = load(original);
  const Values z = load(noise);
  const DType sd = x.dtype;
  const DType d = promote(x.dtype, z.dtype);
  const std::size_t batch = per.size();
  const std::size_t each = batch == 0 ? 0 : x.v.size() / batch;
  Values out{std::vector<double>(x.v.size()), d};
  for (std::size_t b = 0; b < batch; ++b) {
    const double t = per[b];
    DIFFUSE_CHECK(t >= 0 && t < static_cast<double>(alphas_cumprod_.size()) && t == std::trunc(t),
                  kName, ".add_noise: timestep ", t, " is not an index of the ",
                  alphas_cumprod_.size(), " training timesteps");
    const double a = round_to(sd, alphas_cumprod_[static_cast<std::size_t>(t)]);
    const double sqrt_alpha_prod = round_to(sd, std::sqrt(a));
    const double sqrt_one_minus = round_to(sd, std::sqrt(round_to(sd, 1.0 - a)));
    for (std::size_t k = b * each; k < (b + 1) * each; ++k) {
      out.v[k] = round_to(d, round_to(sd, sqrt_alpha_prod * x.v[k]) +
                                 round_to(promote(sd, z.dtype), sqrt_one_minus * z.v[k]));
    }
  }
  return store(out, original.shape());
}

namespace schedulers {
std::unique_ptr<Scheduler> make_sasolver_scheduler(const nlohmann::json& config) {
  return std::make_unique<SASolverScheduler>(SASolverSchedulerConfig::from_json(config));
}
}  // namespace schedulers

}  // namespace diffuse
