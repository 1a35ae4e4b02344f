// FlowMatchEulerDiscreteScheduler: diffusers' schedulers/scheduling_flow_match_euler_discrete.py,
// the Euler sampler of rectified-flow models (SD3, Flux, ...): x_{t-dt} = x_t + (sigma_next -
// sigma) * v. Numerics are v0.31's; the options diffusers added later (invert_sigmas,
// shift_terminal, Karras / exponential / beta sigmas, time_shift_type, stochastic_sampling,
// custom timesteps) follow its current source and are off by default.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of FlowMatchEulerDiscreteScheduler; defaults are diffusers' defaults.
struct FlowMatchEulerDiscreteSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double shift = 1.0;
  bool use_dynamic_shifting = false;  // resolution-dependent shift: set_timesteps needs mu
  // Read by pipelines to compute mu from the image sequence length (calculate_shift).
  std::optional<double> base_shift = 0.5;
  std::optional<double> max_shift = 1.15;
  std::optional<int64_t> base_image_seq_len = 256;
  std::optional<int64_t> max_image_seq_len = 4096;
  bool invert_sigmas = false;            // Mochi: sigmas 1 - s, ending at 1
  std::optional<double> shift_terminal;  // LTX-Video: stretch so the schedule ends here
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::string time_shift_type = "exponential";  // exponential | linear
  bool stochastic_sampling = false;

  static FlowMatchEulerDiscreteSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class FlowMatchEulerDiscreteScheduler final : public Scheduler {
 public:
  // Throws diffuse::Error when more than one of the Karras / exponential / beta options is on,
  // or for an unknown time_shift_type.
  explicit FlowMatchEulerDiscreteScheduler(FlowMatchEulerDiscreteSchedulerConfig config = {});

  std::string class_name() const override { return "FlowMatchEulerDiscreteScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const FlowMatchEulerDiscreteSchedulerConfig& typed_config() const { return config_; }

  // num_inference_steps, and/or custom sigmas / timesteps (same lengths), and mu (required
  // with use_dynamic_shifting). Timesteps are sigma * num_train_timesteps in float32.
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override { return sigmas_; }
  // None: flow matching starts from unscaled noise.
  std::optional<double> init_noise_sigma() const override { return std::nullopt; }
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // Euler step (or, with stochastic_sampling, x0 re-noised to the next sigma with noise from
  // args.noise). The s_churn family of StepArgs is accepted and unused, as in diffusers.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // diffusers' scale_noise: sigma * noise + (1 - sigma) * sample, per batch item.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  FlowMatchEulerDiscreteSchedulerConfig config_;
  double sigma_min_ = 0;  // ends of the training schedule (float32 values)
  double sigma_max_ = 1;
  std::optional<int64_t> num_inference_steps_;
  std::vector<double> timesteps_;
  std::vector<double> sigmas_;
  std::optional<int64_t> step_index_;
};

}  // namespace diffuse
