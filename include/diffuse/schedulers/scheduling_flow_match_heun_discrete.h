// FlowMatchHeunDiscreteScheduler: diffusers' schedulers/scheduling_flow_match_heun_discrete.py
// (v0.31), Heun's second-order method for rectified-flow models: every interval takes an Euler
// step and a correction with the averaged derivative (two model calls per interval, the last
// interval one).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of FlowMatchHeunDiscreteScheduler; defaults are diffusers' defaults.
struct FlowMatchHeunDiscreteSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double shift = 1.0;

  static FlowMatchHeunDiscreteSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class FlowMatchHeunDiscreteScheduler final : public Scheduler {
 public:
  explicit FlowMatchHeunDiscreteScheduler(FlowMatchHeunDiscreteSchedulerConfig config = {});

  std::string class_name() const override { return "FlowMatchHeunDiscreteScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const FlowMatchHeunDiscreteSchedulerConfig& typed_config() const { return config_; }
  int order() const override { return 2; }

  // Takes only num_inference_steps (>= 1); timesteps() then holds 2n - 1 entries (every
  // timestep after the first twice).
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override { return sigmas_; }
  std::optional<double> init_noise_sigma() const override { return std::nullopt; }
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // Alternates first-order (Euler) and second-order (Heun correction) steps. Uses
  // args.s_churn / s_tmin / s_tmax / s_noise; draws noise from args.noise when the churn is on.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // diffusers' scale_noise: sigma * noise + (1 - sigma) * sample with the sigma of one
  // timestep for the whole batch. Like diffusers, it fixes the step index when unset.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  void init_step_index(double timestep);

  FlowMatchHeunDiscreteSchedulerConfig config_;
  double sigma_min_ = 0;
  double sigma_max_ = 1;
  std::optional<int64_t> num_inference_steps_;
  std::vector<double> timesteps_;
  std::vector<double> sigmas_;
  std::optional<int64_t> step_index_;
  // State between the first- and second-order halves (diffusers' prev_derivative, dt, sample).
  std::optional<float> dt_;
  std::vector<double> prev_derivative_;
  DType prev_derivative_dtype_ = DType::f32;
  std::vector<double> first_sample_;
  DType first_sample_dtype_ = DType::f32;
};

}  // namespace diffuse
