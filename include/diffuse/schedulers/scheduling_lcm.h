// LCMScheduler: diffusers' schedulers/scheduling_lcm.py (v0.31), multistep sampling of latent
// consistency models (Luo et al. 2023, arXiv 2310.04378): each step predicts x0 with the
// consistency boundary conditions (c_skip, c_out) and re-noises it to the next timestep.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of LCMScheduler; defaults are diffusers' __init__ defaults.
struct LCMSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::optional<std::vector<double>> trained_betas;
  // Length of the distillation schedule the inference timesteps are picked from.
  int64_t original_inference_steps = 50;
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;                 // accepted, unused (as in diffusers)
  std::string prediction_type = "epsilon";  // epsilon | sample | v_prediction
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string timestep_spacing = "leading";  // accepted, unused (as in diffusers)
  double timestep_scaling = 10.0;
  bool rescale_betas_zero_snr = false;

  static LCMSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class LCMScheduler final : public Scheduler {
 public:
  // Throws diffuse::Error for an unknown beta_schedule or prediction_type.
  explicit LCMScheduler(LCMSchedulerConfig config = {});

  std::string class_name() const override { return "LCMScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const LCMSchedulerConfig& typed_config() const { return config_; }

  // Exactly one of num_inference_steps or custom timesteps (descending integers below
  // num_train_timesteps), and optionally strength in (0, 1] for image-to-image (picks the
  // timesteps from the first strength * original_inference_steps of the distillation schedule).
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // Returns prev_sample and the denoised sample (diffusers' `denoised`) as
  // pred_original_sample. Draws noise from args.noise on every step but the last.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  LCMSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  std::optional<int64_t> num_inference_steps_;
  std::vector<double> timesteps_;
  std::optional<int64_t> step_index_;
};

}  // namespace diffuse
