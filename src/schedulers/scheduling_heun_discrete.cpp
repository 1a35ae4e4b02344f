// diffusers/schedulers/scheduling_heun_discrete.py (v0.31): HeunDiscreteScheduler, Heun's
// second-order method of Karras et al. (arXiv 2206.00364) Algorithm 1; every step but the first
// takes two model evaluations (timesteps are repeated).
#include <cmath>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/kdiffusion_base.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "HeunDiscreteScheduler";

struct HeunDiscreteConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  std::string prediction_type = "epsilon";
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;
};

class HeunDiscreteScheduler final : public KDiffusionBase {
 public:
  explicit HeunDiscreteScheduler(const nlohmann::json& json) : KDiffusionBase(kName) {
    HeunDiscreteConfig& c = c_;
    ConfigReader r(json, kName);
    r.get("num_train_timesteps", c.num_train_timesteps);
    r.get("beta_start", c.beta_start);
    r.get("beta_end", c.beta_end);
    r.get("beta_schedule", c.beta_schedule);
    r.get("trained_betas", c.trained_betas);
    r.get("prediction_type", c.prediction_type);
    r.get("use_karras_sigmas", c.use_karras_sigmas);
    r.get("use_exponential_sigmas", c.use_exponential_sigmas);
    r.get("use_beta_sigmas", c.use_beta_sigmas);
    r.get("clip_sample", c.clip_sample);
    r.get("clip_sample_range", c.clip_sample_range);
    r.get("timestep_spacing", c.timestep_spacing);
    r.get("steps_offset", c.steps_offset);
    r.finish();
    check_one_sigma_schedule(c.use_karras_sigmas, c.use_exponential_sigmas, c.use_beta_sigmas);
    timestep_spacing_ = c.timestep_spacing;
    init_alphas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end, c.trained_betas,
                false, /*allow_exp=*/true);
    SetTimestepsArgs a;
    a.num_inference_steps = c.num_train_timesteps;
    set_timesteps(a);
    num_inference_steps_ = 0;  // diffusers' __init__ schedule is the training one
  }

  std::string class_name() const override { return kName; }
  int order() const override { return 2; }

  nlohmann::json config() const override {
    const HeunDiscreteConfig& c = c_;
    nlohmann::json j;
    j["_class_name"] = kName;
    j["num_train_timesteps"] = c.num_train_timesteps;
    j["beta_start"] = c.beta_start;
    j["beta_end"] = c.beta_end;
    j["beta_schedule"] = c.beta_schedule;
    j["trained_betas"] = c.trained_betas ? nlohmann::json(*c.trained_betas) : nlohmann::json();
    j["prediction_type"] = c.prediction_type;
    j["use_karras_sigmas"] = c.use_karras_sigmas;
    j["use_exponential_sigmas"] = c.use_exponential_sigmas;
    j["use_beta_sigmas"] = c.use_beta_sigmas;
    j["clip_sample"] = c.clip_sample;
    j["clip_sample_range"] = c.clip_sample_range;
    j["timestep_spacing"] = c.timestep_spacing;
    j["steps_offset"] = c.steps_offset;
    return j;
  }

  void set_timesteps(const SetTimestepsArgs& a) override {
    DIFFUSE_CHECK(!a.sigmas, kName, ".set_timesteps: custom sigmas are not supported");
    DIFFUSE_CHECK(a.num_inference_steps.has_value() != a.timesteps.has_value(), kName,
                  ".set_timesteps: must pass exactly one of num_inference_steps or timesteps");
    DIFFUSE_CHECK(
        !(a.timesteps && (c_.use_karras_sigmas || c_.use_exponential_sigmas || c_.use_beta_sigmas)),
        kName,
        ".set_timesteps: cannot set timesteps with karras/exponential/beta "
        "sigmas");
    std::vector<double> t;
    if (a.timesteps) {
      for (double v : *a.timesteps) t.push_back(f32(v));
      num_inference_steps_ = static_cast<int64_t>(t.size());
      DIFFUSE_CHECK(!t.empty(), kName, ".set_timesteps: empty custom timesteps");
    } else {
      num_inference_steps_ = *a.num_inference_steps;
      t = spaced_timesteps(num_inference_steps_, c_.steps_offset);
    }
    std::vector<double> s = interp_sigmas(t);
    convert_sigmas(c_.use_karras_sigmas, c_.use_exponential_sigmas, c_.use_beta_sigmas,
                   std::nullopt, std::nullopt, num_inference_steps_, s, t);
    s.push_back(0.0);
    const std::vector<float> s32 = to_f32(s);
    // sigmas: [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps: [t0, t1, t1, t2, t2, ...].
    sigmas_.assign(1, s32.front());
    for (std::size_t i = 1; i + 1 < s32.size(); ++i) sigmas_.insert(sigmas_.end(), 2, s32[i]);
    sigmas_.push_back(s32.back());
    timesteps_.assign(1, t.front());
    for (std::size_t i = 1; i < t.size(); ++i) timesteps_.insert(timesteps_.end(), 2, t[i]);
    prev_derivative_.clear();
    dt_.reset();
    stored_sample_.clear();
    step_index_.reset();
    begin_index_.reset();
  }

  Tensor scale_model_input(const Tensor& sample, double timestep) override {
    if (!step_index_) init_step_index(timestep);
    return scale_by_sigma(sample, sigmas_.at(*step_index_));
  }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    (void)args;
    check_step_inputs(model_output, sample, kName);
    if (!step_index_) init_step_index(timestep);
    const std::size_t si = *step_index_;
    DIFFUSE_CHECK(si + 1 < sigmas_.size(), kName,
                  ".step: called more times than there are timesteps");
    const bool first_order = !dt_.has_value();
    const float sigma = first_order ? sigmas_[si] : sigmas_[si - 1];
    const float sigma_next = first_order ? sigmas_[si + 1] : sigmas_[si];
    const float sigma_hat = sigma;  // gamma = 0: "currently only gamma=0 is supported"
    const DType ds = sample.dtype();
    const DType dm = model_output.dtype();
    const DType dp = promote(ds, dm);
    const std::vector<double> x = values(sample);
    const std::vector<double> m = values(model_output);

    // 1. x0 from the sigma-scaled prediction.
    std::vector<double> pred;
    DType dpred = dp;
    if (c_.prediction_type == "sample") {
      pred = m;
      dpred = dm;
    } else {
      pred =
          predict_x0(c_.prediction_type, x, ds, m, dm, first_order ? sigma_hat : sigma_next, kName);
    }
    if (c_.clip_sample) {
      const double r = c_.clip_sample_range;
      for (double& v : pred) v = std::clamp(v, round_to(dpred, -r), round_to(dpred, r));
    }
    const DType dd = promote(ds, dpred);
    std::vector<double> prev(x.size());
    if (first_order) {
      // 2. ODE derivative; 3. dt; keep both for the second-order half.
      std::vector<double> derivative(x.size());
      for (std::size_t i = 0; i < x.size(); ++i)
        derivative[i] = round_to(dd, round_to(dd, x[i] - pred[i]) / sigma_hat);
      const float dt = sigma_next - sigma_hat;
      for (std::size_t i = 0; i < x.size(); ++i)
        prev[i] = round_to(promote(ds, dd), x[i] + round_to(dd, derivative[i] * dt));
      prev_derivative_ = derivative;
      prev_dtype_ = dd;
      dt_ = dt;
      stored_sample_ = x;
      stored_dtype_ = ds;
    } else {
      // 2. Heun: average of the two derivatives; 3. step from the stored sample.
      const DType davg = promote(dd, prev_dtype_);
      const float dt = *dt_;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double d2 = round_to(dd, round_to(dd, x[i] - pred[i]) / sigma_next);
        const double avg = round_to(davg, round_to(davg, prev_derivative_[i] + d2) / 2.0);
        prev[i] =
            round_to(promote(stored_dtype_, davg), stored_sample_[i] + round_to(davg, avg * dt));
      }
      prev_derivative_.clear();
      dt_.reset();
      stored_sample_.clear();
    }
    ++*step_index_;
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dp);
    out.pred_original_sample = from_values(pred, sample.shape(), dpred);
    return out;
  }

 private:
  HeunDiscreteConfig c_;
  std::vector<double> prev_derivative_;
  DType prev_dtype_ = DType::f32;
  std::optional<float> dt_;  // set between the two halves of a Heun step
  std::vector<double> stored_sample_;
  DType stored_dtype_ = DType::f32;
};

}  // namespace

std::unique_ptr<Scheduler> make_heun_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<HeunDiscreteScheduler>(config);
}

}  // namespace diffuse::schedulers
