// Shared scheduler math (private to src/schedulers): beta schedules, timestep spacing with
// numpy's exact arithmetic, Karras / exponential / beta sigma schedules, sigma <-> t
// interpolation, np.interp, dynamic thresholding, and float32 emulation for sample math.
//
// How a scheduler port uses it (diffusers' `torch.float32` tensors are std::vector<float> here,
// numpy float64 arrays are std::vector<double>):
//
//   std::vector<float> betas = make_betas("EulerDiscreteScheduler", c.beta_schedule,
//                                         c.num_train_timesteps, c.beta_start, c.beta_end,
//                                         c.trained_betas);
//   if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
//   std::vector<float> alphas_cumprod = cumprod_f32(one_minus(betas));
//   std::vector<double> t = np_linspace(0, c.num_train_timesteps - 1, n);   // np.linspace
//   std::vector<double> s = np_interp(t, np_arange(0, len, 1), sigmas);      // np.interp
//
// Sample math: diffusers often runs `sample = sample.to(torch.float32)` inside step() and mixes
// float32 and float64 tensors, with torch's type promotion (the result of an op between two
// tensors of different float dtypes is the wider one; 0-dim tensors and Python scalars do not
// widen a dimensioned tensor). Ports emulate this exactly by computing each elementwise op in
// double and rounding the result to the op's dtype with round_to(dtype, x) (for + - * / and
// sqrt, rounding the exact double result to float32 equals float32 arithmetic). Read samples
// with values(tensor) and build results with from_values(values, shape, dtype).
//
// Everything here is a pure function: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/schedulers/scheduler.h"

namespace diffuse::schedulers {

// --- Rounding to tensor dtypes ---------------------------------------------------------------

// `x` rounded to float32 (the value a float32 tensor would hold).
inline double f32(double x) {
  return static_cast<double>(static_cast<float>(x));
}
// `x` as stored in a tensor of `dtype` (f64: unchanged; f32: f32(x); f16/bf16: rounded to
// nearest even). Throws for non-floating dtypes.
double round_to(DType dtype, double x);
// torch.promote_types for two floating dtypes (f64 > f32 > f16/bf16; f16 with bf16 -> f32).
DType promote(DType a, DType b);

// All elements of `t` (any floating dtype, any strides) as doubles, row-major.
std::vector<double> values(const Tensor& t);
// A new contiguous tensor of `shape` and `dtype` holding `v` (rounded to dtype).
Tensor from_values(const std::vector<double>& v, const Shape& shape, DType dtype);
// Checks that `sample` and `model_output` are defined floating tensors of the same shape;
// `owner` names the scheduler in the message.
void check_step_inputs(const Tensor& model_output, const Tensor& sample, const char* owner);

// --- numpy / torch array arithmetic ---------------------------------------------------------

// np.round / torch.round: round half to even.
double np_round(double x);
// np.linspace(start, stop, num) in float64 (endpoint=True): start + i * step, last = stop.
std::vector<double> np_linspace(double start, double stop, int64_t num);
// np.arange(start, stop, step) for floats: length ceil((stop - start) / step), element i =
// start + i * ((start + step) - start), as numpy's fill does.
std::vector<double> np_arange(double start, double stop, double step);
// torch.linspace(start, end, steps, dtype=torch.float32) on CPU: float32 arithmetic, the first
// half counted from `start`, the second half from `end`.
std::vector<float> torch_linspace_f32(double start, double end, int64_t steps);
// np.interp(x, xp, fp) (xp increasing); left/right values are fp's ends.
std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& xp,
                              const std::vector<double>& fp);
// Converts float32 values to doubles (numpy's float32 -> float64 upcast).
std::vector<double> to_f64(const std::vector<float>& v);
// Rounds doubles to float32 (torch.from_numpy(x).to(torch.float32) / .astype(np.float32)).
std::vector<float> to_f32(const std::vector<double>& v);
// Reversed copy (numpy's [::-1]).
template <typename T>
std::vector<T> reversed(std::vector<T> v) {
  return std::vector<T>(v.rbegin(), v.rend());
}

// --- Beta schedules --------------------------------------------------------------------------

// diffusers' betas_for_alpha_bar(num_diffusion_timesteps, max_beta, alpha_transform_type):
// Python-float math, returned as the float32 tensor diffusers makes of it. alpha_transform_type
// is "cosine" or "exp" (Error otherwise).
std::vector<float> betas_for_alpha_bar(int64_t num_diffusion_timesteps, double max_beta = 0.999,
                                       const std::string& alpha_transform_type = "cosine");

// The float32 betas of a scheduler's __init__: trained_betas when given (must have
// num_train_timesteps entries), else beta_schedule "linear", "scaled_linear",
// "squaredcos_cap_v2", or (only when allow_sigmoid, DDPM) "sigmoid". Any other schedule is an
// Error naming `owner`, like diffusers' NotImplementedError.
std::vector<float> make_betas(const char* owner, const std::string& beta_schedule,
                              int64_t num_train_timesteps, double beta_start, double beta_end,
                              const std::optional<std::vector<double>>& trained_betas,
                              bool allow_sigmoid = false);

// diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1) on float32 betas.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas);
// 1 - betas in float32.
std::vector<float> one_minus(const std::vector<float>& betas);
// torch.cumprod of a float32 tensor on CPU (double accumulator, each output rounded to float32).
std::vector<float> cumprod_f32(const std::vector<float>& alphas);

// --- Sigma schedules (k-diffusion family) -----------------------------------------------------

// ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32.
std::vector<float> sigmas_from_alphas_cumprod(const std::vector<float>& alphas_cumprod);
// log of each value (np.log on a float32 array: float32 results).
std::vector<float> log_f32(const std::vector<float>& v);

// diffusers' _sigma_to_t(sigma, log_sigmas) for one float64 sigma: piecewise-linear
// interpolation in log-sigma space; `log_sigmas` increasing (float32 values as doubles).
double sigma_to_t(double sigma, const std::vector<double>& log_sigmas);
// _convert_to_karras: (max^(1/rho) + ramp * (min^(1/rho) - max^(1/rho)))^rho, rho = 7.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t num_inference_steps,
                                  double rho = 7.0);
// _convert_to_exponential: exp(linspace(log(sigma_max), log(sigma_min), n)).
std::vector<double> exponential_sigmas(double sigma_min, double sigma_max,
                                       int64_t num_inference_steps);
// _convert_to_beta: sigma_min + ppf(1 - linspace(0, 1, n)[i]; alpha, beta) * (max - min).
std::vector<double> beta_sigmas(double sigma_min, double sigma_max, int64_t num_inference_steps,
                                double alpha = 0.6, double beta = 0.6);
// scipy.stats.beta.ppf(p, a, b): inverse of the regularized incomplete beta function, accurate
// to a few ulps. Requires 0 <= p <= 1, a > 0, b > 0 (Error otherwise).
double beta_ppf(double p, double a, double b);
// Regularized incomplete beta I_x(a, b) (continued fraction), 0 <= x <= 1.
double incomplete_beta(double x, double a, double b);

// --- Step helpers ------------------------------------------------------------------------------

// diffusers' index_for_timestep: the position of `timestep` in `schedule_timesteps` (the
// second match when there are several, so img2img starting mid-schedule does not skip a
// sigma). Throws an Error naming `owner` when the timestep is not in the schedule.
std::size_t index_for_timestep(double timestep, const std::vector<double>& schedule_timesteps,
                               const char* owner);

// diffusers' _threshold_sample (dynamic thresholding, Imagen arXiv 2205.11487): per batch item,
// s = clamp(quantile(|x|, ratio), 1, sample_max_value) (torch.quantile, linear interpolation,
// computed in the sample's dtype, f16/bf16 upcast to f32), x = clamp(x, -s, s) / s.
Tensor threshold_sample(const Tensor& sample, double dynamic_thresholding_ratio,
                        double sample_max_value);

// Draws noise through args.noise (diffusers' randn_tensor call); Error naming `owner` when the
// caller gave no noise source.
Tensor draw_noise(const StepArgs& args, const Shape& shape, DType dtype, const char* owner);

// add_noise's timesteps for a batch of `batch` items: one value for all, or one per item.
std::vector<double> timesteps_per_item(const std::vector<double>& timesteps, int64_t batch,
                                       const char* owner);

}  // namespace diffuse::schedulers
