// DPMSolverMultistepScheduler (diffusers v0.31 schedulers/scheduling_dpmsolver_multistep.py):
// multistep DPM-Solver (arXiv 2206.00927) and DPM-Solver++ (arXiv 2211.01095), first to third
// order, ODE ("dpmsolver++", "dpmsolver") and SDE ("sde-dpmsolver++", "sde-dpmsolver")
// variants, midpoint/heun second-order solvers. "DPM++ 2M (Karras)" and "DPM++ 2M SDE" in A1111.
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
struct DPMSolverMultistepSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  int64_t solver_order = 2;
  std::string prediction_type = "epsilon";  // "epsilon", "sample", "v_prediction"
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string algorithm_type = "dpmsolver++";  // + "dpmsolver", "sde-dpmsolver(++)"
  std::string solver_type = "midpoint";        // or "heun"
  bool lower_order_final = true;
  bool euler_at_final = false;
  bool use_karras_sigmas = false;
  // Accepted for compatibility; diffusers v0.31 fails in set_timesteps with either of them set
  // (it passes num_inference_steps=None on), so diffuse raises an Error there too.
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  bool use_lu_lambdas = false;
  std::string final_sigmas_type = "zero";  // or "sigma_min"
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  std::optional<std::string> variance_type;  // "learned" / "learned_range": output has variance
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;

  // Reads a scheduler_config.json object (unknown keys are warned about).
  static DPMSolverMultistepSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class DPMSolverMultistepScheduler final : public Scheduler {
 public:
  // Throws diffuse::Error for values diffusers rejects (unknown algorithm/solver/beta schedule,
  // final_sigmas_type "zero" with the non-++ algorithms, several sigma schedules at once).
  explicit DPMSolverMultistepScheduler(DPMSolverMultistepSchedulerConfig config);

  std::string class_name() const override { return "DPMSolverMultistepScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const DPMSolverMultistepSchedulerConfig& typed_config() const { return config_; }

  // num_inference_steps, or custom integer `timesteps` (not with Karras / Lu sigmas).
  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // SDE variants draw float32 noise through args.noise (Error when missing).
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

 private:
  DPMSolverMultistepSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<double> log_sigmas_;
  std::vector<float> lambda_t_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  std::vector<Tensor> model_outputs_;  // converted outputs, oldest first; undefined = None
  int64_t lower_order_nums_ = 0;
};

}  // namespace diffuse
