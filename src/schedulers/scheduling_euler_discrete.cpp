// diffusers/schedulers/scheduling_euler_discrete.py (v0.31): EulerDiscreteScheduler, Euler steps
// of Karras et al. (arXiv 2206.00364) Algorithm 2, with optional s_churn noise.
#include <algorithm>
#include <cmath>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "EulerDiscreteScheduler";

struct EulerDiscreteConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  std::string prediction_type = "epsilon";
  std::string interpolation_type = "linear";
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  std::string timestep_spacing = "linspace";
  std::string timestep_type = "discrete";
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;
  std::string final_sigmas_type = "zero";
};

class EulerDiscreteScheduler final : public Scheduler {
 public:
  explicit EulerDiscreteScheduler(const nlohmann::json& json) {
    EulerDiscreteConfig& c = c_;
    ConfigReader r(json, kName);
    r.get("num_train_timesteps", c.num_train_timesteps);
    r.get("beta_start", c.beta_start);
    r.get("beta_end", c.beta_end);
    r.get("beta_schedule", c.beta_schedule);
    r.get("trained_betas", c.trained_betas);
    r.get("prediction_type", c.prediction_type);
    r.get("interpolation_type", c.interpolation_type);
    r.get("use_karras_sigmas", c.use_karras_sigmas);
    r.get("use_exponential_sigmas", c.use_exponential_sigmas);
    r.get("use_beta_sigmas", c.use_beta_sigmas);
    r.get("sigma_min", c.sigma_min);
    r.get("sigma_max", c.sigma_max);
    r.get("timestep_spacing", c.timestep_spacing);
    r.get("timestep_type", c.timestep_type);
    r.get("steps_offset", c.steps_offset);
    r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
    r.get("final_sigmas_type", c.final_sigmas_type);
    r.finish();
    DIFFUSE_CHECK(
        int(c.use_beta_sigmas) + int(c.use_exponential_sigmas) + int(c.use_karras_sigmas) <= 1,
        kName,
        ": only one of use_beta_sigmas, use_exponential_sigmas, "
        "use_karras_sigmas can be used");

    std::vector<float> betas = make_betas(kName, c.beta_schedule, c.num_train_timesteps,
                                          c.beta_start, c.beta_end, c.trained_betas);
    if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = cumprod_f32(one_minus(betas));
    // Close to 0 without being 0, so the first sigma is not inf.
    if (c.rescale_betas_zero_snr) alphas_cumprod_.back() = std::ldexp(1.0f, -24);

    // Training schedule (before set_timesteps): sigmas descending plus a final 0.
    const std::vector<float> train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod_);
    sigmas_ = reversed(train_sigmas);
    const std::vector<double> t = reversed(
        np_linspace(0, static_cast<double>(c.num_train_timesteps - 1), c.num_train_timesteps));
    if (c.timestep_type == "continuous" && c.prediction_type == "v_prediction") {
      timesteps_.clear();
      for (float s : sigmas_) timesteps_.push_back(f32(0.25f * std::log(s)));
    } else {
      timesteps_.clear();
      for (double v : t) timesteps_.push_back(f32(v));
    }
    sigmas_.push_back(0.0f);
  }

  std::string class_name() const override { return kName; }

  nlohmann::json config() const override {
    const EulerDiscreteConfig& c = c_;
    nlohmann::json j;
    j["_class_name"] = kName;
    j["num_train_timesteps"] = c.num_train_timesteps;
    j["beta_start"] = c.beta_start;
    j["beta_end"] = c.beta_end;
    j["beta_schedule"] = c.beta_schedule;
    j["trained_betas"] = c.trained_betas ? nlohmann::json(*c.trained_betas) : nlohmann::json();
    j["prediction_type"] = c.prediction_type;
    j["interpolation_type"] = c.interpolation_type;
    j["use_karras_sigmas"] = c.use_karras_sigmas;
    j["use_exponential_sigmas"] = c.use_exponential_sigmas;
    j["use_beta_sigmas"] = c.use_beta_sigmas;
    j["sigma_min"] = c.sigma_min ? nlohmann::json(*c.sigma_min) : nlohmann::json();
    j["sigma_max"] = c.sigma_max ? nlohmann::json(*c.sigma_max) : nlohmann::json();
    j["timestep_spacing"] = c.timestep_spacing;
    j["timestep_type"] = c.timestep_type;
    j["steps_offset"] = c.steps_offset;
    j["rescale_betas_zero_snr"] = c.rescale_betas_zero_snr;
    j["final_sigmas_type"] = c.final_sigmas_type;
    return j;
  }

  void set_timesteps(const SetTimestepsArgs& a) override {
    const EulerDiscreteConfig& c = c_;
    const bool has_t = a.timesteps.has_value();
    const bool has_s = a.sigmas.has_value();
    DIFFUSE_CHECK(!(has_t && has_s), kName, ".set_timesteps: only one of timesteps or sigmas ",
                  "should be set");
    DIFFUSE_CHECK(a.num_inference_steps || has_t || has_s, kName,
                  ".set_timesteps: must pass exactly one of num_inference_steps, timesteps or "
                  "sigmas");
    DIFFUSE_CHECK(!(a.num_inference_steps && (has_t || has_s)), kName,
                  ".set_timesteps: can only pass one of num_inference_steps, timesteps or sigmas");
    DIFFUSE_CHECK(
        !(has_t && (c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas)), kName,
        ".set_timesteps: cannot set timesteps with karras/exponential/beta "
        "sigmas");
    DIFFUSE_CHECK(
        !(has_t && c.timestep_type == "continuous" && c.prediction_type == "v_prediction"), kName,
        ".set_timesteps: cannot set timesteps with timestep_type='continuous' "
        "and prediction_type='v_prediction'");
    int64_t n = 0;
    if (a.num_inference_steps) {
      n = *a.num_inference_steps;
    } else if (has_t) {
      n = static_cast<int64_t>(a.timesteps->size());
    } else {
      n = static_cast<int64_t>(a.sigmas->size()) - 1;
    }
    DIFFUSE_CHECK(n >= 1 && n <= 1000000, kName,
                  ".set_timesteps: expected at least one inference step, got ", n);
    num_inference_steps_ = n;

    const std::vector<float> train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod_);
    const std::vector<double> log_sigmas = to_f64(log_f32(train_sigmas));
    std::vector<double> timesteps;  // float64 here, rounded to float32 at the end
    std::vector<float> sigmas;
    if (has_s) {
      sigmas = to_f32(*a.sigmas);
      for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
        timesteps.push_back(sigma_to_t(sigmas[i], log_sigmas));
      }
    } else {
      if (has_t) {
        for (double v : *a.timesteps) timesteps.push_back(f32(v));
      } else if (c.timestep_spacing == "linspace") {
        for (double v : reversed(np_linspace(0, static_cast<double>(c.num_train_timesteps - 1), n)))
          timesteps.push_back(f32(v));
      } else if (c.timestep_spacing == "leading") {
        const int64_t step_ratio = c.num_train_timesteps / n;
        for (int64_t i = n - 1; i >= 0; --i) {
          timesteps.push_back(
              f32(f32(np_round(static_cast<double>(i * step_ratio))) + c.steps_offset));
        }
      } else if (c.timestep_spacing == "trailing") {
        const double step_ratio =
            static_cast<double>(c.num_train_timesteps) / static_cast<double>(n);
        for (double v : np_arange(static_cast<double>(c.num_train_timesteps), 0, -step_ratio))
          timesteps.push_back(f32(f32(np_round(v)) - 1));
      } else {
        DIFFUSE_FAIL(kName, ": timestep_spacing '", c.timestep_spacing,
                     "' is not supported (expected 'linspace', 'leading' or 'trailing')");
      }

      std::vector<double> s;
      if (c.interpolation_type == "linear") {
        std::vector<double> xp(train_sigmas.size());
        for (std::size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
        s = np_interp(timesteps, xp, to_f64(train_sigmas));
      } else if (c.interpolation_type == "log_linear") {
        // torch.linspace(log(sigmas[-1]), log(sigmas[0]), n + 1).exp(): diffusers' own quirk
        // gives n + 2 sigmas here (the final sigma is appended below as well).
        const std::vector<float> l = torch_linspace_f32(std::log(train_sigmas.back()),
                                                        std::log(train_sigmas.front()), n + 1);
        for (float v : l) s.push_back(static_cast<double>(std::exp(v)));
      } else {
        DIFFUSE_FAIL(kName, ": interpolation_type '", c.interpolation_type,
                     "' is not supported (expected 'linear' or 'log_linear')");
      }

      if (c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas) {
        const double smin = c.sigma_min ? *c.sigma_min : s.back();
        const double smax = c.sigma_max ? *c.sigma_max : s.front();
        if (c.use_karras_sigmas) {
          s = karras_sigmas(smin, smax, n);
        } else if (c.use_exponential_sigmas) {
          s = exponential_sigmas(smin, smax, n);
        } else {
          s = beta_sigmas(smin, smax, n);
        }
        timesteps.clear();
        for (double v : s) timesteps.push_back(sigma_to_t(v, log_sigmas));
      }

      double sigma_last = 0;
      if (c.final_sigmas_type == "sigma_min") {
        sigma_last = train_sigmas.front();
      } else if (c.final_sigmas_type != "zero") {
        DIFFUSE_FAIL(kName, ": final_sigmas_type '", c.final_sigmas_type,
                     "' is not supported (expected 'zero' or 'sigma_min')");
      }
      s.push_back(sigma_last);
      sigmas = to_f32(s);
    }

    timesteps_.clear();
    if (c.timestep_type == "continuous" && c.prediction_type == "v_prediction") {
      for (std::size_t i = 0; i + 1 < sigmas.size(); ++i)
        timesteps_.push_back(f32(0.25f * std::log(sigmas[i])));
    } else {
      for (double v : timesteps) timesteps_.push_back(f32(v));
    }
    sigmas_ = sigmas;
    step_index_.reset();
    begin_index_.reset();
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override { return to_f64(sigmas_); }
  int64_t num_inference_steps() const override { return num_inference_steps_; }

  std::optional<double> init_noise_sigma() const override {
    float max_sigma = sigmas_.front();
    for (float s : sigmas_) max_sigma = std::max(max_sigma, s);
    if (c_.timestep_spacing == "linspace" || c_.timestep_spacing == "trailing") return max_sigma;
    return static_cast<double>(std::sqrt(max_sigma * max_sigma + 1.0f));
  }

  Tensor scale_model_input(const Tensor& sample, double timestep) override {
    if (!step_index_) init_step_index(timestep);
    const float sigma = sigmas_.at(*step_index_);
    const double div = std::sqrt(sigma * sigma + 1.0f);  // float32 0-dim tensor
    std::vector<double> x = values(sample);
    for (double& v : x) v = round_to(sample.dtype(), v / div);
    return from_values(x, sample.shape(), sample.dtype());
  }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    check_step_inputs(model_output, sample, kName);
    if (!step_index_) init_step_index(timestep);
    DIFFUSE_CHECK(*step_index_ + 1 < sigmas_.size(), kName,
                  ".step: called more times than there are timesteps");
    const DType dm = model_output.dtype();
    // Upcast to avoid precision issues when computing prev_sample.
    DType ds = DType::f32;
    std::vector<double> x = values(sample);
    for (double& v : x) v = f32(v);
    const std::vector<double> m = values(model_output);

    const float sigma = sigmas_[*step_index_];
    const double gamma =
        (args.s_tmin <= sigma && sigma <= args.s_tmax)
            ? std::min(args.s_churn / static_cast<double>(sigmas_.size() - 1), std::sqrt(2.0) - 1)
            : 0.0;
    const float sigma_hat = static_cast<float>(sigma * f32(gamma + 1));
    if (gamma > 0) {
      const Tensor noise = draw_noise(args, model_output.shape(), dm, kName);
      const std::vector<double> z = values(noise);
      const float scale = std::sqrt(sigma_hat * sigma_hat - sigma * sigma);
      const DType dz = dm;
      const DType dsum = promote(ds, dz);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double eps = round_to(dz, z[i] * args.s_noise);
        x[i] = round_to(dsum, x[i] + round_to(dz, eps * scale));
      }
      ds = dsum;
    }

    const DType dp = promote(ds, dm);  // dtype of pred_original_sample and prev_sample
    std::vector<double> pred(x.size());
    if (c_.prediction_type == "original_sample" || c_.prediction_type == "sample") {
      pred = m;
    } else if (c_.prediction_type == "epsilon") {
      for (std::size_t i = 0; i < x.size(); ++i)
        pred[i] = round_to(dp, x[i] - round_to(dm, sigma_hat * m[i]));
    } else if (c_.prediction_type == "v_prediction") {
      const float c_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
      const float c_skip_div = sigma * sigma + 1.0f;
      for (std::size_t i = 0; i < x.size(); ++i) {
        pred[i] = round_to(dp, round_to(dm, m[i] * c_out) + round_to(ds, x[i] / c_skip_div));
      }
    } else {
      DIFFUSE_FAIL(kName, ": prediction_type '", c_.prediction_type,
                   "' must be one of 'epsilon', 'sample' or 'v_prediction'");
    }
    const DType dd = promote(
        ds, c_.prediction_type == "sample" || c_.prediction_type == "original_sample" ? dm : dp);
    const float dt = sigmas_[*step_index_ + 1] - sigma_hat;
    std::vector<double> prev(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double derivative = round_to(dd, round_to(dd, x[i] - pred[i]) / sigma_hat);
      prev[i] = round_to(dm, round_to(dd, x[i] + round_to(dd, derivative * dt)));
    }
    ++*step_index_;
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dm);
    out.pred_original_sample = from_values(pred, sample.shape(), dp);
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override {
    DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape(), kName,
                  ".add_noise: original and noise must have the same shape");
    const DType dt = original.dtype();
    const int64_t batch = original.dim() > 0 ? original.size(0) : 1;
    const std::vector<double> ts = timesteps_per_item(timesteps, batch, kName);
    const std::vector<double> x = values(original);
    const std::vector<double> z = values(noise);
    std::vector<double> out(x.size());
    const std::size_t per = x.size() / static_cast<std::size_t>(std::max<int64_t>(batch, 1));
    for (std::size_t b = 0; b < ts.size(); ++b) {
      std::size_t idx;
      if (!begin_index_) {
        idx = index_for_timestep(ts[b], timesteps_, kName);
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

 private:
  void init_step_index(double timestep) {
    if (begin_index_) {
      step_index_ = static_cast<std::size_t>(*begin_index_);
    } else {
      step_index_ = index_for_timestep(timestep, timesteps_, kName);
    }
  }

  EulerDiscreteConfig c_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> sigmas_;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
  std::optional<std::size_t> step_index_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<EulerDiscreteScheduler>(config);
}

}  // namespace diffuse::schedulers
