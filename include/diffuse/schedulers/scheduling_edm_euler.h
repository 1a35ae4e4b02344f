// EDMEulerScheduler: diffusers' schedulers/scheduling_edm_euler.py (v0.31), the Euler sampler
// in the EDM formulation of Karras et al. 2022 (arXiv 2206.00364): preconditioned inputs and
// outputs (c_in, c_skip, c_out, c_noise), Karras or exponential sigmas, optional churn.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of EDMEulerScheduler; defaults are diffusers' __init__ defaults.
struct EDMEulerSchedulerConfig {
  double sigma_min = 0.002;               // EDM paper value
  double sigma_max = 80.0;                // EDM paper value
  double sigma_data = 0.5;                // standard deviation of the data distribution
  std::string sigma_schedule = "karras";  // karras | exponential (CosXL)
  int64_t num_train_timesteps = 1000;
  std::string prediction_type = "epsilon";  // epsilon | v_prediction
  double rho = 7.0;
  // Added to diffusers after v0.31 (default = v0.31's behaviour): the sigma appended after the
  // schedule, "zero" or "sigma_min" (the last schedule sigma).
  std::string final_sigmas_type = "zero";

  static EDMEulerSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class EDMEulerScheduler final : public Scheduler {
 public:
  // Throws diffuse::Error for an unknown sigma_schedule, prediction_type or final_sigmas_type.
  explicit EDMEulerScheduler(EDMEulerSchedulerConfig config = {});

  std::string class_name() const override { return "EDMEulerScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const EDMEulerSchedulerConfig& typed_config() const { return config_; }

  // Takes only num_inference_steps (>= 1). Timesteps are c_noise = 0.25 * log(sigma).
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override { return sigmas_; }
  // (sigma_max ** 2 + 1) ** 0.5
  std::optional<double> init_noise_sigma() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // sample * c_in(sigma) = sample / sqrt(sigma^2 + sigma_data^2). Fixes the step index on the
  // first call (like step).
  Tensor scale_model_input(const Tensor& sample, double timestep) override;
  // Uses args.s_churn / s_tmin / s_tmax / s_noise; draws noise from args.noise when the churn
  // is active. Returns the denoised sample as pred_original_sample.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // original + noise * sigma(t), per batch item.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  std::vector<float> compute_sigmas(int64_t n) const;
  void set_schedule(const std::vector<float>& sigmas);
  void init_step_index(double timestep);

  EDMEulerSchedulerConfig config_;
  std::optional<int64_t> num_inference_steps_;
  std::vector<double> timesteps_;
  std::vector<double> sigmas_;  // float32 values, one more than timesteps
  std::optional<int64_t> step_index_;
};

}  // namespace diffuse
