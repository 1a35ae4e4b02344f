// diffusers/schedulers/scheduling_flow_match_euler_discrete.py (v0.31; later options as in
// diffusers' current source)
#include "diffuse/schedulers/scheduling_flow_match_euler_discrete.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/formats/config.h"
#include "src/schedulers/factories.h"
#include "src/schedulers/sample_ops.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse {

using namespace schedulers;  // NOLINT: private helpers of this folder

namespace {
constexpr const char* kOwner = "FlowMatchEulerDiscreteScheduler";
}  // namespace

FlowMatchEulerDiscreteSchedulerConfig FlowMatchEulerDiscreteSchedulerConfig::from_json(
    const nlohmann::json& config) {
  FlowMatchEulerDiscreteSchedulerConfig c;
  ConfigReader r(config, kOwner);
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("shift", c.shift);
  r.get("use_dynamic_shifting", c.use_dynamic_shifting);
  r.get("base_shift", c.base_shift);
  r.get("max_shift", c.max_shift);
  r.get("base_image_seq_len", c.base_image_seq_len);
  r.get("max_image_seq_len", c.max_image_seq_len);
  r.get("invert_sigmas", c.invert_sigmas);
  r.get("shift_terminal", c.shift_terminal);
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_exponential_sigmas", c.use_exponential_sigmas);
  r.get("use_beta_sigmas", c.use_beta_sigmas);
  r.get("time_shift_type", c.time_shift_type);
  r.get("stochastic_sampling", c.stochastic_sampling);
  r.finish();
  return c;
}

nlohmann::json FlowMatchEulerDiscreteSchedulerConfig::to_json() const {
  auto opt = [](const auto& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
  return {{"num_train_timesteps", num_train_timesteps},
          {"shift", shift},
          {"use_dynamic_shifting", use_dynamic_shifting},
          {"base_shift", opt(base_shift)},
          {"max_shift", opt(max_shift)},
          {"base_image_seq_len", opt(base_image_seq_len)},
          {"max_image_seq_len", opt(max_image_seq_len)},
          {"invert_sigmas", invert_sigmas},
          {"shift_terminal", opt(shift_terminal)},
          {"use_karras_sigmas", use_karras_sigmas},
          {"use_exponential_sigmas", use_exponential_sigmas},
          {"use_beta_sigmas", use_beta_sigmas},
          {"time_shift_type", time_shift_type},
          {"stochastic_sampling", stochastic_sampling}};
}

FlowMatchEulerDiscreteScheduler::FlowMatchEulerDiscreteScheduler(
    FlowMatchEulerDiscreteSchedulerConfig config)
    : config_(std::move(config)) {
  const FlowMatchEulerDiscreteSchedulerConfig& c = config_;
  DIFFUSE_CHECK(
      int(c.use_beta_sigmas) + int(c.use_exponential_sigmas) + int(c.use_karras_sigmas) <= 1,
      kOwner,
      ": Only one of `config.use_beta_sigmas`, `config.use_exponential_sigmas`, "
      "`config.use_karras_sigmas` can be used.");
  DIFFUSE_CHECK(c.time_shift_type == "exponential" || c.time_shift_type == "linear", kOwner,
                ": `time_shift_type` must either be 'exponential' or 'linear', got '",
                c.time_shift_type, "'");
  DIFFUSE_CHECK(c.num_train_timesteps >= 1 && c.num_train_timesteps <= (int64_t{1} << 24), kOwner,
                ": num_train_timesteps must be in [1, 2^24], got ", c.num_train_timesteps);
  // The training schedule in float32: t = num_train_timesteps ... 1, sigma = t / T, shifted
  // unless the shift is applied per resolution later.
  const auto num_train = static_cast<float>(c.num_train_timesteps);
  const auto shift = static_cast<float>(c.shift);
  const auto shift_m1 = static_cast<float>(c.shift - 1);
  timesteps_.resize(static_cast<std::size_t>(c.num_train_timesteps));
  sigmas_.resize(timesteps_.size());
  for (std::size_t k = 0; k < timesteps_.size(); ++k) {
    float s = (num_train - static_cast<float>(k)) / num_train;
    if (!c.use_dynamic_shifting) s = shift * s / (1.0f + shift_m1 * s);
    sigmas_[k] = s;
    timesteps_[k] = s * num_train;
  }
  sigma_max_ = sigmas_.front();
  sigma_min_ = sigmas_.back();
}

void FlowMatchEulerDiscreteScheduler::set_timesteps(const SetTimestepsArgs& args) {
  const FlowMatchEulerDiscreteSchedulerConfig& c = config_;
  DIFFUSE_CHECK(!args.strength, kOwner, ".set_timesteps: takes no strength");
  DIFFUSE_CHECK(!c.use_dynamic_shifting || args.mu.has_value(), kOwner,
                ".set_timesteps: `mu` must be passed when `use_dynamic_shifting` is set to be "
                "`True`");
  if (args.sigmas && args.timesteps) {
    DIFFUSE_CHECK(args.sigmas->size() == args.timesteps->size(), kOwner,
                  ".set_timesteps: `sigmas` and `timesteps` should have the same length");
  }
  int64_t n = 0;
  if (args.num_inference_steps) {
    n = *args.num_inference_steps;
    DIFFUSE_CHECK((!args.sigmas || static_cast<int64_t>(args.sigmas->size()) == n) &&
                      (!args.timesteps || static_cast<int64_t>(args.timesteps->size()) == n),
                  kOwner,
                  ".set_timesteps: `sigmas` and `timesteps` should have the same length as "
                  "num_inference_steps, if `num_inference_steps` is provided");
  } else {
    DIFFUSE_CHECK(args.sigmas || args.timesteps, kOwner,
                  ".set_timesteps: pass num_inference_steps, sigmas or timesteps");
    n = static_cast<int64_t>(args.sigmas ? args.sigmas->size() : args.timesteps->size());
  }
  DIFFUSE_CHECK(n >= 1 && n < 100000000, kOwner,
                ".set_timesteps: expected at least one inference step, got ", n);

  // 1. Default sigmas. Schedules diffusers computes from np.linspace are float64 arrays; custom
  // sigmas / timesteps become float32 arrays, and numpy keeps float32 arithmetic on them.
  bool f32_mode = false;
  std::vector<double> ts_custom;
  if (args.timesteps) ts_custom = to_f64(to_f32(*args.timesteps));
  std::vector<double> sig;
  const auto num_train = static_cast<double>(c.num_train_timesteps);
  if (!args.sigmas) {
    if (!args.timesteps) {
      const std::vector<double> t = np_linspace(sigma_max_ * num_train, sigma_min_ * num_train, n);
      sig.resize(t.size());
      for (std::size_t i = 0; i < t.size(); ++i) sig[i] = t[i] / num_train;
    } else {
      f32_mode = true;
      sig.resize(ts_custom.size());
      for (std::size_t i = 0; i < sig.size(); ++i) sig[i] = f32(ts_custom[i] / num_train);
    }
  } else {
    f32_mode = true;
    sig = to_f64(to_f32(*args.sigmas));
  }
  auto md = [f32_mode](double v) { return f32_mode ? f32(v) : v; };

  // 2. Shifting: resolution-dependent (exponential or linear time shift with mu, sigma = 1)
  // or the static shift.
  if (c.use_dynamic_shifting) {
    const bool exponential = c.time_shift_type == "exponential";
    const double m = md(exponential ? std::exp(*args.mu) : *args.mu);
    for (double& s : sig) {
      const double inner = md(md(md(1 / s) - 1));  // (1 / t - 1) ** 1.0
      s = md(m / md(m + inner));
    }
  } else {
    const double shift = md(c.shift);
    const double shift_m1 = md(c.shift - 1);
    for (double& s : sig) s = md(md(shift * s) / md(1 + md(shift_m1 * s)));
  }
  // 3. Stretch so the schedule terminates at shift_terminal.
  if (c.shift_terminal && *c.shift_terminal != 0) {
    const double scale = md(md(1 - sig.back()) / md(1 - *c.shift_terminal));
    for (double& s : sig) s = md(1 - md(md(1 - s) / scale));
  }
  // 4. Karras / exponential / beta sigmas between the ends of the shifted schedule (float64).
  if (c.use_karras_sigmas) {
    sig = karras_sigmas(sig.back(), sig.front(), n);
  } else if (c.use_exponential_sigmas) {
    sig = exponential_sigmas(sig.back(), sig.front(), n);
  } else if (c.use_beta_sigmas) {
    sig = beta_sigmas(sig.back(), sig.front(), n);
  }

  // 5. float32 sigmas; timesteps = sigmas * num_train_timesteps unless given.
  const std::vector<float> s32 = to_f32(sig);
  const auto num_train_f = static_cast<float>(c.num_train_timesteps);
  timesteps_.assign(s32.size(), 0.0);
  sigmas_.assign(s32.size() + 1, 0.0);
  for (std::size_t i = 0; i < s32.size(); ++i) {
    float s = s32[i];
    if (c.invert_sigmas) s = 1.0f - s;
    sigmas_[i] = s;
    timesteps_[i] = (args.timesteps && !c.invert_sigmas) ? ts_custom[i] : s * num_train_f;
  }
  // 6. The terminal sigma: 0 (1 when inverted).
  sigmas_.back() = c.invert_sigmas ? 1.0 : 0.0;

  num_inference_steps_ = n;
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput FlowMatchEulerDiscreteScheduler::step(const Tensor& model_output, double timestep,
                                                      const Tensor& sample, const StepArgs& args) {
  check_step_inputs(model_output, sample, kOwner);
  if (!step_index_) {
    step_index_ = begin_index_
                      ? *begin_index_
                      : static_cast<int64_t>(index_for_timestep(timestep, timesteps_, kOwner));
  }
  const auto i = static_cast<std::size_t>(*step_index_);
  DIFFUSE_CHECK(*step_index_ >= 0 && i + 1 < sigmas_.size(), kOwner,
                ".step: called more often than there are timesteps; call set_timesteps again");

  const DType m = model_output.dtype();
  const std::vector<double> mo = values(model_output);
  // Upcast to avoid precision issues when computing prev_sample: sample.to(torch.float32).
  std::vector<double> x = values(sample);
  for (double& v : x) v = f32(v);
  const std::size_t size = x.size();
  const auto sigma = static_cast<float>(sigmas_[i]);
  const auto sigma_next = static_cast<float>(sigmas_[i + 1]);
  std::vector<double> prev(size);
  if (config_.stochastic_sampling) {
    // x0 = sample - sigma * v, re-noised to sigma_next with fresh noise (randn_like(sample):
    // float32).
    const std::vector<double> z = values(noise_like(args, sample.shape(), DType::f32, kOwner));
    const DType x0_dtype = promote(DType::f32, m);
    const float keep = 1.0f - sigma_next;
    for (std::size_t k = 0; k < size; ++k) {
      const double x0 = round_to(x0_dtype, x[k] - round_to(m, sigma * mo[k]));
      prev[k] =
          round_to(m, round_to(x0_dtype, round_to(x0_dtype, keep * x0) + f32(sigma_next * z[k])));
    }
  } else {
    const float dt = sigma_next - sigma;
    const DType d = promote(DType::f32, m);
    for (std::size_t k = 0; k < size; ++k) {
      prev[k] = round_to(m, round_to(d, x[k] + round_to(m, dt * mo[k])));
    }
  }
  ++*step_index_;
  SchedulerOutput out;
  out.prev_sample = from_values(prev, sample.shape(), m);
  return out;
}

Tensor FlowMatchEulerDiscreteScheduler::add_noise(const Tensor& original, const Tensor& noise,
                                                  const std::vector<double>& timesteps) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.dim() >= 1 &&
                    original.shape() == noise.shape(),
                kOwner, ".scale_noise: sample and noise must be defined tensors of one shape");
  const DType s = original.dtype();
  const int64_t batch = original.size(0);
  const std::vector<double> ts = timesteps_per_item(timesteps, batch, kOwner);
  const std::vector<double> x = values(original);
  const std::vector<double> z = values(noise);
  const int64_t per_item = batch > 0 ? original.numel() / batch : 0;
  std::vector<double> out(x.size());
  for (int64_t b = 0; b < batch; ++b) {
    std::size_t idx;
    if (!begin_index_) {
      idx = index_for_timestep(ts[static_cast<std::size_t>(b)], timesteps_, kOwner);
    } else {
      // After the first step (inpainting) the current index, before it (img2img) the begin one.
      idx = static_cast<std::size_t>(step_index_ ? *step_index_ : *begin_index_);
    }
    DIFFUSE_CHECK(idx < sigmas_.size(), kOwner, ".scale_noise: index ", idx,
                  " is outside the schedule");
    // sigmas.to(sample dtype); sigma * noise + (1.0 - sigma) * sample
    const double sigma = round_to(s, sigmas_[idx]);
    const double keep = round_to(s, 1.0 - sigma);
    for (int64_t k = b * per_item; k < (b + 1) * per_item; ++k) {
      const auto j = static_cast<std::size_t>(k);
      out[j] = round_to(s, round_to(s, sigma * z[j]) + round_to(s, keep * x[j]));
    }
  }
  return from_values(out, original.shape(), s);
}

namespace schedulers {

std::unique_ptr<Scheduler> make_flow_match_euler_discrete_scheduler(const nlohmann::json& config) {
  return std::make_unique<FlowMatchEulerDiscreteScheduler>(
      FlowMatchEulerDiscreteSchedulerConfig::from_json(config));
}

}  // namespace schedulers

}  // namespace diffuse
