// diffusers/schedulers/scheduling_euler_ancestral_discrete.py (v0.31):
// EulerAncestralDiscreteScheduler, ancestral Euler steps (k-diffusion's sample_euler_ancestral,
// A1111 "Euler a").
#include <cmath>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/kdiffusion_base.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "EulerAncestralDiscreteScheduler";

struct EulerAncestralDiscreteConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  std::string prediction_type = "epsilon";
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;
};

class EulerAncestralDiscreteScheduler final : public KDiffusionBase {
 public:
  explicit EulerAncestralDiscreteScheduler(const nlohmann::json& json) : KDiffusionBase(kName) {
    EulerAncestralDiscreteConfig& c = c_;
    ConfigReader r(json, kName);
    r.get("num_train_timesteps", c.num_train_timesteps);
    r.get("beta_start", c.beta_start);
    r.get("beta_end", c.beta_end);
    r.get("beta_schedule", c.beta_schedule);
    r.get("trained_betas", c.trained_betas);
    r.get("prediction_type", c.prediction_type);
    r.get("timestep_spacing", c.timestep_spacing);
    r.get("steps_offset", c.steps_offset);
    r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
    r.finish();
    timestep_spacing_ = c.timestep_spacing;
    init_alphas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end, c.trained_betas,
                c.rescale_betas_zero_snr);
    sigmas_ = reversed(train_sigmas_);
    sigmas_.push_back(0.0f);
    timesteps_ = reversed(
        np_linspace(0, static_cast<double>(c.num_train_timesteps - 1), c.num_train_timesteps));
  }

  std::string class_name() const override { return kName; }

  nlohmann::json config() const override {
    const EulerAncestralDiscreteConfig& c = c_;
    nlohmann::json j;
    j["_class_name"] = kName;
    j["num_train_timesteps"] = c.num_train_timesteps;
    j["beta_start"] = c.beta_start;
    j["beta_end"] = c.beta_end;
    j["beta_schedule"] = c.beta_schedule;
    j["trained_betas"] = c.trained_betas ? nlohmann::json(*c.trained_betas) : nlohmann::json();
    j["prediction_type"] = c.prediction_type;
    j["timestep_spacing"] = c.timestep_spacing;
    j["steps_offset"] = c.steps_offset;
    j["rescale_betas_zero_snr"] = c.rescale_betas_zero_snr;
    return j;
  }

  void set_timesteps(const SetTimestepsArgs& a) override {
    DIFFUSE_CHECK(a.num_inference_steps && !a.timesteps && !a.sigmas, kName,
                  ".set_timesteps: takes num_inference_steps only (no custom timesteps or "
                  "sigmas)");
    num_inference_steps_ = *a.num_inference_steps;
    const std::vector<double> t = spaced_timesteps(num_inference_steps_, c_.steps_offset);
    std::vector<double> s = interp_sigmas(t);
    s.push_back(0.0);
    sigmas_ = to_f32(s);
    timesteps_ = t;
    step_index_.reset();
    begin_index_.reset();
  }

  Tensor scale_model_input(const Tensor& sample, double timestep) override {
    if (!step_index_) init_step_index(timestep);
    return scale_by_sigma(sample, sigmas_.at(*step_index_));
  }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    check_step_inputs(model_output, sample, kName);
    if (!step_index_) init_step_index(timestep);
    DIFFUSE_CHECK(*step_index_ + 1 < sigmas_.size(), kName,
                  ".step: called more times than there are timesteps");
    if (c_.prediction_type == "sample") {
      DIFFUSE_FAIL(kName, ": prediction_type not implemented yet: sample");
    }
    const float sigma = sigmas_[*step_index_];
    const DType dm = model_output.dtype();
    const DType ds = DType::f32;  // "Upcast to avoid precision issues when computing prev_sample"
    std::vector<double> x = values(sample);
    for (double& v : x) v = f32(v);
    const std::vector<double> m = values(model_output);
    const std::vector<double> pred = predict_x0(c_.prediction_type, x, ds, m, dm, sigma, kName);
    const DType dp = promote(ds, dm);

    const float sigma_from = sigmas_[*step_index_];
    const float sigma_to = sigmas_[*step_index_ + 1];
    const float sigma_up =
        std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                  (sigma_from * sigma_from));
    const float sigma_down = std::sqrt(sigma_to * sigma_to - sigma_up * sigma_up);
    const float dt = sigma_down - sigma;

    const Tensor noise = draw_noise(args, model_output.shape(), dm, kName);
    const std::vector<double> z = values(noise);
    std::vector<double> prev(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double derivative = round_to(dp, round_to(dp, x[i] - pred[i]) / sigma);
      double p = round_to(dp, x[i] + round_to(dp, derivative * dt));
      p = round_to(promote(dp, dm), p + round_to(dm, z[i] * sigma_up));
      prev[i] = round_to(dm, p);
    }
    ++*step_index_;
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dm);
    out.pred_original_sample = from_values(pred, sample.shape(), dp);
    return out;
  }

 private:
  EulerAncestralDiscreteConfig c_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<EulerAncestralDiscreteScheduler>(config);
}

}  // namespace diffuse::schedulers
