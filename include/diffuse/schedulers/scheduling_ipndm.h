// IPNDMScheduler: diffusers' schedulers/scheduling_ipndm.py (v0.31), the improved pseudo
// numerical method (iPNDM) of crowsonkb's v-diffusion: a 4th-order linear multistep method on
// a sin^2 schedule over t in [0, 1], with lower-order starts.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of IPNDMScheduler; defaults are diffusers' __init__ defaults.
struct IPNDMSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  // diffusers uses these as the per-step betas (one more than the steps) instead of the sin^2
  // schedule, whatever num_inference_steps is.
  std::optional<std::vector<double>> trained_betas;

  static IPNDMSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class IPNDMScheduler final : public Scheduler {
 public:
  explicit IPNDMScheduler(IPNDMSchedulerConfig config = {});

  std::string class_name() const override { return "IPNDMScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const IPNDMSchedulerConfig& typed_config() const { return config_; }

  // Takes only num_inference_steps (>= 1). Timesteps are float32 values in (0, 1].
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  int64_t num_inference_steps() const override { return num_inference_steps_; }

  // Deterministic: StepArgs are ignored.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // diffusers' IPNDMScheduler has no add_noise: always throws diffuse::Error.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  void compute_schedule(int64_t num_inference_steps);

  IPNDMSchedulerConfig config_;
  int64_t num_inference_steps_ = 0;
  std::vector<float> betas_;   // sigma of each step (float32)
  std::vector<float> alphas_;  // alpha of each step (float32)
  std::vector<double> timesteps_;
  std::optional<int64_t> step_index_;
  std::deque<std::vector<double>> ets_;  // last 4 of diffusers' ets list
  DType ets_dtype_ = DType::f32;
  int64_t ets_count_ = 0;
};

}  // namespace diffuse
