// diffusers/schedulers/scheduling_lms_discrete.py (v0.31): LMSDiscreteScheduler, the linear
// multistep method of k-diffusion (sample_lms, A1111 "LMS").
#include <cmath>
#include <deque>

#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/kdiffusion_base.h"

namespace diffuse::schedulers {
namespace {

constexpr const char* kName = "LMSDiscreteScheduler";

struct LMSDiscreteConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::string prediction_type = "epsilon";
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;
};

class LMSDiscreteScheduler final : public KDiffusionBase {
 public:
  explicit LMSDiscreteScheduler(const nlohmann::json& json) : KDiffusionBase(kName) {
    LMSDiscreteConfig& c = c_;
    ConfigReader r(json, kName);
    r.get("num_train_timesteps", c.num_train_timesteps);
    r.get("beta_start", c.beta_start);
    r.get("beta_end", c.beta_end);
    r.get("beta_schedule", c.beta_schedule);
    r.get("trained_betas", c.trained_betas);
    r.get("use_karras_sigmas", c.use_karras_sigmas);
    r.get("use_exponential_sigmas", c.use_exponential_sigmas);
    r.get("use_beta_sigmas", c.use_beta_sigmas);
    r.get("prediction_type", c.prediction_type);
    r.get("timestep_spacing", c.timestep_spacing);
    r.get("steps_offset", c.steps_offset);
    r.finish();
    check_one_sigma_schedule(c.use_karras_sigmas, c.use_exponential_sigmas, c.use_beta_sigmas);
    timestep_spacing_ = c.timestep_spacing;
    init_alphas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end, c.trained_betas);
    sigmas_ = reversed(train_sigmas_);
    sigmas_.push_back(0.0f);
    timesteps_ = reversed(
        np_linspace(0, static_cast<double>(c.num_train_timesteps - 1), c.num_train_timesteps));
  }

  std::string class_name() const override { return kName; }

  nlohmann::json config() const override {
    const LMSDiscreteConfig& c = c_;
    nlohmann::json j;
    j["_class_name"] = kName;
    j["num_train_timesteps"] = c.num_train_timesteps;
    j["beta_start"] = c.beta_start;
    j["beta_end"] = c.beta_end;
    j["beta_schedule"] = c.beta_schedule;
    j["trained_betas"] = c.trained_betas ? nlohmann::json(*c.trained_betas) : nlohmann::json();
    j["use_karras_sigmas"] = c.use_karras_sigmas;
    j["use_exponential_sigmas"] = c.use_exponential_sigmas;
    j["use_beta_sigmas"] = c.use_beta_sigmas;
    j["prediction_type"] = c.prediction_type;
    j["timestep_spacing"] = c.timestep_spacing;
    j["steps_offset"] = c.steps_offset;
    return j;
  }

  void set_timesteps(const SetTimestepsArgs& a) override {
    DIFFUSE_CHECK(a.num_inference_steps && !a.timesteps && !a.sigmas, kName,
                  ".set_timesteps: takes num_inference_steps only (no custom timesteps or "
                  "sigmas)");
    num_inference_steps_ = *a.num_inference_steps;
    std::vector<double> t = spaced_timesteps(num_inference_steps_, c_.steps_offset);
    std::vector<double> s = interp_sigmas(t);
    convert_sigmas(c_.use_karras_sigmas, c_.use_exponential_sigmas, c_.use_beta_sigmas,
                   std::nullopt, std::nullopt, num_inference_steps_, s, t);
    s.push_back(0.0);
    sigmas_ = to_f32(s);
    timesteps_ = t;  // float32 values, or float64 from sigma_to_t (numpy's dtype, kept)
    step_index_.reset();
    begin_index_.reset();
    derivatives_.clear();
  }

  Tensor scale_model_input(const Tensor& sample, double timestep) override {
    if (!step_index_) init_step_index(timestep);
    return scale_by_sigma(sample, sigmas_.at(*step_index_));
  }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args) override {
    check_step_inputs(model_output, sample, kName);
    DIFFUSE_CHECK(args.order >= 1, kName, ".step: order must be >= 1, got ", args.order);
    if (!step_index_) init_step_index(timestep);
    const std::size_t si = *step_index_;
    DIFFUSE_CHECK(si + 1 < sigmas_.size(), kName,
                  ".step: called more times than there are timesteps");
    const float sigma = sigmas_[si];
    const DType ds = sample.dtype();
    const DType dm = model_output.dtype();
    const DType dp = promote(ds, dm);
    const std::vector<double> x = values(sample);
    const std::vector<double> m = values(model_output);

    // 1. x0 from the sigma-scaled prediction.
    std::vector<double> pred;
    if (c_.prediction_type == "sample") {
      pred = m;
    } else {
      pred = predict_x0(c_.prediction_type, x, ds, m, dm, sigma, kName);
    }
    const DType dpred = c_.prediction_type == "sample" ? dm : dp;
    // 2. ODE derivative.
    std::vector<double> derivative(x.size());
    for (std::size_t i = 0; i < x.size(); ++i)
      derivative[i] = round_to(dp, round_to(promote(ds, dpred), x[i] - pred[i]) / sigma);
    derivatives_.push_back(derivative);
    if (static_cast<int64_t>(derivatives_.size()) > args.order) derivatives_.pop_front();

    // 3. Linear multistep coefficients; 4. prev_sample = sample + sum(coeff * derivative).
    const int64_t order = std::min<int64_t>(static_cast<int64_t>(si) + 1, args.order);
    std::vector<double> prev = x;
    // Python's sum() starts at 0 and adds the terms newest-first.
    std::vector<double> acc(x.size(), 0.0);
    for (int64_t k = 0; k < order; ++k) {
      const double coeff = lms_coefficient(order, si, k);
      const std::vector<double>& d =
          derivatives_[derivatives_.size() - 1 - static_cast<std::size_t>(k)];
      for (std::size_t i = 0; i < x.size(); ++i) {
        acc[i] = round_to(dp, acc[i] + round_to(dp, coeff * d[i]));
      }
    }
    for (std::size_t i = 0; i < x.size(); ++i) prev[i] = round_to(dp, x[i] + acc[i]);
    ++*step_index_;
    SchedulerOutput out;
    out.prev_sample = from_values(prev, sample.shape(), dp);
    out.pred_original_sample = from_values(pred, sample.shape(), dpred);
    return out;
  }

 private:
  // Integral over [sigmas[t], sigmas[t + 1]] of the Lagrange basis polynomial of
  // `current_order` on the nodes sigmas[t - k], k < order. diffusers integrates it with
  // scipy.integrate.quad; the integrand is a polynomial of degree < 4, which 3-point
  // Gauss-Legendre integrates exactly.
  double lms_coefficient(int64_t order, std::size_t t, int64_t current_order) const {
    auto basis = [&](double tau) {
      double prod = 1.0;
      for (int64_t k = 0; k < order; ++k) {
        if (k == current_order) continue;
        const double sk = sigmas_[t - static_cast<std::size_t>(k)];
        const double sc = sigmas_[t - static_cast<std::size_t>(current_order)];
        prod *= (tau - sk) / (sc - sk);
      }
      return prod;
    };
    const double a = sigmas_[t];
    const double b = sigmas_[t + 1];
    const double half = 0.5 * (b - a);
    const double mid = 0.5 * (a + b);
    const double node = std::sqrt(3.0 / 5.0);
    return half * (5.0 / 9.0 * basis(mid - half * node) + 8.0 / 9.0 * basis(mid) +
                   5.0 / 9.0 * basis(mid + half * node));
  }

  LMSDiscreteConfig c_;
  std::deque<std::vector<double>> derivatives_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lms_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<LMSDiscreteScheduler>(config);
}

}  // namespace diffuse::schedulers
