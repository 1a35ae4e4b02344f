// diffusers/schedulers/scheduling_ddim.py (v0.31): DDIMScheduler, denoising diffusion implicit
// models (arXiv 2010.02502): deterministic for eta = 0, DDPM-like for eta = 1.
#include <algorithm>
#include <cmath>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "DDIMScheduler";

struct DDIMConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  bool clip_sample = true;
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;
  std::string prediction_type = "epsilon";
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double clip_sample_range = 1.0;
  double sample_max_value = 1.0;
  std::string timestep_spacing = "leading";
  bool rescale_betas_zero_snr = false;
};

// Integer timestep from the double the interface carries; Error when it is not one of the
// training timesteps.
class DDIMScheduler final : public Scheduler {
 public:
  explicit DDIMScheduler(const nlohmann::json& json) {
    DDIMConfig& c = c_;
    ConfigReader r(json, kName);
    r.get("num_train_timesteps", c.num_train_timesteps);
    r.get("beta_start", c.beta_start);
    r.get("beta_end", c.beta_end);
    r.get("beta_schedule", c.beta_schedule);
    r.get("trained_betas", c.trained_betas);
    r.get("clip_sample", c.clip_sample);
    r.get("set_alpha_to_one", c.set_alpha_to_one);
    r.get("steps_offset", c.steps_offset);
    r.get("prediction_type", c.prediction_type);
    r.get("thresholding", c.thresholding);
    r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
    r.get("clip_sample_range", c.clip_sample_range);
    r.get("sample_max_value", c.sample_max_value);
    r.get("timestep_spacing", c.timestep_spacing);
    r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
    r.finish();
    std::vector<float> betas = make_betas(kName, c.beta_schedule, c.num_train_timesteps,
                                          c.beta_start, c.beta_end, c.trained_betas);
    if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = cumprod_f32(one_minus(betas));
    // At the last step there is no previous alphas_cumprod: 1 or alphas_cumprod[0].
    final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
    for (int64_t t = c.num_train_timesteps - 1; t >= 0; --t)
      timesteps_.push_back(static_cast<double>(t));
  }

  std::string class_name() const override { return kName; }

  nlohmann::json config() const override {
    const DDIMConfig& c = c_;
    nlohmann::json j;
    j["_class_name"] = kName;
    j["num_train_timesteps"] = c.num_train_timesteps;
    j["beta_start"] = c.beta_start;
    j["beta_end"] = c.beta_end;
    j["beta_schedule"] = c.beta_schedule;
    j["trained_betas"] = c.trained_betas ? nlohmann::json(*c.trained_betas) : nlohmann::json();
    j["clip_sample"] = c.clip_sample;
    j["set_alpha_to_one"] = c.set_alpha_to_one;
    j["steps_offset"] = c.steps_offset;
    j["prediction_type"] = c.prediction_type;
    j["thresholding"] = c.thresholding;
    j["dynamic_thresholding_ratio"] = c.dynamic_thresholding_ratio;
    j["clip_sample_range"] = c.clip_sample_range;
    j["sample_max_value"] = c.sample_max_value;
    j["timestep_spacing"] = c.timestep_spacing;
    j["rescale_betas_zero_snr"] = c.rescale_betas_zero_snr;
    return j;
  }

  void set_timesteps(const SetTimestepsArgs& a) override {
    DIFFUSE_CHECK(a.num_inference_steps && !a.timesteps && !a.sigmas, kName,
                  ".set_timesteps: takes num_inference_steps only");
    const int64_t n = *a.num_inference_steps;
    const int64_t T = c_.num_train_timesteps;
    DIFFUSE_CHECK(n >= 1 && n <= T, kName, ".set_timesteps: num_inference_steps (", n,
                  ") must be in [1, num_train_timesteps = ", T, "]");
    num_inference_steps_ = n;
    timesteps_.clear();
    if (c_.timestep_spacing == "linspace") {
      for (double v : reversed(np_linspace(0, static_cast<double>(T - 1), n)))
        timesteps_.push_back(np_round(v));
    } else if (c_.timestep_spacing == "leading") {
      const int64_t step_ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i)
        timesteps_.push_back(static_cast<double>(i * step_ratio + c_.steps_offset));
    } else if (c_.timestep_spacing == "trailing") {
      const double step_ratio = static_cast<double>(T) / static_cast<double>(n);
      for (double v : np_arange(static_cast<double>(T), 0, -step_ratio))
        timesteps_.push_back(np_round(v) - 1);
    } else {
      DIFFUSE_FAIL(kName, ": timestep_spacing '", c_.timestep_spacing,
                   "' is not supported (expected 'linspace', 'leading' or 'trailing')");
    }
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  int64_t num_inference_steps() const override { return num_inference_steps_; }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    check_step_inputs(model_output, sample, kName);
    DIFFUSE_CHECK(num_inference_steps_ > 0, kName,
                  ".step: number of inference steps is unset; call set_timesteps first");
    const int64_t T = c_.num_train_timesteps;
    // 1. Previous step value (t - T // n).
    const int64_t t = train_timestep_index(timestep, T, kName);
    const int64_t prev_t = t - T / num_inference_steps_;
    // 2. alphas, betas (float32 scalars).
    const float alpha_prod_t = alphas_cumprod_[static_cast<std::size_t>(t)];
    const float alpha_prod_t_prev =
        prev_t >= 0 ? alphas_cumprod_[static_cast<std::size_t>(prev_t)] : final_alpha_cumprod_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float sqrt_a = std::sqrt(alpha_prod_t);
    const float sqrt_b = std::sqrt(beta_prod_t);

    const DType ds = sample.dtype();
    const DType dm = model_output.dtype();
    const DType dp = promote(ds, dm);
    const std::vector<double> x = values(sample);
    const std::vector<double> m = values(model_output);
    std::vector<double> pred(x.size());
    std::vector<double> eps(x.size());
    // 3. Predicted x0 and epsilon.
    if (c_.prediction_type == "epsilon") {
      for (std::size_t i = 0; i < x.size(); ++i) {
        pred[i] = round_to(dp, round_to(dp, x[i] - round_to(dm, sqrt_b * m[i])) / sqrt_a);
        eps[i] = m[i];
      }
    } else if (c_.prediction_type == "sample") {
      for (std::size_t i = 0; i < x.size(); ++i) {
        pred[i] = m[i];
        eps[i] = round_to(dp, round_to(dp, x[i] - round_to(dm, sqrt_a * m[i])) / sqrt_b);
      }
    } else if (c_.prediction_type == "v_prediction") {
      for (std::size_t i = 0; i < x.size(); ++i) {
        pred[i] = round_to(dp, round_to(ds, sqrt_a * x[i]) - round_to(dm, sqrt_b * m[i]));
        eps[i] = round_to(dp, round_to(dm, sqrt_a * m[i]) + round_to(ds, sqrt_b * x[i]));
      }
    } else {
      DIFFUSE_FAIL(kName, ": prediction_type '", c_.prediction_type,
                   "' must be one of 'epsilon', 'sample' or 'v_prediction'");
    }
    const DType dpred = c_.prediction_type == "sample" ? dm : dp;
    // 4. Clip or threshold x0.
    if (c_.thresholding) {
      pred = values(threshold_sample(from_values(pred, sample.shape(), dpred),
                                     c_.dynamic_thresholding_ratio, c_.sample_max_value));
    } else if (c_.clip_sample) {
      const double r = c_.clip_sample_range;
      for (double& v : pred) v = std::clamp(v, round_to(dpred, -r), round_to(dpred, r));
    }
    // 5. sigma_t(eta), formula (16).
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    const float variance =
        (beta_prod_t_prev / beta_prod_t) * (1.0f - alpha_prod_t / alpha_prod_t_prev);
    const double eta = args.eta.value_or(0.0);
    const float std_dev_t = static_cast<float>(eta) * std::sqrt(variance);
    if (args.use_clipped_model_output) {
      // Glide: epsilon re-derived from the clipped x0.
      const DType de = promote(ds, dpred);
      for (std::size_t i = 0; i < x.size(); ++i)
        eps[i] = round_to(de, round_to(de, x[i] - round_to(dpred, sqrt_a * pred[i])) / sqrt_b);
    }
    // 6. Direction pointing to x_t; 7. x_{t-1} without noise, formula (12).
    const float dir_coeff = std::sqrt(1.0f - alpha_prod_t_prev - std_dev_t * std_dev_t);
    const float sqrt_a_prev = std::sqrt(alpha_prod_t_prev);
    std::vector<double> prev(x.size());
    DType dprev = promote(dpred, dp);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double dir = round_to(dp, dir_coeff * eps[i]);
      prev[i] = round_to(dprev, round_to(dpred, sqrt_a_prev * pred[i]) + dir);
    }
    if (eta > 0) {
      const Tensor noise = draw_noise(args, model_output.shape(), dm, kName);
      const std::vector<double> z = values(noise);
      const DType dout = promote(dprev, dm);
      for (std::size_t i = 0; i < x.size(); ++i)
        prev[i] = round_to(dout, prev[i] + round_to(dm, std_dev_t * z[i]));
      dprev = dout;
    }
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dprev);
    out.pred_original_sample = from_values(pred, sample.shape(), dpred);
    return out;
  }

  // sqrt(alphas_cumprod[t]) * x0 + sqrt(1 - alphas_cumprod[t]) * noise, in the sample dtype.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override {
    return add_noise_alphas_cumprod(alphas_cumprod_, original, noise, timesteps, kName);
  }

 private:
  DDIMConfig c_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim_scheduler(const nlohmann::json& config) {
  return std::make_unique<DDIMScheduler>(config);
}

}  // namespace diffuse::schedulers
