// KDiffusionBase: the state and methods diffusers copies between its k-diffusion discrete
// schedulers (EulerAncestral, LMS, Heun, KDPM2, KDPM2Ancestral: "Copied from
// EulerDiscreteScheduler..."): training sigmas from betas, the timestep spacings, Karras /
// exponential / beta sigma conversion, init_noise_sigma, index lookup and add_noise. Private to
// src/schedulers; not thread-safe (per-run state).
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "diffuse/schedulers/scheduler.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {

class KDiffusionBase : public Scheduler {
 public:
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override { return to_f64(sigmas_); }
  int64_t num_inference_steps() const override { return num_inference_steps_; }

  // max(sigmas) for "linspace"/"trailing" spacing, else (max^2 + 1)^0.5 (float32 tensor math).
  std::optional<double> init_noise_sigma() const override {
    float max_sigma = sigmas_.empty() ? 0.0f : sigmas_.front();
    for (float s : sigmas_) max_sigma = std::max(max_sigma, s);
    if (timestep_spacing_ == "linspace" || timestep_spacing_ == "trailing") return max_sigma;
    return static_cast<double>(std::sqrt(max_sigma * max_sigma + 1.0f));
  }

  // original + noise * sigma(t), sigma looked up by timestep (or begin/step index) and cast to
  // the sample dtype, as every k-diffusion add_noise does.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override {
    DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape(), name_,
                  ".add_noise: original and noise must be defined and of the same shape");
    const DType dt = original.dtype();
    const int64_t batch = original.dim() > 0 ? original.size(0) : 1;
    const std::vector<double> ts = timesteps_per_item(timesteps, batch, name_);
    const std::vector<double> x = values(original);
    const std::vector<double> z = values(noise);
    std::vector<double> out(x.size());
    const std::size_t per = x.size() / static_cast<std::size_t>(std::max<int64_t>(batch, 1));
    for (std::size_t b = 0; b < ts.size(); ++b) {
      std::size_t idx;
      if (!begin_index_) {
        idx = index_for_timestep(ts[b], timesteps_, name_);
      } else if (step_index_) {
        idx = *step_index_;
      } else {
        idx = static_cast<std::size_t>(*begin_index_);
      }
      const double sigma = round_to(dt, sigmas_.at(idx));
      for (std::size_t i = b * per; i < (b + 1) * per; ++i)
        out[i] = round_to(dt, x[i] + round_to(dt, z[i] * sigma));
    }
    return from_values(out, original.shape(), dt);
  }

 protected:
  explicit KDiffusionBase(const char* name) : name_(name) {}

  // Betas -> alphas_cumprod (float32), as every __init__ does.
  void init_alphas(const std::string& beta_schedule, int64_t num_train_timesteps, double beta_start,
                   double beta_end, const std::optional<std::vector<double>>& trained_betas,
                   bool rescale_betas_zero_snr = false, bool allow_exp = false) {
    num_train_timesteps_ = num_train_timesteps;
    std::vector<float> betas;
    if (allow_exp && beta_schedule == "exp" && !trained_betas) {
      betas = betas_for_alpha_bar(num_train_timesteps, 0.999, "exp");
    } else {
      betas = make_betas(name_, beta_schedule, num_train_timesteps, beta_start, beta_end,
                         trained_betas);
    }
    if (rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = cumprod_f32(one_minus(betas));
    // Close to 0 without being 0, so the first sigma is not inf.
    if (rescale_betas_zero_snr) alphas_cumprod_.back() = std::ldexp(1.0f, -24);
    train_sigmas_ = sigmas_from_alphas_cumprod(alphas_cumprod_);
    log_sigmas_ = to_f64(log_f32(train_sigmas_));
  }

  // The spaced timesteps of set_timesteps (descending) as float32 values: "linspace"
  // (np.linspace(0, T-1, n), unrounded), "leading" (arange(n) * (T // n), rounded, +
  // steps_offset), "trailing" (arange(T, 0, -T/n), rounded, - 1).
  std::vector<double> spaced_timesteps(int64_t n, int64_t steps_offset) const {
    DIFFUSE_CHECK(n >= 1 && n <= 1000000, name_,
                  ".set_timesteps: num_inference_steps must be positive, got ", n);
    const int64_t T = num_train_timesteps_;
    std::vector<double> t;
    if (timestep_spacing_ == "linspace") {
      for (double v : reversed(np_linspace(0, static_cast<double>(T - 1), n))) t.push_back(f32(v));
    } else if (timestep_spacing_ == "leading") {
      const int64_t step_ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i)
        t.push_back(f32(f32(np_round(static_cast<double>(i * step_ratio))) + steps_offset));
    } else if (timestep_spacing_ == "trailing") {
      const double step_ratio = static_cast<double>(T) / static_cast<double>(n);
      for (double v : np_arange(static_cast<double>(T), 0, -step_ratio))
        t.push_back(f32(f32(np_round(v)) - 1));
    } else {
      DIFFUSE_FAIL(name_, ": timestep_spacing '", timestep_spacing_,
                   "' is not supported (expected 'linspace', 'leading' or 'trailing')");
    }
    return t;
  }

  // np.interp(timesteps, arange(len(sigmas)), sigmas) over the training sigmas.
  std::vector<double> interp_sigmas(const std::vector<double>& timesteps) const {
    std::vector<double> xp(train_sigmas_.size());
    for (std::size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
    return np_interp(timesteps, xp, to_f64(train_sigmas_));
  }

  // use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas: replaces `sigmas` and sets
  // `timesteps` to sigma_to_t of each (float64). Returns false when none is enabled.
  bool convert_sigmas(bool karras, bool exponential, bool beta, std::optional<double> sigma_min,
                      std::optional<double> sigma_max, int64_t n, std::vector<double>& sigmas,
                      std::vector<double>& timesteps) const {
    if (!karras && !exponential && !beta) return false;
    const double smin = sigma_min ? *sigma_min : sigmas.back();
    const double smax = sigma_max ? *sigma_max : sigmas.front();
    if (karras) {
      sigmas = karras_sigmas(smin, smax, n);
    } else if (exponential) {
      sigmas = exponential_sigmas(smin, smax, n);
    } else {
      sigmas = beta_sigmas(smin, smax, n);
    }
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(sigma_to_t(s, log_sigmas_));
    return true;
  }

  void check_one_sigma_schedule(bool karras, bool exponential, bool beta) const {
    DIFFUSE_CHECK(int(karras) + int(exponential) + int(beta) <= 1, name_,
                  ": only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can "
                  "be used");
  }

  void init_step_index(double timestep) {
    if (begin_index_) {
      step_index_ = static_cast<std::size_t>(*begin_index_);
    } else {
      step_index_ = index_for_timestep(timestep, timesteps_, name_);
    }
  }

  // sample / (sigma^2 + 1)^0.5 with sigma a float32 scalar.
  static Tensor scale_by_sigma(const Tensor& sample, float sigma) {
    const double div = std::sqrt(sigma * sigma + 1.0f);
    std::vector<double> x = values(sample);
    for (double& v : x) v = round_to(sample.dtype(), v / div);
    return from_values(x, sample.shape(), sample.dtype());
  }

  // diffusers' x0 prediction for epsilon / v_prediction with sigma_input a float32 scalar:
  // epsilon: x - s * m; v: m * (-s / (s^2 + 1)^0.5) + x / (s^2 + 1). `dx` and `dm` are the
  // dtypes of the sample and model output values; returns values of promote(dx, dm).
  static std::vector<double> predict_x0(const std::string& prediction_type,
                                        const std::vector<double>& x, DType dx,
                                        const std::vector<double>& m, DType dm, float s,
                                        const char* owner) {
    const DType dp = promote(dx, dm);
    std::vector<double> pred(x.size());
    if (prediction_type == "epsilon") {
      for (std::size_t i = 0; i < x.size(); ++i)
        pred[i] = round_to(dp, x[i] - round_to(dm, s * m[i]));
    } else if (prediction_type == "v_prediction") {
      const float c_out = -s / std::sqrt(s * s + 1.0f);
      const float c_skip_div = s * s + 1.0f;
      for (std::size_t i = 0; i < x.size(); ++i)
        pred[i] = round_to(dp, round_to(dm, m[i] * c_out) + round_to(dx, x[i] / c_skip_div));
    } else {
      DIFFUSE_FAIL(owner, ": prediction_type '", prediction_type,
                   "' must be one of 'epsilon' or 'v_prediction' here");
    }
    return pred;
  }

  const char* name_;
  std::string timestep_spacing_ = "linspace";
  int64_t num_train_timesteps_ = 1000;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;  // ((1 - a) / a)^0.5, increasing with t
  std::vector<double> log_sigmas_;   // np.log of train_sigmas_ (float32 values)
  std::vector<float> sigmas_;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
  std::optional<std::size_t> step_index_;
};

}  // namespace diffuse::schedulers
