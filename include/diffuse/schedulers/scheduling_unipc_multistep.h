// UniPCMultistepScheduler (diffusers v0.31 schedulers/scheduling_unipc_multistep.py): the
// unified predictor-corrector framework (arXiv 2302.04867), B(h) variants bh1/bh2, with the
// UniC corrector applied after each model evaluation (unless disabled for that step).
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
struct UniPCMultistepSchedulerConfig {
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
  bool predict_x0 = true;
  std::string solver_type = "bh2";  // "bh1" or "bh2"; other solvers' types map to "bh2"
  bool lower_order_final = true;
  std::vector<int64_t> disable_corrector;  // step indices whose corrector is skipped
  // solver_p (an optional predictor scheduler object) cannot come from a config file: only null
  // is accepted.
  bool use_karras_sigmas = false;
  // Accepted for compatibility; set_timesteps fails with either (as in diffusers v0.31).
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;
  std::string timestep_spacing = "linspace";
  int64_t steps_offset = 0;
  std::string final_sigmas_type = "zero";  // or "sigma_min"
  bool rescale_betas_zero_snr = false;

  static UniPCMultistepSchedulerConfig from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
};

class UniPCMultistepScheduler final : public Scheduler {
 public:
  explicit UniPCMultistepScheduler(UniPCMultistepSchedulerConfig config);

  std::string class_name() const override { return "UniPCMultistepScheduler"; }
  nlohmann::json config() const override { return config_.to_json(); }
  const UniPCMultistepSchedulerConfig& typed_config() const { return config_; }

  void set_timesteps(const SetTimestepsArgs& args) override;
  using Scheduler::set_timesteps;
  const std::vector<double>& timesteps() const override { return timesteps_; }
  std::optional<std::vector<double>> sigmas() const override;
  int64_t num_inference_steps() const override { return num_inference_steps_.value_or(0); }

  // Throws diffuse::Error where diffusers' torch.linalg.solve fails (singular system, e.g.
  // solver_order 3 without lower_order_final onto a zero final sigma).
  SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                       const StepArgs& args = {}) override;
  Tensor add_noise(const Tensor& original, const Tensor& noise,
                   const std::vector<double>& timesteps) override;
  void set_begin_index(int64_t begin_index) override { begin_index_ = begin_index; }

 private:
  // UniP (predictor) and UniC (corrector) updates with the B(h) coefficients.
  Tensor uni_p_update(const Tensor& sample, int order) const;
  Tensor uni_c_update(const Tensor& this_model_output, const Tensor& this_sample, int order) const;

  UniPCMultistepSchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<double> log_sigmas_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::optional<int64_t> num_inference_steps_;
  std::optional<int64_t> step_index_;
  std::vector<Tensor> model_outputs_;  // converted outputs, oldest first; undefined = None
  int64_t lower_order_nums_ = 0;
  Tensor last_sample_;  // the sample the last predictor started from
  int this_order_ = 1;
};

}  // namespace diffuse
