// EDMDPMSolverMultistepScheduler (diffusers v0.31
// schedulers/scheduling_edm_dpmsolver_multistep.py): multistep DPM-Solver++ (arXiv 2211.01095) in
// the EDM formulation (Karras et al. 2022, arXiv 2206.00364): preconditioned inputs/outputs (c_in,
// c_skip, c_out), timesteps c_noise = 0.25 * log(sigma), Karras or exponential sigmas, alpha_t = 1.
//
// Not thread-safe: a scheduler holds the state of one sampling run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// config.json keys and diffusers' __init__ defaults.
struct EDMDPMSolverMultistepSchedulerConfig {
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double sigma_data = 0.5;
  std::string sigma_schedule = "karras";  // or "exponential"
  int64_t num_train_timesteps = 1000;
  std::string prediction_type = "epsilon";  // or "v_prediction"
  double rho = 7.0;
  int64_t solver_order = 2;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string algorithm_type = "dpmsolver++";  // or "sde-dpmsolver++"
  std::string solver_type = "midpoint";        // or "heun"
  bool lower_order_final = true;
  bool euler_at_final = false;
  std::string final_sigmas_type = "zero";  // or "sigma_min"

  static EDMDPMSolverMultistepSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class EDMDPMSolverMultistepScheduler final : public Scheduler {
 public:
  explicit EDMDPMSolverMultistepScheduler(EDMDPMSolverMultistepSchedulerConfig config = {});

  std::string class_name() const override { return "EDMDPMSolverMultistepScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const EDMDPMSolverMultistepSchedulerConfig& typed_config() const { return config_; }

  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  // (sigma_max ** 2 + 1) ** 0.5
  std::optional<double> init_noise_sigma() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // sample * c_in(sigma), c_in = 1 / sqrt(sigma^2 + sigma_data^2); fixes the step index on the
  // first call (like step).
  Tensor scale_model_input(const Tensor& sample, double timestep) override;
  // sde-dpmsolver++ draws noise of the model output's dtype through args.noise.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // original + noise * sigma(t), per batch item.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

 private:
  void init_step_index(double timestep);

  EDMDPMSolverMultistepSchedulerConfig config_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  std::vector<Tensor> model_outputs_;  // denoised outputs, oldest first; undefined = None
  int64_t lower_order_nums_ = 0;
};

}  // namespace diffuse
