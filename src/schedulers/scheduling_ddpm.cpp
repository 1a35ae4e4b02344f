// diffusers/schedulers/scheduling_ddpm.py (v0.31): DDPMScheduler, denoising diffusion
// probabilistic models (arXiv 2006.11239): ancestral sampling with the posterior variance.
#include <algorithm>
#include <cmath>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "DDPMScheduler";

struct DDPMConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  std::string variance_type = "fixed_small";
  bool clip_sample = true;
  std::string prediction_type = "epsilon";
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double clip_sample_range = 1.0;
  double sample_max_value = 1.0;
  std::string timestep_spacing = "leading";
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;
};

// Integer timestep from the double the interface carries; Error when it is not one of the
// training timesteps.
class DDPMScheduler final : public Scheduler {
 public:
  explicit DDPMScheduler(const nlohmann::json& json) {
    DDPMConfig& c = c_;
    ConfigReader r(json, kName);
    r.get("num_train_timesteps", c.num_train_timesteps);
    r.get("beta_start", c.beta_start);
    r.get("beta_end", c.beta_end);
    r.get("beta_schedule", c.beta_schedule);
    r.get("trained_betas", c.trained_betas);
    r.get("variance_type", c.variance_type);
    r.get("clip_sample", c.clip_sample);
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
                                          c.beta_start, c.beta_end, c.trained_betas,
                                          /*allow_sigmoid=*/true);
    if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = cumprod_f32(one_minus(betas));
    for (int64_t t = c.num_train_timesteps - 1; t >= 0; --t)
      timesteps_.push_back(static_cast<double>(t));
  }

  std::string class_name() const override { return kName; }

  nlohmann::json config() const override {
    const DDPMConfig& c = c_;
    nlohmann::json j;
    j["_class_name"] = kName;
    j["num_train_timesteps"] = c.num_train_timesteps;
    j["beta_start"] = c.beta_start;
    j["beta_end"] = c.beta_end;
    j["beta_schedule"] = c.beta_schedule;
    j["trained_betas"] = c.trained_betas ? nlohmann::json(*c.trained_betas) : nlohmann::json();
    j["variance_type"] = c.variance_type;
    j["clip_sample"] = c.clip_sample;
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
    DIFFUSE_CHECK(!a.sigmas, kName, ".set_timesteps: custom sigmas are not supported");
    DIFFUSE_CHECK(!(a.num_inference_steps && a.timesteps), kName,
                  ".set_timesteps: can only pass one of num_inference_steps or timesteps");
    DIFFUSE_CHECK(a.num_inference_steps || a.timesteps, kName,
                  ".set_timesteps: pass num_inference_steps or timesteps");
    const int64_t T = c_.num_train_timesteps;
    timesteps_.clear();
    if (a.timesteps) {
      const std::vector<double>& ts = *a.timesteps;
      DIFFUSE_CHECK(!ts.empty(), kName, ".set_timesteps: empty custom timesteps");
      for (std::size_t i = 1; i < ts.size(); ++i)
        DIFFUSE_CHECK(ts[i] < ts[i - 1], kName,
                      ".set_timesteps: custom timesteps must be in descending order");
      DIFFUSE_CHECK(ts[0] < static_cast<double>(T), kName,
                    ".set_timesteps: custom timesteps must start below num_train_timesteps (", T,
                    "), got ", ts[0]);
      for (double v : ts) timesteps_.push_back(std::trunc(v));  // np.array(..., dtype=int64)
      custom_timesteps_ = true;
      num_inference_steps_ = 0;  // diffusers leaves num_inference_steps None
      return;
    }
    const int64_t n = *a.num_inference_steps;
    DIFFUSE_CHECK(n >= 1 && n <= T, kName, ".set_timesteps: num_inference_steps (", n,
                  ") must be in [1, num_train_timesteps = ", T, "]");
    num_inference_steps_ = n;
    custom_timesteps_ = false;
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
  bool custom_timesteps() const { return custom_timesteps_; }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    DIFFUSE_CHECK(model_output.defined() && sample.defined(), kName,
                  ".step: model_output and sample must be defined tensors");
    const int64_t T = c_.num_train_timesteps;
    const int64_t t = train_timestep_index(timestep, T, kName);
    const int64_t prev_t = previous_timestep(t);
    // A model predicting its variance returns 2 * C channels: [epsilon, variance].
    Tensor mo = model_output;
    std::vector<double> predicted_variance;
    const bool learned = c_.variance_type == "learned" || c_.variance_type == "learned_range";
    if (learned && sample.dim() >= 2 && model_output.dim() == sample.dim() &&
        model_output.size(1) == 2 * sample.size(1)) {
      const std::vector<Tensor> parts = model_output.split(sample.size(1), 1);
      mo = parts[0].contiguous();
      predicted_variance = values(parts[1]);
    }
    check_step_inputs(mo, sample, kName);

    // 1. alphas, betas (float32 scalars).
    const float alpha_prod_t = alphas_cumprod_[static_cast<std::size_t>(t)];
    const float alpha_prod_t_prev =
        prev_t >= 0 ? alphas_cumprod_[static_cast<std::size_t>(prev_t)] : 1.0f;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    const float current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
    const float current_beta_t = 1.0f - current_alpha_t;
    const float sqrt_a = std::sqrt(alpha_prod_t);
    const float sqrt_b = std::sqrt(beta_prod_t);

    const DType ds = sample.dtype();
    const DType dm = mo.dtype();
    const DType dp = promote(ds, dm);
    const std::vector<double> x = values(sample);
    const std::vector<double> m = values(mo);
    // 2. Predicted x0, formula (15).
    std::vector<double> pred(x.size());
    if (c_.prediction_type == "epsilon") {
      for (std::size_t i = 0; i < x.size(); ++i)
        pred[i] = round_to(dp, round_to(dp, x[i] - round_to(dm, sqrt_b * m[i])) / sqrt_a);
    } else if (c_.prediction_type == "sample") {
      pred = m;
    } else if (c_.prediction_type == "v_prediction") {
      for (std::size_t i = 0; i < x.size(); ++i)
        pred[i] = round_to(dp, round_to(ds, sqrt_a * x[i]) - round_to(dm, sqrt_b * m[i]));
    } else {
      DIFFUSE_FAIL(kName, ": prediction_type '", c_.prediction_type,
                   "' must be one of 'epsilon', 'sample' or 'v_prediction'");
    }
    const DType dpred = c_.prediction_type == "sample" ? dm : dp;
    // 3. Clip or threshold x0.
    if (c_.thresholding) {
      pred = values(threshold_sample(from_values(pred, sample.shape(), dpred),
                                     c_.dynamic_thresholding_ratio, c_.sample_max_value));
    } else if (c_.clip_sample) {
      const double r = c_.clip_sample_range;
      for (double& v : pred) v = std::clamp(v, round_to(dpred, -r), round_to(dpred, r));
    }
    // 4. Coefficients of x0 and x_t, formula (7); 5. posterior mean.
    const float pred_coeff = (std::sqrt(alpha_prod_t_prev) * current_beta_t) / beta_prod_t;
    const float cur_coeff = std::sqrt(current_alpha_t) * beta_prod_t_prev / beta_prod_t;
    DType dprev = promote(dpred, ds);
    std::vector<double> prev(x.size());
    for (std::size_t i = 0; i < x.size(); ++i)
      prev[i] =
          round_to(dprev, round_to(dpred, pred_coeff * pred[i]) + round_to(ds, cur_coeff * x[i]));
    // 6. Add noise.
    if (t > 0) {
      const Tensor noise = draw_noise(args, mo.shape(), dm, kName);
      const std::vector<double> z = values(noise);
      const DType dout = promote(dprev, dm);
      if (c_.variance_type == "learned_range") {
        DIFFUSE_CHECK(!predicted_variance.empty(), kName,
                      ": variance_type 'learned_range' needs a model output with 2x channels");
        const float min_log = std::log(posterior_variance(t, prev_t));
        const float max_log = std::log(current_beta_t);
        const DType dv = dm;
        for (std::size_t i = 0; i < x.size(); ++i) {
          const double frac = round_to(dv, round_to(dv, predicted_variance[i] + 1) / 2);
          const double v = round_to(
              dv, round_to(dv, frac * max_log) + round_to(dv, round_to(dv, 1 - frac) * min_log));
          const double s = round_to(dv, std::exp(round_to(dv, 0.5 * v)));
          prev[i] = round_to(dout, prev[i] + round_to(dout, s * z[i]));
        }
      } else if (c_.variance_type == "learned") {
        DIFFUSE_CHECK(!predicted_variance.empty(), kName,
                      ": variance_type 'learned' needs a model output with 2x channels");
        const DType dv = dm;
        for (std::size_t i = 0; i < x.size(); ++i) {
          const double s = round_to(dv, std::sqrt(predicted_variance[i]));
          prev[i] = round_to(dout, prev[i] + round_to(dout, s * z[i]));
        }
      } else {
        const float scale = variance_scale(t, prev_t, current_beta_t);
        for (std::size_t i = 0; i < x.size(); ++i)
          prev[i] = round_to(dout, prev[i] + round_to(dm, scale * z[i]));
      }
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
  // Custom schedules: the timestep after `t` (-1 after the last). Otherwise diffusers steps by
  // T // num_inference_steps whatever the spacing (T // T = 1 before set_timesteps).
  int64_t previous_timestep(int64_t t) const {
    if (custom_timesteps_) {
      const auto it = std::find(timesteps_.begin(), timesteps_.end(), static_cast<double>(t));
      DIFFUSE_CHECK(it != timesteps_.end(), kName, ".step: timestep ", t,
                    " is not in the schedule set by set_timesteps");
      const auto next = it + 1;
      return next == timesteps_.end() ? -1 : static_cast<int64_t>(*next);
    }
    const int64_t n = num_inference_steps_ > 0 ? num_inference_steps_ : c_.num_train_timesteps;
    return t - c_.num_train_timesteps / n;
  }

  // (1 - a_prev) / (1 - a_t) * beta_t, clamped to >= 1e-20 (it is logged), formulas (6)-(7).
  float posterior_variance(int64_t t, int64_t prev_t) const {
    const float alpha_prod_t = alphas_cumprod_[static_cast<std::size_t>(t)];
    const float alpha_prod_t_prev =
        prev_t >= 0 ? alphas_cumprod_[static_cast<std::size_t>(prev_t)] : 1.0f;
    const float current_beta_t = 1.0f - alpha_prod_t / alpha_prod_t_prev;
    const float variance = (1.0f - alpha_prod_t_prev) / (1.0f - alpha_prod_t) * current_beta_t;
    return std::max(variance, 1e-20f);
  }

  // The factor multiplying the noise for the fixed variance types.
  float variance_scale(int64_t t, int64_t prev_t, float current_beta_t) const {
    const std::string& v = c_.variance_type;
    if (v == "fixed_small") return std::sqrt(posterior_variance(t, prev_t));
    if (v == "fixed_small_log") {  // rl-diffuser: exp(0.5 * log(variance)), not square-rooted
      return std::exp(0.5f * std::log(posterior_variance(t, prev_t)));
    }
    if (v == "fixed_large") return std::sqrt(current_beta_t);
    if (v == "fixed_large_log") {  // Glide max_log; its square root is NaN, as in diffusers
      return std::sqrt(std::log(current_beta_t));
    }
    DIFFUSE_FAIL(kName, ": variance_type '", v,
                 "' is not supported (expected 'fixed_small', 'fixed_small_log', 'fixed_large', "
                 "'fixed_large_log', 'learned' or 'learned_range')");
  }

  DDPMConfig c_;
  std::vector<float> alphas_cumprod_;
  bool custom_timesteps_ = false;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddpm_scheduler(const nlohmann::json& config) {
  return std::make_unique<DDPMScheduler>(config);
}

}  // namespace diffuse::schedulers
