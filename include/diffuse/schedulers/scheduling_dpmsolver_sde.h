// DPMSolverSDEScheduler (diffusers v0.31 schedulers/scheduling_dpmsolver_sde.py): the stochastic
// DPM-Solver++ (2S) sampler of k-diffusion ("DPM++ SDE" in A1111): each denoising step is a
// first-order ancestral half step to the log-sigma midpoint followed by a second-order step,
// so timesteps and sigmas hold 2n-1 entries.
//
// Noise: diffusers draws it from a torchsde BrownianTree seeded with noise_sampler_seed; diffuse
// has no torchsde, so every noise-sampler call takes a fresh standard-normal tensor from
// StepArgs.noise instead (same distribution per call, but not the Brownian tree's correlated
// path: results differ from diffusers' for the same seed). noise_sampler_seed is kept in the
// config for compatibility and unused.
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
struct DPMSolverSDESchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  std::string prediction_type = "epsilon";  // or "v_prediction" ("sample" is an Error)
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::optional<int64_t> noise_sampler_seed;  // torchsde's seed in diffusers; unused here
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;

  static DPMSolverSDESchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class DPMSolverSDEScheduler final : public Scheduler {
 public:
  explicit DPMSolverSDEScheduler(DPMSolverSDESchedulerConfig config);

  std::string class_name() const override { return "DPMSolverSDEScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const DPMSolverSDESchedulerConfig& typed_config() const { return config_; }
  int order() const override { return 2; }

  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  std::optional<double> init_noise_sigma() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // sample / sqrt(sigma^2 + 1), with the midpoint sigma during the second-order half.
  Tensor scale_model_input(const Tensor& sample, double timestep) override;
  // Uses args.s_noise; draws one noise tensor (sample dtype) from args.noise per stochastic
  // step. Returns pred_original_sample too.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // original + noise * sigma(t), per batch item.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

 private:
  void init_step_index(double timestep);

  DPMSolverSDESchedulerConfig config_;
  std::vector<float> train_sigmas_;
  std::vector<double> log_sigmas_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  Tensor sample_;  // set between the first- and second-order halves
  std::optional<float> mid_point_sigma_;
};

}  // namespace diffuse
