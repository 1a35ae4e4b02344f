// diffusers/schedulers/scheduling_ipndm.py (v0.31)
#include "diffuse/schedulers/scheduling_ipndm.h"

#include <cmath>
#include <numbers>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kOwner = "IPNDMScheduler";
constexpr float kPiF = static_cast<float>(std::numbers::pi);  // math.pi applied to float32
}  // namespace

IPNDMSchedulerConfig IPNDMSchedulerConfig::from_json(const nlohmann::json& config) {
  IPNDMSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("trained_betas", c.trained_betas);
  r.finish();
  return c;
}

nlohmann::json IPNDMSchedulerConfig::to_json() const {
  return {{"num_train_timesteps", num_train_timesteps},
          {"trained_betas", trained_betas ? nlohmann::json(*trained_betas) : nlohmann::json()}};
}

IPNDMScheduler::IPNDMScheduler(IPNDMSchedulerConfig config) : config_(std::move(config)) {
  DIFFUSE_CHECK(config_.num_train_timesteps >= 1 && config_.num_train_timesteps < 100000000, kOwner,
                ": num_train_timesteps must be a positive count, got ",
                config_.num_train_timesteps);
  if (config_.trained_betas) {
    DIFFUSE_CHECK(config_.trained_betas->size() >= 2, kOwner,
                  ": trained_betas needs at least 2 entries (one per step plus the end), got ",
                  config_.trained_betas->size());
  }
  // diffusers' __init__ runs set_timesteps(num_train_timesteps).
  compute_schedule(config_.num_train_timesteps);
}

void IPNDMScheduler::compute_schedule(int64_t n) {
  num_inference_steps_ = n;
  // steps = linspace(1, 0, n + 1)[:-1] followed by 0, in float32.
  std::vector<float> steps = torch_linspace_f32(1, 0, n + 1);
  steps.back() = 0.0f;
  if (config_.trained_betas) {
    betas_ = to_f32(*config_.trained_betas);
  } else {
    betas_.resize(steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const float s = std::sin(steps[i] * kPiF / 2.0f);
      betas_[i] = s * s;
    }
  }
  alphas_.resize(betas_.size());
  for (std::size_t i = 0; i < betas_.size(); ++i) {
    alphas_[i] = std::sqrt(1.0f - betas_[i] * betas_[i]);
  }
  timesteps_.resize(betas_.size() - 1);
  for (std::size_t i = 0; i + 1 < betas_.size(); ++i) {
    timesteps_[i] = std::atan2(betas_[i], alphas_[i]) / kPiF * 2.0f;
  }
  ets_.clear();
  ets_count_ = 0;
  step_index_.reset();
  begin_index_.reset();
}

void IPNDMScheduler::set_timesteps(const SetTimestepsArgs& args) {
  DIFFUSE_CHECK(!args.timesteps && !args.sigmas && !args.mu && !args.strength, kOwner,
                ".set_timesteps: takes only num_inference_steps (no custom timesteps, sigmas, "
                "mu or strength)");
  DIFFUSE_CHECK(args.num_inference_steps.has_value() && *args.num_inference_steps >= 1 &&
                    *args.num_inference_steps < 100000000,
                kOwner, ".set_timesteps: num_inference_steps must be a positive count");
  compute_schedule(*args.num_inference_steps);
}

SchedulerOutput IPNDMScheduler::step(const Tensor& model_output, double timestep,
                                     const Tensor& sample, const StepArgs& args) {
  (void)args;
  check_step_inputs(model_output, sample, kOwner);
  if (!step_index_) {
    step_index_ = begin_index_
                      ? *begin_index_
                      : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kOwner));
  }
  const auto i = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(*step_index_ >= 0 && i + 1 < betas_.size(), kOwner, ".step: step index ", i,
                " is past the end of the schedule (", timesteps_.size(),
                " steps); call set_timesteps again");

  const DType s_dtype = sample.dtype();
  const DType m_dtype = model_output.dtype();
  const std::vector<double> x = values(sample);
  const std::vector<double> mo = values(model_output);
  const std::size_t size = x.size();
  DIFFUSE_CHECK(mo.size() == size && (ets_.empty() || ets_.back().size() == size), kOwner,
                ".step: the sample has ", size,
                " elements but earlier steps of this run had a different size; call "
                "set_timesteps before a new run");

  // ets = sample * betas[i] + model_output * alphas[i]
  const DType e_dtype = promote(s_dtype, m_dtype);
  std::vector<double> cur(size);
  for (std::size_t k = 0; k < size; ++k) {
    cur[k] = round_to(e_dtype,
                      round_to(s_dtype, x[k] * betas_[i]) + round_to(m_dtype, mo[k] * alphas_[i]));
  }
  ets_.push_back(std::move(cur));
  ets_dtype_ = e_dtype;
  ++ets_count_;
  if (ets_.size() > 4) ets_.pop_front();

  const DType d = ets_dtype_;
  auto r = [d](double v) { return round_to(d, v); };
  const auto e = [&](std::size_t back) -> const std::vector<double>& {
    return ets_[ets_.size() - back];
  };
  std::vector<double> ets(size);
  if (ets_count_ == 1) {
    ets = e(1);
  } else if (ets_count_ == 2) {
    for (std::size_t k = 0; k < size; ++k) ets[k] = r(r(r(3 * e(1)[k]) - e(2)[k]) / 2);
  } else if (ets_count_ == 3) {
    for (std::size_t k = 0; k < size; ++k) {
      ets[k] = r(r(r(r(23 * e(1)[k]) - r(16 * e(2)[k])) + r(5 * e(3)[k])) / 12);
    }
  } else {
    const double w = scalar_in(d, 1.0 / 24);
    for (std::size_t k = 0; k < size; ++k) {
      const double s =
          r(r(r(r(55 * e(1)[k]) - r(59 * e(2)[k])) + r(37 * e(3)[k])) - r(9 * e(4)[k]));
      ets[k] = r(w * s);
    }
  }

  // _get_prev_sample: pred = (sample - sigma * ets) / max(alpha, 1e-8);
  // prev = next_alpha * pred + ets * next_sigma.
  const float alpha = alphas_[i];
  const float sigma = betas_[i];
  const float next_alpha = alphas_[i + 1];
  const float next_sigma = betas_[i + 1];
  const DType p_dtype = promote(s_dtype, d);
  // Python's max(alpha, 1e-8) keeps the float32 tensor unless 1e-8 is larger; then the Python
  // float divides in the tensor's compute type.
  const double divisor = (1e-8 > static_cast<double>(alpha)) ? scalar_in(p_dtype, 1e-8) : alpha;
  std::vector<double> prev(size);
  for (std::size_t k = 0; k < size; ++k) {
    const double pred = round_to(p_dtype, round_to(p_dtype, x[k] - r(sigma * ets[k])) / divisor);
    prev[k] = round_to(p_dtype, round_to(p_dtype, next_alpha * pred) + r(ets[k] * next_sigma));
  }
  ++*step_index_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), p_dtype);
  return out;
}

Tensor IPNDMScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                 const std::vector<double>& timesteps) {
  (void)original;
  (void)noise;
  (void)timesteps;
  DIFFUSE_FAIL(kOwner, " has no add_noise (as in diffusers); use a scheduler with a forward ",
               "process (e.g. PNDMScheduler) for image-to-image");
}

namespace schedulers {

std::unique_ptr<Scheduler> make_ipndm_scheduler(const nlohmann::json& config) {
  return std::make_unique<IPNDMScheduler>(IPNDMSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
