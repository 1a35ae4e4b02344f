// diffusers/schedulers/scheduling_pndm.py (v0.31)
#include "diffuse/schedulers/scheduling_pndm.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kOwner = "PNDMScheduler";
// F-PNDM: the Runge-Kutta warm-up takes 4 timesteps (paper formulas (9), (12), (13), Alg. 2).
constexpr int64_t kPndmOrder = 4;
}  // namespace

PNDMSchedulerConfig PNDMSchedulerConfig::from_json(const nlohmann::json& config) {
  PNDMSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("skip_prk_steps", c.skip_prk_steps);
  r.get("set_alpha_to_one", c.set_alpha_to_one);
  r.get("prediction_type", c.prediction_type);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.finish();
  return c;
}

nlohmann::json PNDMSchedulerConfig::to_json() const {
  return {{"num_train_timesteps", num_train_timesteps},
          {"beta_start", beta_start},
          {"beta_end", beta_end},
          {"beta_schedule", beta_schedule},
          {"trained_betas", trained_betas ? nlohmann::json(*trained_betas) : nlohmann::json()},
          {"skip_prk_steps", skip_prk_steps},
          {"set_alpha_to_one", set_alpha_to_one},
          {"prediction_type", prediction_type},
          {"timestep_spacing", timestep_spacing},
          {"steps_offset", steps_offset}};
}

PNDMScheduler::PNDMScheduler(PNDMSchedulerConfig config) : config_(std::move(config)) {
  const PNDMSchedulerConfig& c = config_;
  DIFFUSE_CHECK(c.prediction_type == "epsilon" || c.prediction_type == "v_prediction", kOwner,
                ": prediction_type given as ", c.prediction_type,
                " must be one of `epsilon` or `v_prediction`");
  DIFFUSE_CHECK(c.timestep_spacing == "linspace" || c.timestep_spacing == "leading" ||
                    c.timestep_spacing == "trailing",
                kOwner, ": timestep_spacing '", c.timestep_spacing,
                "' is not supported (expected 'linspace', 'leading' or 'trailing')");
  const std::vector<float> betas = make_betas(kOwner, c.beta_schedule, c.num_train_timesteps,
                                              c.beta_start, c.beta_end, c.trained_betas);
  alphas_cumprod_ = cumprod_f32(one_minus(betas));
  // The previous alpha of the last step: 1, or alphas_cumprod[0] (Stable Diffusion uses
  // steps_offset=1 with set_alpha_to_one=False so the last step lands on step 0).
  final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
}

void PNDMScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const PNDMSchedulerConfig& c = config_;
  DIFFUSE_CHECK(!args.timesteps && !args.sigmas && !args.mu && !args.strength, kOwner,
                ".set_timesteps: takes only num_inference_steps (no custom timesteps, sigmas, "
                "mu or strength)");
  DIFFUSE_CHECK(args.num_inference_steps.has_value(), kOwner,
                ".set_timesteps: num_inference_steps is required");
  const int64_t n = *args.num_inference_steps;
  const int64_t num_train = c.num_train_timesteps;
  DIFFUSE_CHECK(n >= 1 && n <= num_train, kOwner, ".set_timesteps: num_inference_steps must be ",
                "in [1, num_train_timesteps = ", num_train, "], got ", n);
  DIFFUSE_CHECK(c.skip_prk_steps || n >= kPndmOrder, kOwner,
                ".set_timesteps: the Runge-Kutta warm-up needs num_inference_steps >= ", kPndmOrder,
                ", got ", n,
                " (diffusers fails to broadcast its PRK timesteps); use skip_prk_steps=True");

  // "Table 2" spacings of arXiv 2305.08891, with numpy's exact arithmetic.
  std::vector<int64_t> base(static_cast<std::size_t>(n));
  if (c.timestep_spacing == "linspace") {
    const std::vector<double> t = np_linspace(0, static_cast<double>(num_train - 1), n);
    for (std::size_t i = 0; i < t.size(); ++i) base[i] = static_cast<int64_t>(np_round(t[i]));
  } else if (c.timestep_spacing == "leading") {
    const int64_t step_ratio = num_train / n;
    for (int64_t i = 0; i < n; ++i)
      base[static_cast<std::size_t>(i)] = i * step_ratio + c.steps_offset;
  } else {  // trailing
    const double step_ratio = static_cast<double>(num_train) / static_cast<double>(n);
    const std::vector<double> t =
        reversed(np_arange(static_cast<double>(num_train), 0, -step_ratio));
    DIFFUSE_CHECK(static_cast<int64_t>(t.size()) == n, kOwner,
                  ".set_timesteps: trailing spacing produced ", t.size(), " timesteps for ", n,
                  " steps");
    for (std::size_t i = 0; i < t.size(); ++i) base[i] = static_cast<int64_t>(np_round(t[i])) - 1;
  }

  prk_timesteps_.clear();
  plms_timesteps_.clear();
  if (c.skip_prk_steps) {
    // PLMS from the start: the second-to-last base timestep is visited twice (a Heun-like
    // first step), then the usual descending order.
    std::vector<int64_t> plms(base.begin(), base.end() - 1);
    if (n >= 2) plms.push_back(base[base.size() - 2]);
    plms.push_back(base.back());
    plms_timesteps_ = reversed(plms);
  } else {
    // The last 4 base timesteps, each with its half step (t, t + ratio/2), interleaved as
    // diffusers' repeat/tile/slice arithmetic does, descending.
    const int64_t half = num_train / n / 2;
    std::vector<int64_t> prk;
    for (int64_t k = n - kPndmOrder; k < n; ++k) {
      prk.push_back(base[static_cast<std::size_t>(k)]);
      prk.push_back(base[static_cast<std::size_t>(k)] + half);
    }
    prk.pop_back();  // prk[:-1]
    std::vector<int64_t> doubled;
    for (int64_t v : prk) {
      doubled.push_back(v);
      doubled.push_back(v);
    }
    prk_timesteps_ = reversed(std::vector<int64_t>(doubled.begin() + 1, doubled.end() - 1));
    plms_timesteps_ = reversed(std::vector<int64_t>(base.begin(), base.end() - 3));
  }
  timesteps_.clear();
  for (int64_t t : prk_timesteps_) timesteps_.push_back(static_cast<double>(t));
  for (int64_t t : plms_timesteps_) timesteps_.push_back(static_cast<double>(t));
  for (double t : timesteps_) {
    DIFFUSE_CHECK(t >= 0 && t < static_cast<double>(num_train), kOwner, ".set_timesteps: timestep ",
                  t, " is outside [0, ", num_train, "); lower steps_offset");
  }

  num_inference_steps_ = n;
  counter_ = 0;
  cur_model_output_.clear();
  cur_sample_.reset();
  ets_.clear();
  ets_count_ = 0;
}

SchedulerOutput PNDMScheduler::step(const Tensor& model_output, double timestep,
                                    const Tensor& sample, const StepArgs& args) {
  (void)args;
  check_step_inputs(model_output, sample, kOwner);
  DIFFUSE_CHECK(num_inference_steps_.has_value(), kOwner,
                ".step: Number of inference steps is 'None', you need to run 'set_timesteps' "
                "after creating the scheduler");
  DIFFUSE_CHECK(std::isfinite(timestep) && timestep == std::floor(timestep) &&
                    std::fabs(timestep) <= static_cast<double>(config_.num_train_timesteps),
                kOwner, ".step: timestep must be an integer training timestep, got ", timestep);
  const auto t = static_cast<int64_t>(timestep);
  if (counter_ < static_cast<int64_t>(prk_timesteps_.size()) && !config_.skip_prk_steps) {
    return step_prk(model_output, t, sample);
  }
  return step_plms(model_output, t, sample);
}

void PNDMScheduler::check_state_size(std::size_t size) const {
  const bool ok = (ets_.empty() || ets_.back().size() == size) &&
                  (cur_model_output_.empty() || cur_model_output_.size() == size) &&
                  (!cur_sample_ || cur_sample_->size() == size);
  DIFFUSE_CHECK(ok, kOwner, ".step: the sample has ", size,
                " elements but earlier steps of this run had a different size; call "
                "set_timesteps before a new run");
}

SchedulerOutput PNDMScheduler::step_prk(const Tensor& model_output, int64_t timestep,
                                        const Tensor& sample) {
  const int64_t n = *num_inference_steps_;
  const int64_t diff_to_prev = counter_ % 2 ? 0 : config_.num_train_timesteps / n / 2;
  const int64_t prev_timestep = timestep - diff_to_prev;
  const int64_t t = prk_timesteps_[static_cast<std::size_t>(counter_ / 4 * 4)];

  const DType m = model_output.dtype();
  const std::vector<double> mo = values(model_output);
  check_state_size(mo.size());
  // cur_model_output accumulates the RK4 weights 1/6, 1/3, 1/3, 1/6 in model_output's dtype.
  auto accumulate = [&](double weight) {
    const double w = scalar_in(m, weight);
    if (cur_model_output_.empty()) {
      cur_model_output_.resize(mo.size());
      for (std::size_t i = 0; i < mo.size(); ++i) cur_model_output_[i] = round_to(m, w * mo[i]);
      cur_model_output_dtype_ = m;
    } else {
      const DType d = cur_model_output_dtype_;  // in-place add keeps the accumulator's dtype
      for (std::size_t i = 0; i < mo.size(); ++i) {
        cur_model_output_[i] = round_to(d, cur_model_output_[i] + round_to(m, w * mo[i]));
      }
    }
  };
  std::vector<double> combined = mo;
  DType combined_dtype = m;
  const int64_t phase = counter_ % 4;
  if (phase == 0) {
    accumulate(1.0 / 6);
    ets_.push_back(mo);
    ets_dtype_ = m;
    ++ets_count_;
    if (ets_.size() > 4) ets_.pop_front();
    cur_sample_ = values(sample);
    cur_sample_dtype_ = sample.dtype();
  } else if (phase == 1 || phase == 2) {
    accumulate(1.0 / 3);
  } else {
    DIFFUSE_CHECK(!cur_model_output_.empty(), kOwner, ".step: PRK state is inconsistent");
    const double w = scalar_in(m, 1.0 / 6);
    combined_dtype = promote(cur_model_output_dtype_, m);
    for (std::size_t i = 0; i < mo.size(); ++i) {
      combined[i] = round_to(combined_dtype, cur_model_output_[i] + round_to(m, w * mo[i]));
    }
    cur_model_output_.clear();
  }

  const std::vector<double> cur = cur_sample_ ? *cur_sample_ : values(sample);
  const DType cur_dtype = cur_sample_ ? cur_sample_dtype_ : sample.dtype();
  DType out_dtype = cur_dtype;
  std::vector<double> prev =
      get_prev_sample(cur, cur_dtype, t, prev_timestep, combined, combined_dtype, &out_dtype);
  ++counter_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), out_dtype);
  return out;
}

SchedulerOutput PNDMScheduler::step_plms(const Tensor& model_output, int64_t timestep,
                                         const Tensor& sample) {
  DIFFUSE_CHECK(config_.skip_prk_steps || ets_count_ >= 3, kOwner,
                " can only be run AFTER scheduler has been run in 'prk' mode for at least 12 "
                "iterations");
  const int64_t ratio = config_.num_train_timesteps / *num_inference_steps_;
  int64_t t = timestep;
  int64_t prev_timestep = timestep - ratio;

  const DType m = model_output.dtype();
  std::vector<double> mo = values(model_output);
  check_state_size(mo.size());
  if (counter_ != 1) {
    ets_.push_back(mo);
    ets_dtype_ = m;
    ++ets_count_;
    if (ets_.size() > 4) ets_.pop_front();
  } else {
    // Second call of the Heun-like start: re-evaluate the first interval.
    prev_timestep = timestep;
    t = timestep + ratio;
  }

  std::vector<double> x = values(sample);
  DType x_dtype = sample.dtype();
  std::vector<double> e(mo.size());
  DType e_dtype = promote(m, ets_dtype_);
  const std::size_t size = mo.size();
  const auto k = [&](std::size_t back) -> const std::vector<double>& {
    return ets_[ets_.size() - back];
  };
  if (ets_count_ == 1 && counter_ == 0) {
    e = mo;
    e_dtype = m;
    cur_sample_ = x;
    cur_sample_dtype_ = x_dtype;
  } else if (ets_count_ == 1 && counter_ == 1) {
    for (std::size_t i = 0; i < size; ++i)
      e[i] = round_to(e_dtype, round_to(e_dtype, mo[i] + k(1)[i]) / 2);
    DIFFUSE_CHECK(cur_sample_.has_value(), kOwner, ".step: PLMS state is inconsistent");
    x = *cur_sample_;
    x_dtype = cur_sample_dtype_;
    cur_sample_.reset();
  } else {
    const DType d = ets_dtype_;
    e_dtype = d;
    auto r = [d](double v) { return round_to(d, v); };
    if (ets_count_ == 2) {
      for (std::size_t i = 0; i < size; ++i) e[i] = r(r(r(3 * k(1)[i]) - k(2)[i]) / 2);
    } else if (ets_count_ == 3) {
      for (std::size_t i = 0; i < size; ++i) {
        e[i] = r(r(r(r(23 * k(1)[i]) - r(16 * k(2)[i])) + r(5 * k(3)[i])) / 12);
      }
    } else {
      const double w = scalar_in(d, 1.0 / 24);
      for (std::size_t i = 0; i < size; ++i) {
        const double s =
            r(r(r(r(55 * k(1)[i]) - r(59 * k(2)[i])) + r(37 * k(3)[i])) - r(9 * k(4)[i]));
        e[i] = r(w * s);
      }
    }
  }

  DType out_dtype = x_dtype;
  std::vector<double> prev = get_prev_sample(x, x_dtype, t, prev_timestep, e, e_dtype, &out_dtype);
  ++counter_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), out_dtype);
  return out;
}

std::vector<double> PNDMScheduler::get_prev_sample(const std::vector<double>& sample,
                                                   DType sample_dtype, int64_t timestep,
                                                   int64_t prev_timestep,
                                                   const std::vector<double>& model_output,
                                                   DType output_dtype, DType* result_dtype) const {
  const int64_t num_train = config_.num_train_timesteps;
  DIFFUSE_CHECK(timestep >= 0 && timestep < num_train && prev_timestep < num_train, kOwner,
                ".step: timestep ", timestep, " -> ", prev_timestep, " is outside [0, ", num_train,
                ")");
  // alpha_prod_t -> α_t, alpha_prod_t_prev -> α_(t−δ), beta_prod_t -> (1 - α_t): float32
  // 0-dim tensors in diffusers, so every coefficient below is float32 arithmetic.
  const float a_t = alphas_cumprod_[static_cast<std::size_t>(timestep)];
  const float a_prev = prev_timestep >= 0 ? alphas_cumprod_[static_cast<std::size_t>(prev_timestep)]
                                          : final_alpha_cumprod_;
  const float b_t = 1.0f - a_t;
  const float b_prev = 1.0f - a_prev;

  std::vector<double> mo = model_output;
  DType mo_dtype = output_dtype;
  if (config_.prediction_type == "v_prediction") {
    // model_output = alpha_prod_t ** 0.5 * model_output + beta_prod_t ** 0.5 * sample
    const double sa = std::sqrt(a_t);  // float sqrt: a float32 0-dim tensor
    const double sb = std::sqrt(b_t);
    mo_dtype = promote(output_dtype, sample_dtype);
    for (std::size_t i = 0; i < mo.size(); ++i) {
      mo[i] = round_to(mo_dtype, round_to(output_dtype, sa * model_output[i]) +
                                     round_to(sample_dtype, sb * sample[i]));
    }
  }
  // (α_(t−δ) - α_t) / (sqrt(α_t) * (sqrt(α_(t−δ)) + sqrt(α_t))) = sqrt(α_(t−δ)) / sqrt(α_t) - 1
  const float sample_coeff = std::sqrt(a_prev / a_t);
  const float denom = a_t * std::sqrt(b_prev) + std::sqrt(a_t * b_t * a_prev);
  const float diff = a_prev - a_t;
  const DType out = promote(sample_dtype, mo_dtype);
  std::vector<double> prev(sample.size());
  for (std::size_t i = 0; i < sample.size(); ++i) {
    const double lhs = round_to(sample_dtype, static_cast<double>(sample_coeff) * sample[i]);
    const double rhs = round_to(mo_dtype, round_to(mo_dtype, static_cast<double>(diff) * mo[i]) /
                                              static_cast<double>(denom));
    prev[i] = round_to(out, lhs - rhs);
  }
  *result_dtype = out;
  return prev;
}

Tensor PNDMScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                const std::vector<double>& timesteps) {
  return add_noise_alphas_cumprod(alphas_cumprod_, original, noise, timesteps, kOwner);
}

namespace schedulers {

std::unique_ptr<Scheduler> make_pndm_scheduler(const nlohmann::json& config) {
  return std::make_unique<PNDMScheduler>(PNDMSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
