// What KDPM2DiscreteScheduler and KDPM2AncestralDiscreteScheduler share (diffusers copies it
// between the two files): the config (same keys and defaults), its JSON reading and writing, and
// the log-space midpoint of two sigmas. Private to src/schedulers.
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/formats/config.h"

namespace diffuse::schedulers {

struct KDPM2Config {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::string prediction_type = "epsilon";
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;

  // Reads a scheduler_config.json object for the class `name` (unknown keys warned about).
  static KDPM2Config from_json(const nlohmann::json& json, const char* name) {
    KDPM2Config c;
    ConfigReader r(json, name);
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
    return c;
  }

  // The full config with every key, as `scheduler.config` holds it.
  nlohmann::json to_json(const char* name) const {
    nlohmann::json j;
    j["_class_name"] = name;
    j["num_train_timesteps"] = num_train_timesteps;
    j["beta_start"] = beta_start;
    j["beta_end"] = beta_end;
    j["beta_schedule"] = beta_schedule;
    j["trained_betas"] = trained_betas ? nlohmann::json(*trained_betas) : nlohmann::json();
    j["use_karras_sigmas"] = use_karras_sigmas;
    j["use_exponential_sigmas"] = use_exponential_sigmas;
    j["use_beta_sigmas"] = use_beta_sigmas;
    j["prediction_type"] = prediction_type;
    j["timestep_spacing"] = timestep_spacing;
    j["steps_offset"] = steps_offset;
    return j;
  }
};

// exp(lerp(log a, log b, 0.5)) in float32 with torch.lerp's formula for weight 0.5
// (b - (b - a) * 0.5), which gives NaN for (a > 0, b = 0) exactly as diffusers does.
inline float log_midpoint(float a, float b) {
  const float la = std::log(a);
  const float lb = std::log(b);
  return std::exp(lb - (lb - la) * 0.5f);
}

}  // namespace diffuse::schedulers
