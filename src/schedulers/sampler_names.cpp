// A1111 / ComfyUI sampler and schedule names -> diffusers scheduler class + config overrides.
// The sampler table follows diffusers' docs/source/en/api/schedulers/overview.md; the schedule
// table follows what ComfyUI's schedulers compute (comfy/samplers.py) expressed with diffusers'
// options. docs/schedulers.md is the user-facing copy of both tables: keep them in sync.
#include "diffuse/schedulers/sampler_names.h"

#include <cctype>
#include <string_view>

#include "diffuse/core/error.h"

namespace diffuse {
namespace {

struct SamplerEntry {
  std::vector<std::string_view> names;  // first = canonical A1111-style name; all lower-cased
                                        // on comparison
  const char* class_name;
  const char* overrides;  // JSON object
  const char* note;
};

// Order matters only for listing. DPM++ SDE: diffusers' table says DPMSolverSinglestepScheduler,
// but k-diffusion's sample_dpmpp_sde (what A1111 and ComfyUI run) is ported as
// DPMSolverSDEScheduler (diffusers issue #4167), which is what users of the name expect.
const std::vector<SamplerEntry>& sampler_table() {
  static const std::vector<SamplerEntry> t = {
      {{"Euler", "euler", "k_euler"}, "EulerDiscreteScheduler", "{}", ""},
      {{"Euler a", "euler_ancestral", "euler ancestral", "k_euler_a", "k_euler_ancestral"},
       "EulerAncestralDiscreteScheduler",
       "{}",
       ""},
      {{"Heun", "heun", "k_heun"}, "HeunDiscreteScheduler", "{}", ""},
      {{"LMS", "lms", "k_lms"}, "LMSDiscreteScheduler", "{}", ""},
      {{"DPM2", "dpm_2", "k_dpm_2"}, "KDPM2DiscreteScheduler", "{}", ""},
      {{"DPM2 a", "dpm_2_ancestral", "k_dpm_2_a", "k_dpm_2_ancestral"},
       "KDPM2AncestralDiscreteScheduler",
       "{}",
       ""},
      {{"DPM++ 2M", "dpmpp_2m", "k_dpmpp_2m"},
       "DPMSolverMultistepScheduler",
       R"({"algorithm_type": "dpmsolver++", "solver_order": 2})",
       ""},
      {{"DPM++ 2M SDE", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "k_dpmpp_2m_sde"},
       "DPMSolverMultistepScheduler",
       R"({"algorithm_type": "sde-dpmsolver++", "solver_order": 2})",
       ""},
      {{"DPM++ 3M SDE", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu"},
       "DPMSolverMultistepScheduler",
       R"({"algorithm_type": "sde-dpmsolver++", "solver_order": 3})",
       ""},
      {{"DPM++ SDE", "dpmpp_sde", "dpmpp_sde_gpu", "k_dpmpp_sde"},
       "DPMSolverSDEScheduler",
       "{}",
       "noise comes from the caller's generator, not torchsde's Brownian tree, so images differ "
       "from A1111/ComfyUI for the same seed"},
      {{"DPM++ 2S a", "dpmpp_2s_ancestral", "k_dpmpp_2s_a"},
       "DPMSolverSinglestepScheduler",
       R"({"algorithm_type": "dpmsolver++", "solver_order": 2})",
       "diffusers has no ancestral DPM++ 2S; its table names DPMSolverSinglestepScheduler as "
       "'very similar' (deterministic)"},
      {{"UniPC", "uni_pc"}, "UniPCMultistepScheduler", R"({"solver_type": "bh1"})", ""},
      {{"UniPC bh2", "uni_pc_bh2"}, "UniPCMultistepScheduler", R"({"solver_type": "bh2"})", ""},
      {{"DEIS", "deis"}, "DEISMultistepScheduler", "{}", ""},
      {{"DDIM", "ddim"}, "DDIMScheduler", "{}", ""},
      {{"DDPM", "ddpm"}, "DDPMScheduler", "{}", ""},
      {{"PLMS", "plms"}, "PNDMScheduler", R"({"skip_prk_steps": true})", ""},
      {{"PNDM", "pndm"}, "PNDMScheduler", "{}", ""},
      {{"IPNDM", "ipndm"}, "IPNDMScheduler", "{}", ""},
      {{"LCM", "lcm"}, "LCMScheduler", "{}", ""},
      {{"TCD", "tcd"}, "TCDScheduler", "{}", ""},
      {{"SA-Solver", "sa_solver"}, "SASolverScheduler", "{}", ""},
      {{"Euler EDM", "euler_edm"}, "EDMEulerScheduler", "{}", ""},
      {{"DPM++ 2M EDM", "dpmpp_2m_edm"}, "EDMDPMSolverMultistepScheduler", "{}", ""},
      {{"Flow Euler", "flow_euler", "flowmatch_euler"},
       "FlowMatchEulerDiscreteScheduler",
       "{}",
       ""},
      {{"Flow Heun", "flow_heun", "flowmatch_heun"}, "FlowMatchHeunDiscreteScheduler", "{}", ""},
  };
  return t;
}

struct ScheduleEntry {
  std::vector<std::string_view> names;
  const char* overrides;  // JSON object
  const char* required;   // a config key the class must have, or "" (any class)
  const char* note;
};

// The three sigma-schedule switches are reset by every schedule so that a model config that
// enables one (e.g. use_karras_sigmas) does not leak into another schedule.
const std::vector<ScheduleEntry>& schedule_table() {
  static const std::vector<ScheduleEntry> t = {
      {{"normal", "default", "linspace"}, R"({"timestep_spacing": "linspace"})", "", ""},
      {{"karras"}, R"({"use_karras_sigmas": true})", "use_karras_sigmas", ""},
      {{"exponential"}, R"({"use_exponential_sigmas": true})", "use_exponential_sigmas", ""},
      {{"beta"}, R"({"use_beta_sigmas": true})", "use_beta_sigmas", ""},
      {{"sgm_uniform", "sgm uniform", "trailing"},
       R"({"timestep_spacing": "trailing"})",
       "timestep_spacing",
       ""},
      {{"simple"},
       R"({"timestep_spacing": "trailing"})",
       "timestep_spacing",
       "ComfyUI's 'simple' picks every (1000/steps)-th training sigma from the end, truncating "
       "where diffusers' 'trailing' rounds: timesteps can differ by one"},
      {{"ddim_uniform", "ddim uniform", "leading"},
       R"({"timestep_spacing": "leading", "steps_offset": 1})",
       "timestep_spacing",
       ""},
  };
  return t;
}

std::string normalize(const std::string& s) {
  std::string out;
  bool space = false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(c));
  }
  return out;
}

std::string lower(std::string_view s) {
  return normalize(std::string(s));
}

const SamplerEntry* find_sampler(const std::string& key) {
  for (const SamplerEntry& e : sampler_table())
    for (std::string_view n : e.names)
      if (lower(n) == key) return &e;
  return nullptr;
}

const ScheduleEntry* find_schedule(const std::string& key) {
  for (const ScheduleEntry& e : schedule_table())
    for (std::string_view n : e.names)
      if (lower(n) == key) return &e;
  return nullptr;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ", ") + ("'" + s + "'");
  return out;
}

}  // namespace

SamplerChoice resolve_sampler(const std::string& sampler, const std::string& schedule) {
  std::string key = normalize(sampler);
  std::string schedule_key = normalize(schedule);
  const SamplerEntry* e = find_sampler(key);
  if (e == nullptr) {
    // A1111 names carry the schedule as a suffix: "DPM++ 2M Karras", "LMS Karras".
    for (const char* suffix : {" karras", " exponential"}) {
      const std::string sfx = suffix;
      if (key.size() > sfx.size() && key.compare(key.size() - sfx.size(), sfx.size(), sfx) == 0) {
        e = find_sampler(key.substr(0, key.size() - sfx.size()));
        if (e != nullptr && schedule_key.empty()) schedule_key = sfx.substr(1);
        break;
      }
    }
  }
  DIFFUSE_CHECK(e != nullptr, "unknown sampler '", sampler, "' (known: ", join(sampler_names()),
                "; A1111 names may end in ' Karras')");
  SamplerChoice c;
  c.class_name = e->class_name;
  c.sampler = std::string(e->names.front());
  c.overrides = nlohmann::json::parse(e->overrides);
  c.note = e->note;
  if (!schedule_key.empty()) {
    const ScheduleEntry* s = find_schedule(schedule_key);
    DIFFUSE_CHECK(s != nullptr, "unknown schedule '", schedule,
                  "' (known: ", join(schedule_names()), ")");
    c.schedule = std::string(s->names.front());
    c.overrides["use_karras_sigmas"] = false;
    c.overrides["use_exponential_sigmas"] = false;
    c.overrides["use_beta_sigmas"] = false;
    const nlohmann::json schedule_overrides = nlohmann::json::parse(s->overrides);
    for (const auto& [k, v] : schedule_overrides.items()) c.overrides[k] = v;
    if (*s->note != '\0') c.note += std::string(c.note.empty() ? "" : "; ") + s->note;
  }
  return c;
}

std::unique_ptr<Scheduler> make_sampler(const std::string& sampler, const std::string& schedule,
                                        const nlohmann::json& base_config) {
  DIFFUSE_CHECK(base_config.is_object() || base_config.is_null(),
                "make_sampler: expected a scheduler config object, got ", base_config.type_name());
  const SamplerChoice c = resolve_sampler(sampler, schedule);
  // The options the class really has: the keys of its default config.
  const nlohmann::json defaults = make_scheduler(c.class_name, nlohmann::json::object())->config();
  if (!c.schedule.empty()) {
    const ScheduleEntry* s = find_schedule(c.schedule);
    DIFFUSE_ASSERT(s != nullptr);
    DIFFUSE_CHECK(*s->required == '\0' || defaults.contains(s->required), "sampler '", c.sampler,
                  "' (", c.class_name, ") does not support the '", c.schedule,
                  "' schedule: the class has no '", s->required, "' option");
  }
  nlohmann::json config = base_config.is_object() ? base_config : nlohmann::json::object();
  // As diffusers' from_config across classes: the original class's options that the new class
  // lacks are dropped silently (they are not typos, just another class's settings).
  if (config.contains("_class_name") && config["_class_name"] != c.class_name) {
    for (auto it = config.begin(); it != config.end();) {
      if (it.key().front() != '_' && !defaults.contains(it.key()))
        it = config.erase(it);
      else
        ++it;
    }
  }
  for (const auto& [k, v] : c.overrides.items()) {
    // Reset switches only where the class has them, so swapping stays warning-free.
    if (!defaults.contains(k)) {
      DIFFUSE_CHECK(!v.is_boolean() || !v.get<bool>(), "sampler '", c.sampler, "' (", c.class_name,
                    ") has no '", k, "' option");
      config.erase(k);
      continue;
    }
    config[k] = v;
  }
  return make_scheduler(c.class_name, config);
}

std::vector<std::string> sampler_names() {
  std::vector<std::string> out;
  for (const SamplerEntry& e : sampler_table())
    for (std::string_view n : e.names) out.emplace_back(n);
  return out;
}

std::vector<std::string> schedule_names() {
  std::vector<std::string> out;
  for (const ScheduleEntry& e : schedule_table())
    for (std::string_view n : e.names) out.emplace_back(n);
  return out;
}

}  // namespace diffuse
