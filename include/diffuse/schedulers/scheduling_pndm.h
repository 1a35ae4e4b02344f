// PNDMScheduler: diffusers' schedulers/scheduling_pndm.py (v0.31), pseudo numerical methods
// for diffusion models (Liu et al. 2022, arXiv 2202.09778): a Runge-Kutta warm-up (PRK, 12
// model calls) then a 4th-order linear multistep method (PLMS); with skip_prk_steps, PLMS from
// the first step as in crowsonkb's PLMS sampler (Stable Diffusion 1.x's default scheduler).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

// scheduler_config.json of PNDMScheduler; defaults are diffusers' __init__ defaults.
struct PNDMSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::optional<std::vector<double>> trained_betas;
  bool skip_prk_steps = false;
  bool set_alpha_to_one = false;
  std::string prediction_type = "epsilon";   // epsilon | v_prediction
  std::string timestep_spacing = "leading";  // linspace | leading | trailing
  int64_t steps_offset = 0;

  // Reads the keys above (unknown keys: one warning); throws diffuse::Error on wrong types.
  static PNDMSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class PNDMScheduler final : public Scheduler {
 public:
  // Throws diffuse::Error for an unknown beta_schedule, prediction_type or timestep_spacing.
  explicit PNDMScheduler(PNDMSchedulerConfig config = {});

  std::string class_name() const override { return "PNDMScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const PNDMSchedulerConfig& typed_config() const { return config_; }

  // num_inference_steps >= 1 (>= 4 unless skip_prk_steps: the PRK warm-up needs 4 timesteps).
  // Takes no custom timesteps / sigmas / mu / strength (Error), like diffusers.
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // One PRK or PLMS step, depending on how many steps ran since set_timesteps. `timestep`
  // must be the current entry of timesteps(). Deterministic: StepArgs are ignored.
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;

 private:
  SchedulerOutput step_prk(const Tensor& model_output, int64_t timestep, const Tensor& sample);
  SchedulerOutput step_plms(const Tensor& model_output, int64_t timestep, const Tensor& sample);
  // Throws when the running state holds samples of another size than `size`.
  void check_state_size(std::size_t size) const;
  // Formula (9) of the PNDM paper: x_{t-delta} from x_t and the (combined) noise prediction.
  std::vector<double> get_prev_sample(const std::vector<double>& sample, DType sample_dtype,
                                      int64_t timestep, int64_t prev_timestep,
                                      const std::vector<double>& model_output, DType output_dtype,
                                      DType* result_dtype) const;

  PNDMSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;

  std::optional<int64_t> num_inference_steps_;
  std::vector<int64_t> prk_timesteps_;
  std::vector<int64_t> plms_timesteps_;
  std::vector<double> timesteps_;

  // Running values of the multistep method (diffusers' cur_model_output, counter, cur_sample,
  // ets). Only the last 4 ets are used, ets_count_ counts all of them.
  int64_t counter_ = 0;
  std::vector<double> cur_model_output_;  // empty = Python's integer 0
  DType cur_model_output_dtype_ = DType::f32;
  std::optional<std::vector<double>> cur_sample_;
  DType cur_sample_dtype_ = DType::f32;
  std::deque<std::vector<double>> ets_;
  DType ets_dtype_ = DType::f32;
  int64_t ets_count_ = 0;
};

}  // namespace diffuse
