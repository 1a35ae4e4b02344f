// diffusers/schedulers/scheduling_flow_match_heun_discrete.py (v0.31)
#include "diffuse/schedulers/scheduling_flow_match_heun_discrete.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kOwner = "FlowMatchHeunDiscreteScheduler";
}  // namespace

FlowMatchHeunDiscreteSchedulerConfig FlowMatchHeunDiscreteSchedulerConfig::from_json(
    const nlohmann::json& config) {
  FlowMatchHeunDiscreteSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("shift", c.shift);
  r.finish();
  return c;
}

nlohmann::json FlowMatchHeunDiscreteSchedulerConfig::to_json() const {
  return {{"num_train_timesteps", num_train_timesteps}, {"shift", shift}};
}

FlowMatchHeunDiscreteScheduler::FlowMatchHeunDiscreteScheduler(
    FlowMatchHeunDiscreteSchedulerConfig config)
    : config_(std::move(config)) {
  const FlowMatchHeunDiscreteSchedulerConfig& c = config_;
  DIFFUSE_CHECK(c.num_train_timesteps >= 1 && c.num_train_timesteps <= (int64_t{1} << 24), kOwner,
                ": num_train_timesteps must be in [1, 2^24], got ", c.num_train_timesteps);
  // The shifted training schedule in float32 (t = num_train_timesteps ... 1).
  const auto num_train = static_cast<float>(c.num_train_timesteps);
  const auto shift = static_cast<float>(c.shift);
  const auto shift_m1 = static_cast<float>(c.shift - 1);
  timesteps_.resize(static_cast<std::size_t>(c.num_train_timesteps));
  sigmas_.resize(timesteps_.size());
  for (std::size_t k = 0; k < timesteps_.size(); ++k) {
    float s = (num_train - static_cast<float>(k)) / num_train;
    s = shift * s / (1.0f + shift_m1 * s);
    sigmas_[k] = s;
    timesteps_[k] = s * num_train;
  }
  sigma_max_ = sigmas_.front();
  sigma_min_ = sigmas_.back();
}

void FlowMatchHeunDiscreteScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const FlowMatchHeunDiscreteSchedulerConfig& c = config_;
  DIFFUSE_CHECK(!args.timesteps && !args.sigmas && !args.mu && !args.strength, kOwner,
                ".set_timesteps: takes only num_inference_steps (no custom timesteps, sigmas, "
                "mu or strength)");
  DIFFUSE_CHECK(args.num_inference_steps.has_value() && *args.num_inference_steps >= 1 &&
                    *args.num_inference_steps < 100000000,
                kOwner, ".set_timesteps: num_inference_steps must be a positive count");
  const int64_t n = *args.num_inference_steps;
  const auto num_train = static_cast<double>(c.num_train_timesteps);
  // linspace between the ends of the (already shifted) training schedule, shifted again in
  // float64 as diffusers does, then float32.
  const std::vector<double> t = np_linspace(sigma_max_ * num_train, sigma_min_ * num_train, n);
  std::vector<float> s32(t.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    const double s = t[i] / num_train;
    s32[i] = static_cast<float>(c.shift * s / (1 + (c.shift - 1) * s));
  }
  const auto num_train_f = static_cast<float>(c.num_train_timesteps);
  timesteps_.clear();
  sigmas_.clear();
  for (std::size_t i = 0; i < s32.size(); ++i) {
    const double ts = s32[i] * num_train_f;
    timesteps_.push_back(ts);
    sigmas_.push_back(s32[i]);
    if (i > 0) {  // repeat_interleave(2) of everything after the first
      timesteps_.push_back(ts);
      sigmas_.push_back(s32[i]);
    }
  }
  sigmas_.push_back(0.0);

  num_inference_steps_ = n;
  dt_.reset();
  prev_derivative_.clear();
  first_sample_.clear();
  step_index_.reset();
  begin_index_.reset();
}

void FlowMatchHeunDiscreteScheduler::init_step_index(double timestep) {
  if (step_index_) return;
  step_index_ = begin_index_
                    ? *begin_index_
                    : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kOwner));
}

SchedulerOutput FlowMatchHeunDiscreteScheduler::step(const Tensor& model_output, double timestep,
                                                     const Tensor& sample, const StepArgs& args) {
  check_step_inputs(model_output, sample, kOwner);
  init_step_index(timestep);
  const int64_t idx = *step_index_;
  const bool first_order = !dt_.has_value();
  DIFFUSE_CHECK(
      idx >= 0 && static_cast<std::size_t>(idx) + 1 < sigmas_.size() && (first_order || idx >= 1),
      kOwner,
      ".step: called more often than there are timesteps; call set_timesteps "
      "again");

  const DType m = model_output.dtype();
  const std::vector<double> mo = values(model_output);
  // Upcast to avoid precision issues when computing prev_sample: sample.to(torch.float32).
  std::vector<double> x = values(sample);
  for (double& v : x) v = f32(v);
  DType x_dtype = DType::f32;
  const std::size_t size = x.size();
  DIFFUSE_CHECK(first_order || prev_derivative_.size() == size, kOwner, ".step: the sample has ",
                size, " elements but the first-order half of this step ", "had ",
                prev_derivative_.size());

  const auto i = static_cast<std::size_t>(idx);
  const auto sigma = static_cast<float>(first_order ? sigmas_[i] : sigmas_[i - 1]);
  const auto sigma_next = static_cast<float>(first_order ? sigmas_[i + 1] : sigmas_[i]);

  const bool churn_on =
      static_cast<float>(args.s_tmin) <= sigma && sigma <= static_cast<float>(args.s_tmax);
  const double gamma = churn_on ? std::min(args.s_churn / static_cast<double>(sigmas_.size() - 1),
                                           std::sqrt(2.0) - 1)
                                : 0.0;
  const float sigma_hat = sigma * static_cast<float>(gamma + 1);
  if (gamma > 0) {
    const std::vector<double> z = values(noise_like(args, model_output.shape(), m, kOwner));
    const double s_noise = scalar_in(m, args.s_noise);
    const float scale = std::sqrt(sigma_hat * sigma_hat - sigma * sigma);
    const DType nd = promote(x_dtype, m);
    for (std::size_t k = 0; k < size; ++k) {
      x[k] = round_to(nd, x[k] + round_to(m, round_to(m, z[k] * s_noise) * scale));
    }
    x_dtype = nd;
  }

  const DType den = promote(x_dtype, m);
  const DType dd = promote(x_dtype, den);
  std::vector<double> derivative(size);
  std::vector<double> base;
  DType base_dtype = x_dtype;
  float dt = 0;
  DType deriv_dtype = dd;
  if (first_order) {
    // denoised = sample - model_output * sigma; derivative = (sample - denoised) / sigma_hat
    for (std::size_t k = 0; k < size; ++k) {
      const double denoised = round_to(den, x[k] - round_to(m, mo[k] * sigma));
      derivative[k] = round_to(dd, round_to(dd, x[k] - denoised) / sigma_hat);
    }
    dt = sigma_next - sigma_hat;
    prev_derivative_ = derivative;
    prev_derivative_dtype_ = dd;
    dt_ = dt;
    first_sample_ = x;
    first_sample_dtype_ = x_dtype;
    base = x;
    base_dtype = x_dtype;
  } else {
    // Heun: average the derivative at the Euler point with the stored one, and step from the
    // stored sample with the stored dt.
    deriv_dtype = promote(prev_derivative_dtype_, dd);
    for (std::size_t k = 0; k < size; ++k) {
      const double denoised = round_to(den, x[k] - round_to(m, mo[k] * sigma_next));
      const double d2 = round_to(dd, round_to(dd, x[k] - denoised) / sigma_next);
      derivative[k] = round_to(deriv_dtype, scalar_in(deriv_dtype, 0.5) *
                                                round_to(deriv_dtype, prev_derivative_[k] + d2));
    }
    dt = *dt_;
    base = std::move(first_sample_);
    base_dtype = first_sample_dtype_;
    prev_derivative_.clear();
    first_sample_.clear();
    dt_.reset();
  }
  const DType out_dtype = promote(base_dtype, deriv_dtype);
  std::vector<double> prev(size);
  for (std::size_t k = 0; k < size; ++k) {
    // prev_sample = sample + derivative * dt, cast back to model_output's dtype
    prev[k] = round_to(m, round_to(out_dtype, base[k] + round_to(deriv_dtype, derivative[k] * dt)));
  }
  ++*step_index_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), m);
  return out;
}

Tensor FlowMatchHeunDiscreteScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                                 const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape(), kOwner,
                ".scale_noise: sample and noise must be defined tensors of one shape");
  DIFFUSE_CHECK(timesteps.size() == 1, kOwner, ".scale_noise: expected one timestep, got ",
                timesteps.size());
  init_step_index(timesteps[0]);
  const auto idx = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(idx < sigmas_.size(), kOwner, ".scale_noise: index ", idx,
                " is outside the schedule");
  // sigma is a float32 0-dim tensor here (not cast to the sample dtype).
  const auto sigma = static_cast<float>(sigmas_[idx]);
  const float keep = 1.0f - sigma;
  const DType s = promote(original.dtype(), noise.dtype());
  const std::vector<double> x = values(original);
  const std::vector<double> z = values(noise);
  std::vector<double> out(x.size());
  for (std::size_t k = 0; k < x.size(); ++k) {
    out[k] = round_to(
        s, round_to(noise.dtype(), sigma * z[k]) + round_to(original.dtype(), keep * x[k]));
  }
  return from_values(out, original.shape(), s);
}

namespace schedulers {

std::unique_ptr<Scheduler> make_flow_match_heun_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<FlowMatchHeunDiscreteScheduler>(
      FlowMatchHeunDiscreteSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
