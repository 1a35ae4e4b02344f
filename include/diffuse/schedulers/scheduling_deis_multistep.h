// DEISMultistepScheduler (diffusers v0.31 schedulers/scheduling_deis_multistep.py): the
// diffusion exponential integrator sampler (arXiv 2204.13902), log-rho multistep variant of
// order 1-3.
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
struct DEISMultistepSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  int64_t solver_order = 2;
  std::string prediction_type = "epsilon";
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string algorithm_type = "deis";  // "dpmsolver"/"dpmsolver++" are mapped to "deis"
  std::string solver_type = "logrho";   // other solvers' types are mapped to "logrho"
  bool lower_order_final = true;
  bool use_karras_sigmas = false;
  // Accepted for compatibility; set_timesteps fails with either (as in diffusers v0.31).
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;

  static DEISMultistepSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class DEISMultistepScheduler final : public Scheduler {
 public:
  explicit DEISMultistepScheduler(DEISMultistepSchedulerConfig config);

  std::string class_name() const override { return "DEISMultistepScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const DEISMultistepSchedulerConfig& typed_config() const { return config_; }

  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

 private:
  DEISMultistepSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<double> log_sigmas_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  std::vector<Tensor> model_outputs_;  // oldest first; undefined = None
  int64_t lower_order_nums_ = 0;
};

}  // namespace diffuse
