// One factory per scheduler class, each defined in its scheduling_*.cpp; registry.cpp maps class
// names to them. Each builds the class from a scheduler_config.json-style object (unknown keys
// warned about, missing keys defaulted) and throws diffuse::Error for invalid values.
// Adding a scheduler: declare its factory here and add one line to kFactories in registry.cpp.
#pragma once

#include <memory>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse::schedulers {

using SchedulerFactory = std::unique_ptr<Scheduler> (*)(const nlohmann::json& config);

// sched-A
std::unique_ptr<Scheduler> make_ddpm_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_ddim_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_ddim_inverse_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_lms_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_euler_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_euler_ancestral_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_heun_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_kdpm2_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_kdpm2_ancestral_discrete_scheduler(const nlohmann::json& config);

// sched-B
std::unique_ptr<Scheduler> make_dpmsolver_multistep_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_dpmsolver_singlestep_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_deis_multistep_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_unipc_multistep_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_sasolver_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_edm_dpmsolver_multistep_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_dpmsolver_sde_scheduler(const nlohmann::json& config);

// sched-C
std::unique_ptr<Scheduler> make_pndm_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_ipndm_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_edm_euler_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_flow_match_euler_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_flow_match_heun_discrete_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_lcm_scheduler(const nlohmann::json& config);
std::unique_ptr<Scheduler> make_tcd_scheduler(const nlohmann::json& config);

}  // namespace diffuse::schedulers
