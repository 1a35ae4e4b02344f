// make_scheduler / scheduler_class_names: the class-name -> factory table (diffusers'
// `getattr(diffusers, class_name).from_config(config)`).
#include <string_view>
#include <utility>

#include "diffuse/core/error.h"
#include "diffuse/schedulers/scheduler.h"
#include "src/schedulers/factories.h"

namespace diffuse {
namespace {

using schedulers::SchedulerFactory;

struct Entry {
  std::string_view name;
  SchedulerFactory factory;
};

// Sorted by nothing in particular; names are diffusers' class names.
constexpr Entry kFactories[] = {
    {"DDPMScheduler", schedulers::make_ddpm_scheduler},
    {"DDIMScheduler", schedulers::make_ddim_scheduler},
    {"DDIMInverseScheduler", schedulers::make_ddim_inverse_scheduler},
    {"LMSDiscreteScheduler", schedulers::make_lms_discrete_scheduler},
    {"EulerDiscreteScheduler", schedulers::make_euler_discrete_scheduler},
    {"EulerAncestralDiscreteScheduler", schedulers::make_euler_ancestral_discrete_scheduler},
    {"HeunDiscreteScheduler", schedulers::make_heun_discrete_scheduler},
    {"KDPM2DiscreteScheduler", schedulers::make_kdpm2_discrete_scheduler},
    {"KDPM2AncestralDiscreteScheduler", schedulers::make_kdpm2_ancestral_discrete_scheduler},
    // sched-B
    {"DPMSolverMultistepScheduler", schedulers::make_dpmsolver_multistep_scheduler},
    {"DPMSolverSinglestepScheduler", schedulers::make_dpmsolver_singlestep_scheduler},
    {"DEISMultistepScheduler", schedulers::make_deis_multistep_scheduler},
    {"UniPCMultistepScheduler", schedulers::make_unipc_multistep_scheduler},
    {"SASolverScheduler", schedulers::make_sasolver_scheduler},
    {"EDMDPMSolverMultistepScheduler", schedulers::make_edm_dpmsolver_multistep_scheduler},
    {"DPMSolverSDEScheduler", schedulers::make_dpmsolver_sde_scheduler},
    // sched-C
    {"PNDMScheduler", schedulers::make_pndm_scheduler},
    {"IPNDMScheduler", schedulers::make_ipndm_scheduler},
    {"EDMEulerScheduler", schedulers::make_edm_euler_scheduler},
    {"FlowMatchEulerDiscreteScheduler", schedulers::make_flow_match_euler_discrete_scheduler},
    {"FlowMatchHeunDiscreteScheduler", schedulers::make_flow_match_heun_discrete_scheduler},
    {"LCMScheduler", schedulers::make_lcm_scheduler},
    {"TCDScheduler", schedulers::make_tcd_scheduler},
};

}  // namespace

std::unique_ptr<Scheduler> make_scheduler(const std::string& class_name,
                                          const nlohmann::json& config) {
  for (const Entry& e : kFactories) {
    if (e.name == class_name) {
      DIFFUSE_CHECK(config.is_object(), "make_scheduler(", class_name,
                    "): expected a JSON object as scheduler config, got ", config.type_name());
      return e.factory(config);
    }
  }
  std::string known;
  for (const Entry& e : kFactories) {
    if (!known.empty()) known += ", ";
    known += e.name;
  }
  DIFFUSE_FAIL("make_scheduler: unknown scheduler class '", class_name, "' (known: ", known, ")");
}

std::vector<std::string> scheduler_class_names() {
  std::vector<std::string> out;
  for (const Entry& e : kFactories) out.emplace_back(e.name);
  return out;
}

}  // namespace diffuse
