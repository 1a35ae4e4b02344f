// SASolverScheduler (diffusers v0.31 schedulers/scheduling_sasolver.py): SA-Solver, the
// stochastic Adams predictor-corrector solver (arXiv 2309.05019). Every step draws one noise
// tensor; the stochasticity tau is 1 for timesteps in [200, 800] and 0 elsewhere (diffusers'
// default tau_func; a custom Python tau_func cannot come from a config file).
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
struct SASolverSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  int64_t predictor_order = 2;  // 1..4
  int64_t corrector_order = 2;  // 1..4
  std::string prediction_type = "epsilon";
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string algorithm_type = "data_prediction";  // or "noise_prediction"
  bool lower_order_final = true;
  bool use_karras_sigmas = false;
  // Accepted for compatibility; set_timesteps fails with either (as in diffusers v0.31).
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  std::optional<std::string> variance_type;
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;

  static SASolverSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class SASolverScheduler final : public Scheduler {
 public:
  explicit SASolverScheduler(SASolverSchedulerConfig config);

  std::string class_name() const override { return "SASolverScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const SASolverSchedulerConfig& typed_config() const { return config_; }

  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // Draws one noise tensor of the model output's dtype through args.noise (Error when missing).
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  // DDPM-style: sqrt(alphas_cumprod[t]) * original + sqrt(1 - alphas_cumprod[t]) * noise.
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

 private:
  // The SA-Predictor (stochastic Adams-Bashforth) and SA-Corrector (Adams-Moulton) updates.
  Tensor predictor_update(const Tensor& sample, const Tensor& noise, int order, int tau) const;
  Tensor corrector_update(const Tensor& this_model_output, int order, int tau) const;

  SASolverSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<double> log_sigmas_;
  std::vector<float> lambda_t_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  std::vector<Tensor> model_outputs_;  // converted outputs, oldest first; undefined = None
  std::vector<std::optional<double>> timestep_list_;
  int64_t lower_order_nums_ = 0;
  Tensor last_sample_;
  Tensor last_noise_;
  int this_predictor_order_ = 1;
  int this_corrector_order_ = 1;
};

}  // namespace diffuse
