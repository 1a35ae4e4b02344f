// Helpers shared by the DPM-Solver family ports (DPMSolverMultistep/Singlestep, DEIS, UniPC,
// SA-Solver, EDM DPM-Solver, DPMSolverSDE), private to src/schedulers:
//
// - the variance-preserving training schedule their __init__ builds (alphas_cumprod, training
//   sigmas, lambda_t), timestep spacing with lambda_min_clipped, the float32 alpha/sigma/lambda of
//   a sigma (_sigma_to_alpha_sigma_t), and their index_for_timestep;
// - `Values`, a tensor's elements as doubles tagged with the dtype torch holds them in, with the
//   few arithmetic operators the update formulas use, so a port reads like the Python:
//
//     float c0 = sigma_t / sigma_s;                    // 0-dim float32 tensors -> float
//     float c1 = alpha_t * (std::exp(-h) - 1.0f);
//     Values x_t = c0 * sample - c1 * model_output;    // torch's promotion and rounding
//
//   A float (0-dim float32 tensor or Python scalar) times a Values keeps the Values' dtype; two
//   Values combine in the promoted dtype (float32 op float64 -> float64), each element rounded
//   to the result dtype, exactly as torch evaluates the expression;
// - torch.linalg.solve for the small float32 systems of UniPC (LU with partial pivoting, an
//   Error for a singular matrix like LAPACK's).
//
// Pure functions: thread-safe.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/tensor.h"

namespace diffuse::schedulers {

// --- constructor checks --------------------------------------------------------------------------

// diffusers' "Only one of `config.use_beta_sigmas`, `config.use_exponential_sigmas`,
// `config.use_karras_sigmas` can be used." as an Error naming `owner`.
void check_sigma_schedule_flags(const char* owner, bool karras, bool exponential, bool beta);
// solver_order in [1, 16] (diffusers accepts any; 1-3 are meaningful, larger ones index past its
// coefficient lists).
void check_solver_order(const char* owner, int64_t solver_order);

// --- Values ------------------------------------------------------------------------------------

struct Values {
  std::vector<double> v;
  DType dtype = DType::f64;
};

// The elements of `t` (floating, any strides), row-major, with t's dtype.
Values load(const Tensor& t);
// A contiguous tensor of `shape` holding `x` in x.dtype.
Tensor store(const Values& x, const Shape& shape);
// torch's .to(dtype).
Values to_dtype(const Values& x, DType dtype);
// torch.zeros_like.
Values zeros_like(const Values& x);

// c * x, x / c, where c is a Python scalar or a 0-dim float32 tensor value (cast to x's dtype
// first when x is narrower than float64, as torch does).
Values operator*(double c, const Values& x);
Values operator/(const Values& x, double c);
// x - c for a 0-dim / scalar c (the result keeps x's dtype).
Values operator-(const Values& x, double c);
// Elementwise with type promotion; shapes (element counts) must match.
Values operator+(const Values& a, const Values& b);
Values operator-(const Values& a, const Values& b);
Values& operator+=(Values& a, const Values& b);

// --- Variance-preserving training schedule -----------------------------------------------------

struct VpSchedule {
  std::vector<float> alphas_cumprod;  // torch.cumprod(1 - betas), float32
  std::vector<float> sigmas;          // ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
  std::vector<double> log_sigmas;     // np.log(sigmas): float32 values as doubles
  std::vector<float> lambda_t;        // log(sqrt(alphas_cumprod)) - log(sqrt(1 - alphas_cumprod))
};

// The schedule of diffusers' __init__: betas (trained_betas or beta_schedule), optionally
// rescaled to zero terminal SNR (then alphas_cumprod[-1] = 2**-24, as diffusers does).
VpSchedule make_vp_schedule(const char* owner, const std::string& beta_schedule,
                            int64_t num_train_timesteps, double beta_start, double beta_end,
                            const std::optional<std::vector<double>>& trained_betas,
                            bool rescale_betas_zero_snr);

// num_train_timesteps - torch.searchsorted(torch.flip(lambda_t), lambda_min_clipped).
int64_t clipped_last_timestep(const std::vector<float>& lambda_t, double lambda_min_clipped);

// The DPM-Solver family's integer timesteps for `n` steps ("linspace", "leading", "trailing"
// over [0, last_timestep)), as doubles. Error naming `owner` for another spacing.
std::vector<double> dpm_spacing_timesteps(const char* owner, const std::string& timestep_spacing,
                                          int64_t num_train_timesteps, int64_t last_timestep,
                                          int64_t n, int64_t steps_offset);

// ((1 - alphas_cumprod[0]) / alphas_cumprod[0]) ** 0.5 in float32 (final_sigmas_type="sigma_min").
float vp_sigma_min(const std::vector<float>& alphas_cumprod);

// _sigma_to_alpha_sigma_t for a variance-preserving schedule, in float32:
// alpha_t = 1 / (sigma**2 + 1) ** 0.5, sigma_t = sigma * alpha_t.
struct AlphaSigma {
  float alpha;
  float sigma;
};
AlphaSigma vp_alpha_sigma(float sigma);
// lambda = log(alpha_t) - log(sigma_t) in float32.
inline float lambda_of(AlphaSigma as) {
  return std::log(as.alpha) - std::log(as.sigma);
}

// convert_model_output of the DPM-Solver family on a variance-preserving schedule at `sigma`:
// the data prediction x0 when `data_prediction` (the "++" algorithms, UniPC predict_x0, SA-Solver
// data_prediction), else the noise prediction epsilon; prediction_type is "epsilon", "sample"
// or "v_prediction". With `thresholding`, x0 is dynamically thresholded (for epsilon outputs via
// x0 and back). `shape` is the sample's shape.
Values dpm_convert_model_output(const Values& model_output, const Values& sample,
                                const Shape& shape, float sigma, bool data_prediction,
                                const std::string& prediction_type, bool thresholding,
                                double dynamic_thresholding_ratio, double sample_max_value,
                                const char* owner);

// One multistep DPM-Solver update (diffusers' dpm_solver_first_order_update /
// multistep_dpm_solver_second_order_update / _third_order_update) of `order` 1-3 from `cur` to
// `t`, with the past points s1, s2 and converted outputs m0 (latest), m1, m2 (unused entries may
// be empty), `noise` for the SDE algorithms. Coefficients in float32, the sample math with
// torch's promotion (see Values). Error for a third-order SDE update, which diffusers lacks.
Values dpm_multistep_update(int order, const std::string& algorithm, bool midpoint, AlphaSigma t,
                            AlphaSigma cur, AlphaSigma s1, AlphaSigma s2, const Values& x,
                            const Values& m0, const Values& m1, const Values& m2,
                            const Values& noise, const char* owner);

// The DPM-Solver family's index_for_timestep: the second match if several, the only match if
// one, and the last index when the timestep is not in the schedule.
std::size_t dpm_index_for_timestep(double timestep, const std::vector<double>& schedule);

// add_noise of the variance-preserving multistep solvers: x = alpha_t * original + sigma_t * noise
// with sigma = sigmas[index] computed in the sample dtype (one index per batch item).
Tensor vp_add_noise(const Tensor& original, const Tensor& noise, const std::vector<float>& sigmas,
                    const std::vector<std::size_t>& indices, const char* owner);

// The step indices add_noise uses for `timesteps` (one per batch item): index_for_timestep when
// no begin index was set, else the current step index, else the begin index.
std::vector<std::size_t> add_noise_indices(const std::vector<double>& timesteps, int64_t batch,
                                           const std::vector<double>& schedule,
                                           std::optional<int64_t> begin_index,
                                           std::optional<int64_t> step_index, const char* owner);

// torch.linalg.solve(A, b) for a small float32 system (n x n row-major A): LU with partial
// pivoting in float32. Throws an Error naming `owner` when A is singular (a zero pivot).
std::vector<float> solve_f32(std::vector<float> a, std::vector<float> b, std::size_t n,
                             const char* owner);

// A config float as diffusers' config.json writes it: non-finite values as the strings "inf",
// "-inf", "nan" (which ConfigReader reads back).
nlohmann::json config_float(double v);
// An optional list of floats (trained_betas), null when absent.
nlohmann::json config_floats(const std::optional<std::vector<double>>& v);

// Takes the first `channels` channels of a [batch, channels, ...] model output
// (variance_type "learned"/"learned_range": model_output[:, :3]).
Tensor first_channels(const Tensor& t, int64_t channels);

}  // namespace diffuse::schedulers
