// The sampler and schedule names people know from A1111 and ComfyUI, mapped to a diffusers
// scheduler class plus config overrides, following diffusers' documented table
// (docs/source/en/api/schedulers/overview.md, "A1111/k-diffusion"); docs/schedulers.md lists
// every name.
//
//   // --sampler "dpm++ 2m" --schedule karras, on top of the model's scheduler_config.json:
//   std::unique_ptr<Scheduler> s = make_sampler("dpm++ 2m", "karras", model_scheduler_config);
//
// Names are case-insensitive and whitespace-tolerant ("DPM++ 2M Karras", "dpmpp_2m", "Euler a",
// "euler_ancestral"). An A1111 name may carry its schedule as a suffix ("DPM++ 2M Karras");
// an explicit schedule argument wins over the suffix. Unknown names are a diffuse::Error that
// lists the known ones. Pure functions: thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// What a sampler (+ schedule) name resolves to.
struct SamplerChoice {
  std::string class_name;    // diffusers class, e.g. "DPMSolverMultistepScheduler"
  nlohmann::json overrides;  // config keys set on top of the model's scheduler config
  std::string sampler;       // canonical sampler name, e.g. "DPM++ 2M"
  std::string schedule;      // canonical schedule name ("karras", ...), or "" for the default
  std::string note;          // caveat when the mapping is approximate, else ""
};

// Resolves `sampler` (A1111 or ComfyUI name) and `schedule` (ComfyUI scheduler name: normal,
// karras, exponential, beta, sgm_uniform, simple, ddim_uniform; "" keeps the class's default
// schedule, or the schedule suffix of an A1111 name). Throws diffuse::Error for unknown names.
SamplerChoice resolve_sampler(const std::string& sampler, const std::string& schedule = "");

// Builds the scheduler for `sampler` + `schedule` from `base_config` (typically the model's
// scheduler_config.json, of any scheduler class): diffusers'
// `Class.from_config(base_config, **overrides)`. Throws diffuse::Error for unknown names, and
// when the schedule needs an option the chosen class does not have (e.g. "karras" with DDIM).
std::unique_ptr<Scheduler> make_sampler(const std::string& sampler, const std::string& schedule,
                                        const nlohmann::json& base_config);

// Every sampler / schedule name resolve_sampler accepts (canonical spellings and aliases).
std::vector<std::string> sampler_names();
std::vector<std::string> schedule_names();

}  // namespace diffuse
