// diffusers/schedulers/scheduling_ddim_inverse.py (v0.31): DDIMInverseScheduler, deterministic
// DDIM run backwards (image -> noise, for inversion-based editing such as DiffEdit).
#include <algorithm>
#include <cmath>

#include "diffuse/core/log.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "DDIMInverseScheduler";

struct DDIMInverseConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  bool clip_sample = true;
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;
  std::string prediction_type = "epsilon";
  double clip_sample_range = 1.0;
  std::string timestep_spacing = "leading";
  bool rescale_betas_zero_snr = false;
};

// Integer timestep from the double the interface carries; Error when it is not one of the
// training timesteps.
class DDIMInverseScheduler final : public Scheduler {
 public:
  explicit DDIMInverseScheduler(const nlohmann::json& json) {
    DDIMInverseConfig& c = c_;
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
    r.get("clip_sample_range", c.clip_sample_range);
    r.get("timestep_spacing", c.timestep_spacing);
    r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
    // Deprecated alias of set_alpha_to_one (diffusers reads it from **kwargs).
    std::optional<bool> set_alpha_to_zero;
    r.get("set_alpha_to_zero", set_alpha_to_zero);
    if (set_alpha_to_zero) {
      log_warn(kName, ": set_alpha_to_zero is deprecated, use set_alpha_to_one");
      c.set_alpha_to_one = *set_alpha_to_zero;
    }
    r.finish();
    std::vector<float> betas = make_betas(kName, c.beta_schedule, c.num_train_timesteps,
                                          c.beta_start, c.beta_end, c.trained_betas);
    if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = cumprod_f32(one_minus(betas));
    // The first inverted step has no current alphas_cumprod: 1 or alphas_cumprod[0].
    initial_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
    for (int64_t t = 0; t < c.num_train_timesteps; ++t)
      timesteps_.push_back(static_cast<double>(t));
  }

  std::string class_name() const override { return kName; }

  nlohmann::json config() const override {
    const DDIMInverseConfig& c = c_;
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
    j["clip_sample_range"] = c.clip_sample_range;
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
    if (c_.timestep_spacing == "leading") {
      const int64_t step_ratio = T / n;
      for (int64_t i = 0; i < n; ++i)
        timesteps_.push_back(static_cast<double>(i * step_ratio + c_.steps_offset));
    } else if (c_.timestep_spacing == "trailing") {
      const double step_ratio = static_cast<double>(T) / static_cast<double>(n);
      for (double v : reversed(np_arange(static_cast<double>(T), 0, -step_ratio)))
        timesteps_.push_back(np_round(v) - 1);
    } else {
      DIFFUSE_FAIL(kName, ": timestep_spacing '", c_.timestep_spacing,
                   "' is not supported (expected 'leading' or 'trailing')");
    }
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  int64_t num_inference_steps() const override { return num_inference_steps_; }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    (void)args;
    check_step_inputs(model_output, sample, kName);
    DIFFUSE_CHECK(num_inference_steps_ > 0, kName,
                  ".step: number of inference steps is unset; call set_timesteps first");
    const int64_t T = c_.num_train_timesteps;
    // 1. The "previous" (noisier) step is this timestep; the current one is t - T // n.
    const int64_t prev_t = train_timestep_index(timestep, T, kName);
    const int64_t t = std::min(prev_t - T / num_inference_steps_, T - 1);
    // 2. alphas, betas (float32 scalars).
    const float alpha_prod_t =
        t >= 0 ? alphas_cumprod_[static_cast<std::size_t>(t)] : initial_alpha_cumprod_;
    const float alpha_prod_t_prev = alphas_cumprod_[static_cast<std::size_t>(prev_t)];
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
    // 4. Clip x0.
    if (c_.clip_sample) {
      const double r = c_.clip_sample_range;
      for (double& v : pred) v = std::clamp(v, round_to(dpred, -r), round_to(dpred, r));
    }
    // 5. Direction pointing to x_t; 6. x_t, formula (12).
    const float dir_coeff = std::sqrt(1.0f - alpha_prod_t_prev);
    const float sqrt_a_prev = std::sqrt(alpha_prod_t_prev);
    const DType dprev = promote(dpred, dp);
    std::vector<double> prev(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double dir = round_to(dp, dir_coeff * eps[i]);
      prev[i] = round_to(dprev, round_to(dpred, sqrt_a_prev * pred[i]) + dir);
    }
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dprev);
    out.pred_original_sample = from_values(pred, sample.shape(), dpred);
    return out;
  }

  // diffusers' DDIMInverseScheduler has no add_noise.
  Tensor add_noise(const Tensor&, const Tensor&, const std::vector<double>&) override {
    DIFFUSE_FAIL(kName, " has no add_noise (diffusers' class does not define it)");
  }

 private:
  DDIMInverseConfig c_;
  std::vector<float> alphas_cumprod_;
  float initial_alpha_cumprod_ = 1.0f;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim_inverse_scheduler(const nlohmann::json& config) {
  return std::make_unique<DDIMInverseScheduler>(config);
}

}  // namespace diffuse::schedulers
