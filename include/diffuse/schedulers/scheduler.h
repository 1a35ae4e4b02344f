// Scheduler: the interface every diffusers scheduler port implements (diffusers'
// SchedulerMixin + the methods the pipelines call), and the registry that builds any scheduler
// by class name from any scheduler_config.json.
//
// Semantics are diffusers v0.31's: same class names, config keys, defaults, set_timesteps /
// scale_model_input / step / add_noise behaviour and numbers. Samples may be f32 (pipelines)
// or f64 (conformance tests); a scheduler computes in the sample's dtype and reproduces
// diffusers' internal float32 upcasts where diffusers has them. Not thread-safe: a scheduler
// carries per-run state (step index, multistep history).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/generator.h"
#include "diffuse/core/tensor.h"

namespace diffuse {

// Where stochastic schedulers get noise: returns a standard-normal tensor of `shape` and
// `dtype` (diffusers' randn_tensor). Tests inject the reference noise bank through this.
using NoiseSource = std::function<Tensor(const Shape& shape, DType dtype)>;

// A noise source drawing from `generator` (torch.randn semantics). The generator must outlive
// the returned function.
NoiseSource generator_noise(Generator& generator);

// Arguments of set_timesteps (diffusers' keyword arguments). Exactly one of
// num_inference_steps, timesteps or sigmas is normally given.
struct SetTimestepsArgs {
  std::optional<int64_t> num_inference_steps;
  std::optional<std::vector<double>> timesteps;  // custom timesteps
  std::optional<std::vector<double>> sigmas;     // custom sigmas
  std::optional<double> mu;                      // flow matching dynamic shifting
  std::optional<double> strength;                // LCM / TCD img2img
};

// Keyword arguments of step() that some schedulers take. Schedulers ignore what they do not
// use, like the Python methods that do not declare them.
struct StepArgs {
  // DDIM / DDPMParallel-style `eta` and TCD's `eta` (its gamma). Unset = the scheduler's own
  // default, which differs between classes (DDIM 0.0, TCD 0.3): use eta.value_or(default).
  std::optional<double> eta;
  bool use_clipped_model_output = false;  // DDIM
  double s_churn = 0.0;                   // Euler, FlowMatchEuler/Heun
  double s_tmin = 0.0;
  double s_tmax = std::numeric_limits<double>::infinity();
  double s_noise = 1.0;
  int64_t order = 4;  // LMSDiscrete: order of the linear multistep method
  NoiseSource noise;  // required by stochastic steps; Error when missing
};

// Result of step(): prev_sample, and (when the scheduler returns one) pred_original_sample /
// denoised; undefined otherwise.
struct SchedulerOutput {
  Tensor prev_sample;
  Tensor pred_original_sample;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Class name as in diffusers ("EulerDiscreteScheduler").
  virtual std::string class_name() const = 0;
  // The full config (every key with its value, defaults included), in diffusers' key names,
  // so that another scheduler can be built from it (X.from_config(other.config)).
  virtual nlohmann::json config() const = 0;
  // diffusers' `order` (1 for first-order, 2 for Heun/KDPM2 ...).
  virtual int order() const { return 1; }

  virtual void set_timesteps(const SetTimestepsArgs& args) = 0;
  void set_timesteps(int64_t num_inference_steps) {
    SetTimestepsArgs a;
    a.num_inference_steps = num_inference_steps;
    set_timesteps(a);
  }

  // scheduler.timesteps, as doubles (diffusers holds int64 or float32 tensors).
  virtual const std::vector<double>& timesteps() const = 0;
  // scheduler.sigmas (float32 values as doubles), or nullopt for schedulers without sigmas.
  virtual std::optional<std::vector<double>> sigmas() const { return std::nullopt; }
  // init_noise_sigma, or nullopt where diffusers has none (flow matching: start from noise).
  virtual std::optional<double> init_noise_sigma() const { return 1.0; }
  // num_inference_steps after set_timesteps.
  virtual int64_t num_inference_steps() const = 0;

  // Scales the denoiser input for the current timestep (identity for most non-k-diffusion
  // schedulers).
  virtual Tensor scale_model_input(const Tensor& sample, double timestep) {
    (void)timestep;
    return sample;
  }
  // One denoising step from `timestep`.
  virtual SchedulerOutput step(const Tensor& model_output, double timestep, const Tensor& sample,
                               const StepArgs& args = {}) = 0;
  // Forward diffusion of `original` to each of `timesteps` (one per batch item or one for all):
  // diffusers' add_noise (or scale_noise for flow matching).
  virtual Tensor add_noise(const Tensor& original, const Tensor& noise,
                           const std::vector<double>& timesteps) = 0;

  // For image-to-image: diffusers' set_begin_index.
  virtual void set_begin_index(int64_t begin_index) { begin_index_ = begin_index; }

 protected:
  std::optional<int64_t> begin_index_;
};

// Builds the scheduler `class_name` from a scheduler_config.json-style object, like diffusers'
// `Class.from_config(config)`: keys the class does not know are ignored with a warning, missing
// keys take the class defaults. Throws diffuse::Error for an unknown class (listing the known
// ones) or an invalid config.
std::unique_ptr<Scheduler> make_scheduler(const std::string& class_name,
                                          const nlohmann::json& config);
// The class names make_scheduler knows.
std::vector<std::string> scheduler_class_names();

}  // namespace diffuse
