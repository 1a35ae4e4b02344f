// diffusers/schedulers/scheduling_k_dpm_2_discrete.py (v0.31): KDPM2DiscreteScheduler,
// k-diffusion's sample_dpm_2 (A1111 "DPM2"): a first-order step to the log-midpoint sigma, then
// the second-order update from the stored sample.
#include <cmath>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/kdiffusion_base.h"
#include "src/schedulers/kdpm2_common.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "KDPM2DiscreteScheduler";

class KDPM2DiscreteScheduler final : public KDiffusionBase {
 public:
  explicit KDPM2DiscreteScheduler(const nlohmann::json& json) : KDiffusionBase(kName) {
    c_ = KDPM2Config::from_json(json, kName);
    const KDPM2Config& c = c_;
    check_one_sigma_schedule(c.use_karras_sigmas, c.use_exponential_sigmas, c.use_beta_sigmas);
    timestep_spacing_ = c.timestep_spacing;
    init_alphas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end, c.trained_betas);
    SetTimestepsArgs a;
    a.num_inference_steps = c.num_train_timesteps;
    set_timesteps(a);
    num_inference_steps_ = 0;
  }

  std::string class_name() const override { return kName; }
  int order() const override { return 2; }

  nlohmann::json config() const override { return c_.to_json(kName); }

  void set_timesteps(const SetTimestepsArgs& a) override {
    DIFFUSE_CHECK(a.num_inference_steps && !a.timesteps && !a.sigmas, kName,
                  ".set_timesteps: takes num_inference_steps only (no custom timesteps or "
                  "sigmas)");
    num_inference_steps_ = *a.num_inference_steps;
    std::vector<double> t = spaced_timesteps(num_inference_steps_, c_.steps_offset);
    std::vector<double> s = interp_sigmas(t);
    // Converted schedules keep numpy's float64 timesteps; diffusers rounds the Karras ones only.
    const bool converted =
        convert_sigmas(c_.use_karras_sigmas, c_.use_exponential_sigmas, c_.use_beta_sigmas,
                       std::nullopt, std::nullopt, num_inference_steps_, s, t);
    if (c_.use_karras_sigmas)
      for (double& v : t) v = np_round(v);
    s.push_back(0.0);
    const std::vector<float> sig = to_f32(s);
    const std::size_t n1 = sig.size();  // num_inference_steps + 1
    std::vector<float> interpol(n1);
    for (std::size_t i = 0; i < n1; ++i) interpol[i] = log_midpoint(sig[i], sig[(i + n1 - 1) % n1]);

    sigmas_ = interleave(sig);
    sigmas_interpol_ = interleave(interpol);
    // Timesteps: [t0, t_interpol1, t1, t_interpol2, t2, ...], t_interpol in t's dtype.
    timesteps_.assign(1, t.front());
    for (std::size_t i = 1; i + 1 < n1; ++i) {
      const double ti = sigma_to_t(interpol[i], log_sigmas_);
      timesteps_.push_back(converted ? ti : f32(ti));
      timesteps_.push_back(t[i]);
    }
    stored_sample_.clear();
    step_index_.reset();
    begin_index_.reset();
  }

  Tensor scale_model_input(const Tensor& sample, double timestep) override {
    if (!step_index_) init_step_index(timestep);
    const float sigma =
        first_order() ? sigmas_.at(*step_index_) : sigmas_interpol_.at(*step_index_);
    return scale_by_sigma(sample, sigma);
  }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    (void)args;
    check_step_inputs(model_output, sample, kName);
    if (!step_index_) init_step_index(timestep);
    const std::size_t si = *step_index_;
    DIFFUSE_CHECK(si + 1 < sigmas_.size(), kName,
                  ".step: called more times than there are timesteps");
    if (c_.prediction_type == "sample") {
      DIFFUSE_FAIL(kName, ": prediction_type not implemented yet: sample");
    }
    const bool first = first_order();
    const float sigma = first ? sigmas_[si] : sigmas_[si - 1];
    const float sigma_interpol = first ? sigmas_interpol_[si + 1] : sigmas_interpol_[si];
    const float sigma_next = first ? sigmas_[si + 1] : sigmas_[si];
    const float sigma_hat = sigma;  // gamma = 0
    const DType ds = sample.dtype();
    const DType dm = model_output.dtype();
    const DType dp = promote(ds, dm);
    const std::vector<double> x = values(sample);
    const std::vector<double> m = values(model_output);
    const std::vector<double> pred =
        predict_x0(c_.prediction_type, x, ds, m, dm, first ? sigma_hat : sigma_interpol, kName);

    std::vector<double> prev(x.size());
    if (first) {
      const float dt = sigma_interpol - sigma_hat;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double derivative = round_to(dp, round_to(dp, x[i] - pred[i]) / sigma_hat);
        prev[i] = round_to(dp, x[i] + round_to(dp, derivative * dt));
      }
      stored_sample_ = x;
      stored_dtype_ = ds;
    } else {
      const float dt = sigma_next - sigma_hat;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double derivative = round_to(dp, round_to(dp, x[i] - pred[i]) / sigma_interpol);
        prev[i] =
            round_to(promote(stored_dtype_, dp), stored_sample_[i] + round_to(dp, derivative * dt));
      }
      stored_sample_.clear();
    }
    ++*step_index_;
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dp);
    out.pred_original_sample = from_values(pred, sample.shape(), dp);
    return out;
  }

 private:
  bool first_order() const { return stored_sample_.empty(); }

  // [v0, v1, v1, v2, v2, ..., v_last, v_last, v_last]: cat([v[:1], v[1:].repeat_interleave(2),
  // v[-1:]]).
  static std::vector<float> interleave(const std::vector<float>& v) {
    std::vector<float> out(1, v.front());
    for (std::size_t i = 1; i < v.size(); ++i) out.insert(out.end(), 2, v[i]);
    out.push_back(v.back());
    return out;
  }

  KDPM2Config c_;
  std::vector<float> sigmas_interpol_;
  std::vector<double> stored_sample_;  // the sample of the first half, between the halves
  DType stored_dtype_ = DType::f32;
};

}  // namespace

std::unique_ptr<Scheduler> make_kdpm2_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<KDPM2DiscreteScheduler>(config);
}

}  // namespace diffuse::schedulers
