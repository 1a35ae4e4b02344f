// The A1111 / ComfyUI name table (sampler_names.h) and scheduler swapping from a real
// scheduler_config.json (SD 1.5's PNDM config -> every class), checked against diffusers'
// reference schedules where a name implies one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "diffuse/schedulers/sampler_names.h"
#include "diffuse/schedulers/scheduler.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::optional<json> sd15_config() {
  const fs::path p = testing::shared_dir() / "assets" / "model-configs" / "runwayml" /
                     "stable-diffusion-v1-5" / "scheduler" / "scheduler_config.json";
  if (!fs::exists(p)) return std::nullopt;
  return testing::read_json(p);
}

// Deterministic stand-in for a Generator: values in [-1.7, 1.7].
NoiseSource counter_noise() {
  auto state = std::make_shared<uint64_t>(12345);
  return [state](const Shape& shape, DType dtype) {
    std::vector<double> v(static_cast<std::size_t>(shape_numel(shape)));
    for (double& e : v) {
      *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
      e = (static_cast<double>(*state >> 11) / 9007199254740992.0 - 0.5) * 3.4;
    }
    return Tensor::from_vector(v, shape, dtype);
  };
}

TEST(SamplerNames, A1111TableFollowsDiffusersDocs) {
  struct Row {
    const char* name;
    const char* cls;
    json expected;  // overrides that must be present
  };
  const std::vector<Row> rows = {
      {"DPM++ 2M", "DPMSolverMultistepScheduler", {{"algorithm_type", "dpmsolver++"}}},
      {"DPM++ 2M Karras",
       "DPMSolverMultistepScheduler",
       {{"algorithm_type", "dpmsolver++"}, {"use_karras_sigmas", true}}},
      {"DPM++ 2M SDE", "DPMSolverMultistepScheduler", {{"algorithm_type", "sde-dpmsolver++"}}},
      {"DPM++ 2M SDE Karras",
       "DPMSolverMultistepScheduler",
       {{"algorithm_type", "sde-dpmsolver++"}, {"use_karras_sigmas", true}}},
      {"DPM++ SDE", "DPMSolverSDEScheduler", json::object()},
      {"DPM++ SDE Karras", "DPMSolverSDEScheduler", {{"use_karras_sigmas", true}}},
      {"DPM2", "KDPM2DiscreteScheduler", json::object()},
      {"DPM2 Karras", "KDPM2DiscreteScheduler", {{"use_karras_sigmas", true}}},
      {"DPM2 a", "KDPM2AncestralDiscreteScheduler", json::object()},
      {"DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", {{"use_karras_sigmas", true}}},
      {"Euler", "EulerDiscreteScheduler", json::object()},
      {"Euler a", "EulerAncestralDiscreteScheduler", json::object()},
      {"Heun", "HeunDiscreteScheduler", json::object()},
      {"LMS", "LMSDiscreteScheduler", json::object()},
      {"LMS Karras", "LMSDiscreteScheduler", {{"use_karras_sigmas", true}}},
      {"UniPC", "UniPCMultistepScheduler", json::object()},
      {"DEIS", "DEISMultistepScheduler", json::object()},
      {"LCM", "LCMScheduler", json::object()},
      {"DDIM", "DDIMScheduler", json::object()},
      {"DDPM", "DDPMScheduler", json::object()},
      {"PLMS", "PNDMScheduler", {{"skip_prk_steps", true}}},
  };
  for (const Row& r : rows) {
    const SamplerChoice c = resolve_sampler(r.name);
    EXPECT_EQ(c.class_name, r.cls) << r.name;
    for (const auto& [k, v] : r.expected.items()) {
      ASSERT_TRUE(c.overrides.contains(k)) << r.name << " lacks override " << k;
      EXPECT_EQ(c.overrides.at(k), v) << r.name << " override " << k;
    }
    if (r.expected.contains("use_karras_sigmas")) {
      EXPECT_EQ(c.schedule, "karras") << r.name;
    } else {
      EXPECT_EQ(c.schedule, "") << r.name;
      EXPECT_FALSE(c.overrides.contains("use_karras_sigmas")) << r.name;
    }
  }
}

TEST(SamplerNames, ComfyUINamesAndCaseInsensitivity) {
  EXPECT_EQ(resolve_sampler("euler_ancestral").class_name, "EulerAncestralDiscreteScheduler");
  EXPECT_EQ(resolve_sampler("  EULER    a ").class_name, "EulerAncestralDiscreteScheduler");
  EXPECT_EQ(resolve_sampler("dpm_2_ancestral").class_name, "KDPM2AncestralDiscreteScheduler");
  EXPECT_EQ(resolve_sampler("dpmpp_sde").class_name, "DPMSolverSDEScheduler");
  EXPECT_EQ(resolve_sampler("uni_pc").overrides.at("solver_type"), "bh1");
  EXPECT_EQ(resolve_sampler("uni_pc_bh2").overrides.at("solver_type"), "bh2");
  EXPECT_EQ(resolve_sampler("dpmpp_3m_sde").overrides.at("solver_order"), 3);
  EXPECT_FALSE(resolve_sampler("dpmpp_2s_ancestral").note.empty());  // approximate mapping

  // --sampler "dpm++ 2m" --schedule karras == "DPM++ 2M Karras".
  const SamplerChoice a = resolve_sampler("dpm++ 2m", "Karras");
  const SamplerChoice b = resolve_sampler("DPM++ 2M Karras");
  EXPECT_EQ(a.class_name, b.class_name);
  EXPECT_EQ(a.overrides, b.overrides);
  EXPECT_EQ(a.overrides.at("use_karras_sigmas"), true);
  EXPECT_EQ(a.overrides.at("use_exponential_sigmas"), false);
  // An explicit schedule wins over the name's suffix.
  const SamplerChoice c = resolve_sampler("DPM++ 2M Karras", "exponential");
  EXPECT_EQ(c.schedule, "exponential");
  EXPECT_EQ(c.overrides.at("use_karras_sigmas"), false);
  EXPECT_EQ(c.overrides.at("use_exponential_sigmas"), true);

  EXPECT_EQ(resolve_sampler("euler", "sgm_uniform").overrides.at("timestep_spacing"), "trailing");
  EXPECT_EQ(resolve_sampler("euler", "normal").overrides.at("timestep_spacing"), "linspace");
  EXPECT_EQ(resolve_sampler("euler", "beta").overrides.at("use_beta_sigmas"), true);
  const SamplerChoice d = resolve_sampler("ddim", "ddim_uniform");
  EXPECT_EQ(d.overrides.at("timestep_spacing"), "leading");
  EXPECT_EQ(d.overrides.at("steps_offset"), 1);
}

TEST(SamplerNames, UnknownNamesListTheKnownOnes) {
  try {
    resolve_sampler("dpm fast");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("dpm fast"), std::string::npos) << m;
    EXPECT_NE(m.find("'Euler a'"), std::string::npos) << m;
    EXPECT_NE(m.find("'dpmpp_2m'"), std::string::npos) << m;
  }
  try {
    resolve_sampler("euler", "kl_optimal");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("kl_optimal"), std::string::npos) << m;
    EXPECT_NE(m.find("'karras'"), std::string::npos) << m;
    EXPECT_NE(m.find("'sgm_uniform'"), std::string::npos) << m;
  }
  // A schedule the class cannot express.
  EXPECT_THROW(make_sampler("ddim", "karras", json::object()), Error);
  EXPECT_THROW(make_sampler("", "", json::object()), Error);
}

// Every name builds from SD 1.5's PNDM config and runs a short loop; schedules a name implies
// match diffusers' own numbers (reference cases with the same SD betas).
TEST(SamplerNames, EveryNameBuildsFromSD15Config) {
  const auto cfg = sd15_config();
  if (!cfg) GTEST_SKIP() << "shared/assets/model-configs/runwayml/stable-diffusion-v1-5 absent";
  const std::vector<std::string> classes = scheduler_class_names();
  for (const std::string& name : sampler_names()) {
    const SamplerChoice c = resolve_sampler(name);
    if (std::find(classes.begin(), classes.end(), c.class_name) == classes.end()) {
      ADD_FAILURE() << name << " maps to " << c.class_name << ", which is not registered";
      continue;
    }
    std::unique_ptr<Scheduler> s = make_sampler(name, "", *cfg);
    ASSERT_EQ(s->class_name(), c.class_name) << name;
    for (const auto& [k, v] : c.overrides.items()) {
      EXPECT_EQ(s->config().at(k), v) << name << ": override " << k << " not applied";
    }
    // SD 1.5's betas survive the swap.
    EXPECT_EQ(s->config().value("beta_schedule", std::string("scaled_linear")), "scaled_linear")
        << name;
  }
  for (const char* schedule :
       {"normal", "karras", "exponential", "beta", "sgm_uniform", "simple", "ddim_uniform"}) {
    std::unique_ptr<Scheduler> s = make_sampler("euler", schedule, *cfg);
    s->set_timesteps(8);
    EXPECT_EQ(s->timesteps().size(), 8u) << schedule;
  }
}

// The reference case of `cls` with `tag` and `steps` inference steps.
std::optional<json> reference_case(const std::string& cls, const std::string& tag, int steps) {
  for (const fs::path& root : testing::reference_roots()) {
    const fs::path p = root / "schedulers" / (cls + ".json");
    if (!fs::exists(p)) continue;
    const json doc = testing::read_json(p);
    for (const json& c : doc.at("cases")) {
      if (c.at("tag") == tag && c.at("num_inference_steps") == steps) return c;
    }
  }
  return std::nullopt;
}

void expect_schedule(const Scheduler& s, const json& ref, const std::string& what) {
  const std::vector<double> t = ref.at("timesteps").get<std::vector<double>>();
  ASSERT_EQ(s.timesteps().size(), t.size()) << what;
  for (std::size_t i = 0; i < t.size(); ++i)
    EXPECT_NEAR(s.timesteps()[i], t[i], 1e-6 * (std::fabs(t[i]) + 1)) << what << " t[" << i << "]";
  if (ref.at("sigmas").is_null()) return;
  const std::vector<double> sig = ref.at("sigmas").get<std::vector<double>>();
  ASSERT_TRUE(s.sigmas().has_value()) << what;
  ASSERT_EQ(s.sigmas()->size(), sig.size()) << what;
  for (std::size_t i = 0; i < sig.size(); ++i)
    EXPECT_NEAR((*s.sigmas())[i], sig[i], 1e-6 * (std::fabs(sig[i]) + 1e-3))
        << what << " sigma[" << i << "]";
}

TEST(SamplerNames, SchedulesMatchDiffusersReference) {
  const auto cfg = sd15_config();
  if (!cfg) GTEST_SKIP() << "SD 1.5 scheduler_config.json absent from shared/assets";
  struct Row {
    const char* sampler;
    const char* schedule;
    const char* cls;
    const char* tag;
    int steps;
  };
  const std::vector<Row> rows = {
      {"Euler", "karras", "EulerDiscreteScheduler", "use_karras_sigmas", 10},
      {"euler", "beta", "EulerDiscreteScheduler", "use_beta_sigmas", 10},
      {"euler", "exponential", "EulerDiscreteScheduler", "use_exponential_sigmas", 4},
      {"euler", "sgm_uniform", "EulerDiscreteScheduler", "timestep_spacing=trailing", 10},
      {"Euler a", "normal", "EulerAncestralDiscreteScheduler", "base", 10},
      {"LMS Karras", "", "LMSDiscreteScheduler", "use_karras_sigmas", 10},
      {"dpm_2", "karras", "KDPM2DiscreteScheduler", "use_karras_sigmas", 10},
      {"DDIM", "ddim_uniform", "DDIMScheduler", "leading+steps_offset=1", 10},
      {"Heun", "normal", "HeunDiscreteScheduler", "base", 10},
  };
  int checked = 0;
  for (const Row& r : rows) {
    const auto ref = reference_case(r.cls, r.tag, r.steps);
    if (!ref) {
      std::printf("[ sampler ] no reference case %s/%s: not checked\n", r.cls, r.tag);
      continue;
    }
    std::unique_ptr<Scheduler> s = make_sampler(r.sampler, r.schedule, *cfg);
    s->set_timesteps(r.steps);
    expect_schedule(*s, *ref, std::string(r.sampler) + " + " + r.schedule);
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no reference scheduler data found";
}

// SD 1.5's PNDM config swapped into every registered class (diffusers'
// X.from_config(pipe.scheduler.config)), then a short loop; and every class's own config()
// swapped into every other class.
TEST(SchedulerSwap, SD15ConfigIntoEveryClass) {
  const auto cfg = sd15_config();
  if (!cfg) GTEST_SKIP() << "SD 1.5 scheduler_config.json absent from shared/assets";
  const Shape shape = {1, 4, 8, 8};
  for (const std::string& cls : scheduler_class_names()) {
    SCOPED_TRACE(cls);
    std::unique_ptr<Scheduler> s = make_scheduler(cls, *cfg);
    ASSERT_EQ(s->class_name(), cls);
    const json c = s->config();
    if (c.contains("beta_start")) {
      EXPECT_DOUBLE_EQ(c.at("beta_start").get<double>(), 0.00085);
      EXPECT_EQ(c.at("beta_schedule"), "scaled_linear");
    }
    s->set_timesteps(6);
    ASSERT_FALSE(s->timesteps().empty());
    StepArgs args;
    args.noise = counter_noise();
    Tensor sample = counter_noise()(shape, DType::f32);
    if (s->init_noise_sigma()) {
      std::vector<double> v = sample.to_vector<double>();
      for (double& e : v) e *= *s->init_noise_sigma();
      sample = Tensor::from_vector(v, shape, DType::f32);
    }
    for (double t : std::vector<double>(s->timesteps())) {
      const Tensor x = s->scale_model_input(sample, t);
      std::vector<double> eps = x.to_vector<double>();
      for (double& e : eps) e = 0.1 * e;
      sample = s->step(Tensor::from_vector(eps, shape, DType::f32), t, sample, args).prev_sample;
    }
    EXPECT_EQ(sample.dtype(), DType::f32);
    for (double v : sample.to_vector<double>()) ASSERT_TRUE(std::isfinite(v));
    // Swapping on: diffusers itself refuses one combination, another solver family's
    // algorithm_type (DPMSolver's "dpmsolver++" in SASolver and vice versa).
    const LogLevel level = log_level();
    set_log_level(LogLevel::error);  // unknown-key warnings are expected here
    for (const std::string& other : scheduler_class_names()) {
      try {
        EXPECT_EQ(make_scheduler(other, c)->class_name(), other);
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("algorithm_type"), std::string::npos)
            << cls << " config -> " << other << ": " << e.what();
      }
    }
    set_log_level(level);
  }
}

}  // namespace
}  // namespace diffuse
