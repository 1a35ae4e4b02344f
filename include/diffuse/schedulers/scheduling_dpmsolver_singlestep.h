// DPMSolverSinglestepScheduler (diffusers v0.31 schedulers/scheduling_dpmsolver_singlestep.py):
// singlestep DPM-Solver / DPM-Solver++ (arXiv 2206.00927, 2211.01095) of order 1-3: each
// order-k update restarts from the sample of its first sub-step. "DPM++ 2S" style sampling.
//
// Not thread-safe: a scheduler holds the state of one sampling run.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// config.json keys and diffusers' __init__ defaults.
struct DPMSolverSinglestepSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  int64_t solver_order = 2;  // 1, 2 or 3
  std::string prediction_type = "epsilon";
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";
  // set_timesteps turns this on (and keeps it on, like diffusers' register_to_config) when the
  // step count is not a multiple of solver_order or final_sigmas_type is "zero".
  bool lower_order_final = false;
  bool use_karras_sigmas = false;
  // Accepted for compatibility; set_timesteps fails with either (a NameError in diffusers v0.31).
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::string final_sigmas_type = "zero";
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  std::optional<std::string> variance_type;

  static DPMSolverSinglestepSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class DPMSolverSinglestepScheduler final : public Scheduler {
 public:
  explicit DPMSolverSinglestepScheduler(DPMSolverSinglestepSchedulerConfig config);

  std::string class_name() const override { return "DPMSolverSinglestepScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const DPMSolverSinglestepSchedulerConfig& typed_config() const { return config_; }

  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

  // diffusers' get_order_list: the solver order used at each of `steps` steps.
  std::vector<int> order_list(int64_t steps) const;

 private:
  DPMSolverSinglestepSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<double> log_sigmas_;
  std::vector<float> lambda_t_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::vector<int> order_list_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  std::vector<Tensor> model_outputs_;  // oldest first; undefined = None
  Tensor sample_;                      // sample at the start of the current order-k update
};

}  // namespace diffuse
