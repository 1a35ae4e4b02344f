// TCDScheduler: diffusers' schedulers/scheduling_tcd.py (v0.31), trajectory consistency
// distillation sampling (Zheng et al. 2024, arXiv 2402.19159): each step predicts x0 and the
// noise, moves to an intermediate timestep s = floor((1 - eta) * t_prev) and, with eta > 0,
// re-noises to the previous timestep (eta is the paper's gamma).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of TCDScheduler; defaults are diffusers' __init__ defaults.
struct TCDSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::optional<std::vector<double>> trained_betas;
  // Length of the distillation schedule; null = every training timestep.
  std::optional<int64_t> original_inference_steps = 50;
  bool clip_sample = false;  // accepted, unused by step (as in diffusers)
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;                 // accepted, unused (as in diffusers)
  std::string prediction_type = "epsilon";  // epsilon | sample | v_prediction
  bool thresholding = false;                // accepted, unused by step (as in diffusers)
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string timestep_spacing = "leading";  // accepted, unused (as in diffusers)
  double timestep_scaling = 10.0;            // accepted, unused (as in diffusers)
  bool rescale_betas_zero_snr = false;

  static TCDSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class TCDScheduler final : public Scheduler {
 public:
  // Throws diffuse::Error for an unknown beta_schedule or prediction_type.
  explicit TCDScheduler(TCDSchedulerConfig config = {});

  std::string class_name() const override { return "TCDScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const TCDSchedulerConfig& typed_config() const { return config_; }

  // As LCMScheduler: num_inference_steps or custom timesteps, optional strength.
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // args.eta is the stochasticity gamma in [0, 1] (default 0.3, as diffusers' step). Draws
  // noise from args.noise when eta > 0, except on the last step. Returns only prev_sample
  // (diffusers' other output is the noised prediction x_s, not x0).
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  TCDSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  std::optional<int64_t> num_inference_steps_;
  std::vector<double> timesteps_;
  std::optional<int64_t> step_index_;
};

}  // namespace diffuse
