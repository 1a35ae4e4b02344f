// PNDM, IPNDM, EDMEuler, FlowMatchEuler/Heun, LCM and TCD beyond the reference data: options
// diffusers added after v0.31 (FlowMatch invert_sigmas, shift_terminal, Karras / exponential /
// beta sigmas, linear time shift, stochastic sampling, custom timesteps; EDM
// final_sigmas_type), custom LCM/TCD schedules, float32 samples, config round trips and the
// errors diffusers raises. Expected values are computed here from the formulas in diffusers'
// source, independently of the ports.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"
#include "diffuse/schedulers/scheduling_edm_euler.h"
#include "diffuse/schedulers/scheduling_flow_match_euler_discrete.h"
#include "diffuse/schedulers/scheduling_lcm.h"
#include "diffuse/schedulers/scheduling_pndm.h"
#include "diffuse/schedulers/scheduling_tcd.h"

namespace diffuse {
namespace {

using nlohmann::json;

std::unique_ptr<Scheduler> make(const std::string& cls, const json& config = json::object()) {
  return make_scheduler(cls, config);
}

// numpy.linspace(start, stop, n) in float64.
std::vector<double> linspace(double start, double stop, int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = start + i * ((stop - start) / (n - 1));
  v.back() = stop;
  return v;
}

void expect_rel(double actual, double expected, double rtol, const std::string& what) {
  EXPECT_LE(std::fabs(actual - expected), rtol * std::fabs(expected) + 1e-12)
      << what << ": " << actual << " vs " << expected;
}

// The default flow-matching schedule before shifting: linspace(1000, 1.0000000474974513, n) /
// 1000 (sigma_min is float32(0.001)).
std::vector<double> flow_base_sigmas(int n) {
  std::vector<double> t = linspace(1000.0, static_cast<double>(0.001f) * 1000.0, n);
  for (double& v : t) v /= 1000.0;
  return t;
}

TEST(FlowMatchEulerDiscrete, InvertSigmas) {
  auto base = make("FlowMatchEulerDiscreteScheduler");
  auto inv = make("FlowMatchEulerDiscreteScheduler", {{"invert_sigmas", true}});
  base->set_timesteps(4);
  inv->set_timesteps(4);
  const std::vector<double> b = *base->sigmas();
  const std::vector<double> s = *inv->sigmas();
  ASSERT_EQ(s.size(), 5u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(s[i], static_cast<double>(1.0f - static_cast<float>(b[i]))) << i;
    EXPECT_EQ(inv->timesteps()[i], static_cast<double>(static_cast<float>(s[i]) * 1000.0f)) << i;
  }
  EXPECT_EQ(s.back(), 1.0);
}

TEST(FlowMatchEulerDiscrete, ShiftTerminalEndsAtTerminal) {
  auto s = make("FlowMatchEulerDiscreteScheduler", {{"shift_terminal", 0.1}});
  s->set_timesteps(10);
  const std::vector<double> sig = *s->sigmas();
  const std::vector<double> base = flow_base_sigmas(10);
  const double scale = (1 - base.back()) / (1 - 0.1);
  for (std::size_t i = 0; i < 10; ++i) {
    expect_rel(sig[i], 1 - (1 - base[i]) / scale, 1e-6, "sigma " + std::to_string(i));
  }
  expect_rel(sig[9], 0.1, 1e-6, "last sigma");
  EXPECT_EQ(sig[10], 0.0);
}

TEST(FlowMatchEulerDiscrete, KarrasExponentialBetaSigmas) {
  const int n = 5;
  const double hi = 1.0;
  const double lo = static_cast<double>(0.001f);
  {
    auto s = make("FlowMatchEulerDiscreteScheduler", {{"use_karras_sigmas", true}});
    s->set_timesteps(n);
    const std::vector<double> sig = *s->sigmas();
    const double a = std::pow(hi, 1 / 7.0);
    const double b = std::pow(lo, 1 / 7.0);
    for (int i = 0; i < n; ++i) {
      const double ramp = i / double(n - 1);
      expect_rel(sig[static_cast<std::size_t>(i)], std::pow(a + ramp * (b - a), 7.0), 1e-6,
                 "karras " + std::to_string(i));
    }
  }
  {
    auto s = make("FlowMatchEulerDiscreteScheduler", {{"use_exponential_sigmas", true}});
    s->set_timesteps(n);
    const std::vector<double> sig = *s->sigmas();
    for (int i = 0; i < n; ++i) {
      const double l = std::log(hi) + i * (std::log(lo) - std::log(hi)) / (n - 1);
      expect_rel(sig[static_cast<std::size_t>(i)], std::exp(l), 1e-6,
                 "exponential " + std::to_string(i));
    }
  }
  {
    // Beta(0.6, 0.6) is symmetric: ppf(0.5) = 0.5 puts the middle sigma half-way, and the
    // schedule is point-symmetric around it.
    auto s = make("FlowMatchEulerDiscreteScheduler", {{"use_beta_sigmas", true}});
    s->set_timesteps(n);
    const std::vector<double> sig = *s->sigmas();
    expect_rel(sig[0], hi, 1e-6, "beta first");
    expect_rel(sig[4], lo, 1e-6, "beta last");
    expect_rel(sig[2], (hi + lo) / 2, 1e-6, "beta middle");
    expect_rel(sig[1] + sig[3], hi + lo, 1e-6, "beta symmetry");
    EXPECT_GT(sig[1], sig[2]);
    EXPECT_LT(sig[1], hi);
  }
  EXPECT_THROW(make("FlowMatchEulerDiscreteScheduler",
                    {{"use_karras_sigmas", true}, {"use_beta_sigmas", true}}),
               Error);
}

TEST(FlowMatchEulerDiscrete, DynamicShifting) {
  auto s = make("FlowMatchEulerDiscreteScheduler", {{"use_dynamic_shifting", true}});
  EXPECT_THROW(s->set_timesteps(4), Error);  // mu is required
  SetTimestepsArgs a;
  a.num_inference_steps = 4;
  a.mu = 0.8;
  auto lin = make("FlowMatchEulerDiscreteScheduler",
                  {{"use_dynamic_shifting", true}, {"time_shift_type", "linear"}});
  lin->set_timesteps(a);
  // Without a static shift the training schedule is unshifted: sigma_min = float32(0.001).
  const std::vector<double> base = flow_base_sigmas(4);
  for (std::size_t i = 0; i < 4; ++i) {
    expect_rel((*lin->sigmas())[i], 0.8 / (0.8 + (1 / base[i] - 1)), 1e-6,
               "linear time shift " + std::to_string(i));
  }
  EXPECT_THROW(make("FlowMatchEulerDiscreteScheduler", {{"time_shift_type", "cosine"}}), Error);
}

TEST(FlowMatchEulerDiscrete, CustomTimestepsAndLengthChecks) {
  auto s = make("FlowMatchEulerDiscreteScheduler");
  SetTimestepsArgs a;
  a.timesteps = std::vector<double>{900, 600, 300};
  s->set_timesteps(a);
  EXPECT_EQ(s->timesteps(), (std::vector<double>{900, 600, 300}));
  expect_rel((*s->sigmas())[1], 0.6, 1e-7, "sigma from custom timestep");
  EXPECT_EQ(s->num_inference_steps(), 3);
  SetTimestepsArgs bad;
  bad.num_inference_steps = 4;
  bad.sigmas = std::vector<double>{1.0, 0.5};
  EXPECT_THROW(s->set_timesteps(bad), Error);
  SetTimestepsArgs none;
  EXPECT_THROW(s->set_timesteps(none), Error);
}

TEST(FlowMatchEulerDiscrete, StochasticSamplingRenoisesX0) {
  auto s = make("FlowMatchEulerDiscreteScheduler", {{"stochastic_sampling", true}});
  s->set_timesteps(2);
  const std::vector<double> sig = *s->sigmas();
  const Shape shape{1, 2};
  const Tensor x = Tensor::from_vector(std::vector<double>{0.3, -1.7}, shape, DType::f64);
  const Tensor v = Tensor::from_vector(std::vector<double>{0.9, 0.25}, shape, DType::f64);
  StepArgs args;
  EXPECT_THROW(s->step(v, s->timesteps()[0], x, args), Error);  // needs a noise source
  s->set_timesteps(2);
  args.noise = [](const Shape& sh, DType dt) { return Tensor::full(sh, 0.5, dt); };
  const std::vector<double> out =
      s->step(v, s->timesteps()[0], x, args).prev_sample.to_vector<double>();
  const std::vector<double> xv{0.3, -1.7};
  const std::vector<double> vv{0.9, 0.25};
  for (std::size_t i = 0; i < 2; ++i) {
    const double x0 = static_cast<float>(xv[i]) - sig[0] * vv[i];
    expect_rel(out[i], (1 - sig[1]) * x0 + sig[1] * 0.5, 1e-6, "stochastic " + std::to_string(i));
  }
}

TEST(FlowMatchEulerDiscrete, Float32SamplesFollowFloat64) {
  const Shape shape{1, 3};
  const std::vector<double> xv{0.3, -1.7, 2.25};
  const std::vector<double> vv{0.9, 0.25, -0.5};
  std::vector<double> results[2];
  const DType dtypes[2] = {DType::f64, DType::f32};
  for (int k = 0; k < 2; ++k) {
    auto s = make("FlowMatchEulerDiscreteScheduler", {{"shift", 3.0}});
    s->set_timesteps(4);
    Tensor x = Tensor::from_vector(xv, shape, dtypes[k]);
    const Tensor v = Tensor::from_vector(vv, shape, dtypes[k]);
    for (double t : std::vector<double>(s->timesteps())) x = s->step(v, t, x).prev_sample;
    EXPECT_EQ(x.dtype(), dtypes[k]);
    results[k] = x.to_vector<double>();
  }
  // Constant velocity: x_end = x + (0 - 1) * v exactly up to float32 rounding.
  for (std::size_t i = 0; i < 3; ++i) {
    expect_rel(results[0][i], static_cast<float>(xv[i]) - vv[i], 1e-6, "f64");
    expect_rel(results[1][i], results[0][i], 1e-6, "f32 vs f64");
  }
}

TEST(FlowMatchHeunDiscrete, OnlyTakesStepCounts) {
  auto s = make("FlowMatchHeunDiscreteScheduler");
  EXPECT_EQ(s->order(), 2);
  s->set_timesteps(3);
  EXPECT_EQ(s->timesteps().size(), 5u);  // t0, t1, t1, t2, t2
  SetTimestepsArgs a;
  a.sigmas = std::vector<double>{1.0, 0.5};
  EXPECT_THROW(s->set_timesteps(a), Error);
  EXPECT_THROW(s->add_noise(Tensor::zeros({2, 1}, DType::f64), Tensor::zeros({2, 1}, DType::f64),
                            {1000.0, 500.0}),
               Error);  // one sigma for the whole batch
}

TEST(EDMEuler, FinalSigmasType) {
  auto zero = make("EDMEulerScheduler");
  auto last = make("EDMEulerScheduler", {{"final_sigmas_type", "sigma_min"}});
  zero->set_timesteps(4);
  last->set_timesteps(4);
  EXPECT_EQ(zero->sigmas()->back(), 0.0);
  EXPECT_EQ(last->sigmas()->back(), (*last->sigmas())[3]);
  expect_rel((*last->sigmas())[3], 0.002, 1e-6, "sigma_min");
  expect_rel((*zero->sigmas())[0], 80.0, 1e-6, "sigma_max");
  expect_rel(*zero->init_noise_sigma(), std::sqrt(80.0 * 80.0 + 1), 1e-15, "init_noise_sigma");
  EXPECT_THROW(make("EDMEulerScheduler", {{"final_sigmas_type", "one"}}), Error);
  EXPECT_THROW(make("EDMEulerScheduler", {{"sigma_schedule", "linear"}}), Error);
  SetTimestepsArgs a;
  a.sigmas = std::vector<double>{80, 1};
  EXPECT_THROW(zero->set_timesteps(a), Error);
}

TEST(PNDM, StableDiffusionPlmsSchedule) {
  // SD 1.x scheduler_config: PLMS with steps_offset=1, leading spacing.
  auto s = make("PNDMScheduler", {{"beta_start", 0.00085},
                                  {"beta_end", 0.012},
                                  {"beta_schedule", "scaled_linear"},
                                  {"skip_prk_steps", true},
                                  {"steps_offset", 1},
                                  {"set_alpha_to_one", false}});
  s->set_timesteps(50);
  const std::vector<double>& t = s->timesteps();
  ASSERT_EQ(t.size(), 51u);
  EXPECT_EQ(std::vector<double>(t.begin(), t.begin() + 5),
            (std::vector<double>{981, 961, 961, 941, 921}));
  EXPECT_EQ(t.back(), 1.0);
}

TEST(PNDM, StepCountsAndErrors) {
  auto prk = make("PNDMScheduler");
  EXPECT_THROW(prk->set_timesteps(3), Error);  // the Runge-Kutta warm-up needs 4 timesteps
  prk->set_timesteps(4);
  EXPECT_EQ(prk->timesteps().size(), 13u);  // 12 PRK + 1 PLMS
  auto plms = make("PNDMScheduler", {{"skip_prk_steps", true}});
  plms->set_timesteps(1);
  EXPECT_EQ(plms->timesteps(), (std::vector<double>{0}));
  auto trailing =
      make("PNDMScheduler", {{"skip_prk_steps", true}, {"timestep_spacing", "trailing"}});
  trailing->set_timesteps(4);
  EXPECT_EQ(trailing->timesteps(), (std::vector<double>{999, 749, 749, 499, 249}));
  EXPECT_THROW(make("PNDMScheduler", {{"prediction_type", "sample"}}), Error);
  EXPECT_THROW(make("PNDMScheduler", {{"timestep_spacing", "uniform"}}), Error);
  const Tensor x = Tensor::zeros({1, 2}, DType::f64);
  auto fresh = make("PNDMScheduler");
  EXPECT_THROW(fresh->step(x, 999, x), Error);  // set_timesteps first
  // The multistep history belongs to one sample size.
  plms->set_timesteps(10);
  const std::vector<double>& t = plms->timesteps();
  plms->step(x, t[0], x);
  const Tensor other = Tensor::zeros({1, 3}, DType::f64);
  EXPECT_THROW(plms->step(other, t[1], other), Error);
}

TEST(IPNDM, HasNoAddNoise) {
  auto s = make("IPNDMScheduler");
  s->set_timesteps(4);
  const Tensor x = Tensor::zeros({1, 2}, DType::f64);
  EXPECT_THROW(s->add_noise(x, x, {s->timesteps()[0]}), Error);
}

TEST(LCM, CustomTimestepsAndStrength) {
  auto s = make("LCMScheduler");
  SetTimestepsArgs a;
  a.timesteps = std::vector<double>{999, 759, 499, 259};
  s->set_timesteps(a);
  EXPECT_EQ(s->timesteps(), (std::vector<double>{999, 759, 499, 259}));
  a.strength = 0.5;  // keeps the last int(4 * 0.5) timesteps
  s->set_timesteps(a);
  EXPECT_EQ(s->timesteps(), (std::vector<double>{499, 259}));
  EXPECT_EQ(s->num_inference_steps(), 4);
  SetTimestepsArgs ascending;
  ascending.timesteps = std::vector<double>{259, 499};
  EXPECT_THROW(s->set_timesteps(ascending), Error);
  EXPECT_THROW(s->set_timesteps(51), Error);  // more than original_inference_steps
  SetTimestepsArgs both;
  both.num_inference_steps = 4;
  both.timesteps = std::vector<double>{999};
  EXPECT_THROW(s->set_timesteps(both), Error);
}

TEST(LCM, StepNeedsNoiseExceptOnTheLastStep) {
  auto s = make("LCMScheduler");
  const Tensor x = Tensor::full({1, 4}, 0.5, DType::f64);
  EXPECT_THROW(s->step(x, 999, x), Error);  // set_timesteps first
  s->set_timesteps(2);
  EXPECT_THROW(s->step(x, 999, x), Error);  // first of two steps draws noise
  s->set_timesteps(1);
  const SchedulerOutput out = s->step(x, 999, x);
  // One step: prev_sample is the boundary-condition denoised x0.
  EXPECT_EQ(out.prev_sample.to_vector<double>(), out.pred_original_sample.to_vector<double>());
}

TEST(LCM, Float32LoopFollowsFloat64) {
  std::vector<double> results[2];
  const DType dtypes[2] = {DType::f64, DType::f32};
  for (int k = 0; k < 2; ++k) {
    auto s = make("LCMScheduler");
    s->set_timesteps(4);
    StepArgs args;
    int64_t calls = 0;
    args.noise = [&calls](const Shape& sh, DType dt) {
      return Tensor::full(sh, 0.25 * static_cast<double>(++calls), dt);
    };
    Tensor x = Tensor::from_vector(std::vector<double>{0.8, -1.1, 0.05, 2.0}, {1, 4}, dtypes[k]);
    for (double t : std::vector<double>(s->timesteps())) {
      const std::vector<double> xv = x.to_vector<double>();
      std::vector<double> eps(xv.size());
      for (std::size_t i = 0; i < xv.size(); ++i) eps[i] = 0.1 * xv[i] + 0.05 * std::sin(xv[i]);
      x = s->step(Tensor::from_vector(eps, x.shape(), dtypes[k]), t, x, args).prev_sample;
    }
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(x.dtype(), dtypes[k]);
    results[k] = x.to_vector<double>();
  }
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(results[1][i], results[0][i], 1e-4 * (1 + std::fabs(results[0][i]))) << i;
  }
}

TEST(TCD, WholeTrainingScheduleAndGammaRange) {
  auto s = make("TCDScheduler", {{"original_inference_steps", nullptr}});
  s->set_timesteps(4);
  EXPECT_EQ(s->timesteps(), (std::vector<double>{999, 749, 499, 249}));
  auto d = make("TCDScheduler");
  d->set_timesteps(4);
  EXPECT_EQ(d->timesteps(), (std::vector<double>{999, 759, 499, 259}));
  const Tensor x = Tensor::full({1, 4}, 0.5, DType::f64);
  StepArgs bad;
  bad.eta = 1.5;
  EXPECT_THROW(d->step(x, 999, x, bad), Error);
  StepArgs deterministic;
  deterministic.eta = 0.0;  // no noise needed
  EXPECT_NO_THROW(d->step(x, 999, x, deterministic));
  StepArgs default_eta;  // 0.3: draws noise, so it needs a source
  auto e = make("TCDScheduler");
  e->set_timesteps(4);
  EXPECT_THROW(e->step(x, 999, x, default_eta), Error);
}

TEST(SchedCClasses, ConfigRoundTripAndForeignKeys) {
  const json sd15_pndm = {{"_class_name", "PNDMScheduler"},   {"beta_end", 0.012},
                          {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085},
                          {"num_train_timesteps", 1000},      {"set_alpha_to_one", false},
                          {"skip_prk_steps", true},           {"steps_offset", 1},
                          {"trained_betas", nullptr},         {"clip_sample", false}};
  for (const char* cls :
       {"PNDMScheduler", "IPNDMScheduler", "EDMEulerScheduler", "FlowMatchEulerDiscreteScheduler",
        "FlowMatchHeunDiscreteScheduler", "LCMScheduler", "TCDScheduler"}) {
    SCOPED_TRACE(cls);
    auto s = make(cls, sd15_pndm);  // keys another class does not know are warned about
    EXPECT_EQ(s->class_name(), cls);
    auto again = make(cls, s->config());
    EXPECT_EQ(again->config(), s->config());
    s->set_timesteps(4);
    again->set_timesteps(4);
    EXPECT_EQ(again->timesteps(), s->timesteps());
    EXPECT_FALSE(s->timesteps().empty());
  }
  EXPECT_THROW(make("LCMScheduler", {{"beta_schedule", "cosine"}}), Error);
  EXPECT_THROW(make("TCDScheduler", {{"num_train_timesteps", "1000"}}), Error);
}

}  // namespace
}  // namespace diffuse
