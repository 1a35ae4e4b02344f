// Shared scheduler math: see scheduling_utils.h. Mirrors the helpers diffusers copies between
// its scheduling_*.py files (betas_for_alpha_bar, rescale_zero_terminal_snr, _sigma_to_t,
// _convert_to_karras/_exponential/_beta, _threshold_sample, index_for_timestep) and the numpy /
// torch array functions those use.
#include "src/schedulers/scheduling_utils.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "diffuse/core/error.h"

namespace diffuse::schedulers {

double round_to(DType dtype, double x) {
  switch (dtype) {
    case DType::f64:
      return x;
    case DType::f32:
      return f32(x);
    case DType::bf16:
      return bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(x)));
    case DType::f16:
      return f16_bits_to_float(float_to_f16_bits(static_cast<float>(x)));
    default:
      DIFFUSE_FAIL("scheduler: expected a floating-point dtype, got ", dtype_name(dtype));
  }
}

DType promote(DType a, DType b) {
  if (a == b) return a;
  if (a == DType::f64 || b == DType::f64) return DType::f64;
  return DType::f32;  // f32 with anything narrower, and f16 with bf16
}

std::vector<double> values(const Tensor& t) {
  DIFFUSE_CHECK(t.defined(), "scheduler: expected a tensor, got an undefined one");
  DIFFUSE_CHECK(is_floating(t.dtype()), "scheduler: expected a floating-point tensor, got ",
                t.str());
  return t.to_vector<double>();
}

Tensor from_values(const std::vector<double>& v, const Shape& shape, DType dtype) {
  return Tensor::from_vector(v, shape, dtype);
}

void check_step_inputs(const Tensor& model_output, const Tensor& sample, const char* owner) {
  DIFFUSE_CHECK(model_output.defined() && sample.defined(), owner,
                ".step: model_output and sample must be defined tensors");
  DIFFUSE_CHECK(is_floating(model_output.dtype()) && is_floating(sample.dtype()), owner,
                ".step: expected floating-point tensors, got model_output ", model_output.str(),
                " and sample ", sample.str());
  DIFFUSE_CHECK(model_output.shape() == sample.shape(), owner, ".step: model_output shape ",
                shape_str(model_output.shape()), " differs from sample shape ",
                shape_str(sample.shape()));
}

double np_round(double x) {
  return std::nearbyint(x);
}  // default FE_TONEAREST: half to even

std::vector<double> np_linspace(double start, double stop, int64_t num) {
  DIFFUSE_CHECK(num >= 0, "linspace: expected a non-negative number of samples, got ", num);
  std::vector<double> y(static_cast<std::size_t>(num));
  if (num == 0) return y;
  const double div = static_cast<double>(num - 1);
  const double delta = stop - start;
  const double step = num > 1 ? delta / div : delta;  // numpy: div = 0 -> step = NaN, unused
  for (int64_t i = 0; i < num; ++i) {
    double v;
    if (num > 1 && step == 0) {
      v = static_cast<double>(i) / div * delta;
    } else {
      v = static_cast<double>(i) * step;
    }
    y[static_cast<std::size_t>(i)] = v + start;
  }
  if (num > 1) y.back() = stop;
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  DIFFUSE_CHECK(step != 0 && std::isfinite(step), "arange: step must be finite and non-zero");
  const double len_f = std::ceil((stop - start) / step);
  DIFFUSE_CHECK(std::isfinite(len_f) && len_f < 1e9, "arange: too many elements (",
                (stop - start) / step, ")");
  const int64_t len = len_f > 0 ? static_cast<int64_t>(len_f) : 0;
  std::vector<double> y(static_cast<std::size_t>(len));
  if (len == 0) return y;
  y[0] = start;
  if (len > 1) {
    const double second = start + step;
    const double delta = second - start;
    y[1] = second;
    for (int64_t i = 2; i < len; ++i) y[static_cast<std::size_t>(i)] = start + i * delta;
  }
  return y;
}

std::vector<float> torch_linspace_f32(double start, double end, int64_t steps) {
  DIFFUSE_CHECK(steps >= 0, "linspace: number of steps must be non-negative, got ", steps);
  std::vector<float> y(static_cast<std::size_t>(steps));
  if (steps == 0) return y;
  const float s = static_cast<float>(start);
  const float e = static_cast<float>(end);
  if (steps == 1) {
    y[0] = s;
    return y;
  }
  const float step = (e - s) / static_cast<float>(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i) {
    y[static_cast<std::size_t>(i)] = i < halfway ? s + step * static_cast<float>(i)
                                                 : e - step * static_cast<float>(steps - i - 1);
  }
  return y;
}

std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& xp,
                              const std::vector<double>& fp) {
  DIFFUSE_CHECK(!xp.empty() && xp.size() == fp.size(), "interp: xp and fp must be non-empty ",
                "and of equal length, got ", xp.size(), " and ", fp.size());
  std::vector<double> out(x.size());
  const std::size_t n = xp.size();
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (std::isnan(v)) {
      out[i] = v;
    } else if (v < xp[0]) {
      out[i] = fp[0];
    } else if (v > xp[n - 1]) {
      out[i] = fp[n - 1];
    } else if (v == xp[n - 1]) {
      out[i] = fp[n - 1];
    } else {
      // Largest j with xp[j] <= v.
      const std::size_t j =
          static_cast<std::size_t>(std::upper_bound(xp.begin(), xp.end(), v) - xp.begin()) - 1;
      if (xp[j] == v) {
        out[i] = fp[j];
      } else {
        const double slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
        double r = slope * (v - xp[j]) + fp[j];
        if (std::isnan(r)) {
          r = slope * (v - xp[j + 1]) + fp[j + 1];
          if (std::isnan(r) && fp[j] == fp[j + 1]) r = fp[j];
        }
        out[i] = r;
      }
    }
  }
  return out;
}

std::vector<double> to_f64(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

std::vector<float> to_f32(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

std::vector<float> betas_for_alpha_bar(int64_t num_diffusion_timesteps, double max_beta,
                                       const std::string& alpha_transform_type) {
  DIFFUSE_CHECK(num_diffusion_timesteps > 0 && num_diffusion_timesteps < 100000000,
                "betas_for_alpha_bar: num_train_timesteps must be positive, got ",
                num_diffusion_timesteps);
  double (*alpha_bar_fn)(double) = nullptr;
  if (alpha_transform_type == "cosine") {
    alpha_bar_fn = [](double t) {
      const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2);
      return c * c;
    };
  } else if (alpha_transform_type == "exp") {
    alpha_bar_fn = [](double t) { return std::exp(t * -12.0); };
  } else {
    DIFFUSE_FAIL("betas_for_alpha_bar: unsupported alpha_transform_type '", alpha_transform_type,
                 "' (expected 'cosine' or 'exp')");
  }
  std::vector<float> betas(static_cast<std::size_t>(num_diffusion_timesteps));
  const double n = static_cast<double>(num_diffusion_timesteps);
  for (int64_t i = 0; i < num_diffusion_timesteps; ++i) {
    const double t1 = static_cast<double>(i) / n;
    const double t2 = static_cast<double>(i + 1) / n;
    betas[static_cast<std::size_t>(i)] =
        static_cast<float>(std::min(1 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta));
  }
  return betas;
}

std::vector<float> make_betas(const char* owner, const std::string& beta_schedule,
                              int64_t num_train_timesteps, double beta_start, double beta_end,
                              const std::optional<std::vector<double>>& trained_betas,
                              bool allow_sigmoid) {
  DIFFUSE_CHECK(num_train_timesteps > 0 && num_train_timesteps < 100000000, owner,
                ": num_train_timesteps must be a positive count, got ", num_train_timesteps);
  if (trained_betas) {
    DIFFUSE_CHECK(static_cast<int64_t>(trained_betas->size()) == num_train_timesteps, owner,
                  ": trained_betas has ", trained_betas->size(),
                  " entries, expected num_train_timesteps = ", num_train_timesteps);
    return to_f32(*trained_betas);
  }
  if (beta_schedule == "linear") {
    return torch_linspace_f32(beta_start, beta_end, num_train_timesteps);
  }
  if (beta_schedule == "scaled_linear") {
    // "very specific to the latent diffusion model": linspace of the square roots, squared.
    std::vector<float> b =
        torch_linspace_f32(std::sqrt(beta_start), std::sqrt(beta_end), num_train_timesteps);
    for (float& v : b) v = v * v;
    return b;
  }
  if (beta_schedule == "squaredcos_cap_v2") {
    return betas_for_alpha_bar(num_train_timesteps);  // Glide cosine schedule
  }
  if (beta_schedule == "sigmoid" && allow_sigmoid) {  // GeoDiff sigmoid schedule
    std::vector<float> b = torch_linspace_f32(-6, 6, num_train_timesteps);
    const float scale = static_cast<float>(beta_end - beta_start);
    const float offset = static_cast<float>(beta_start);
    for (float& v : b) {
      const float sig = 1.0f / (1.0f + std::exp(-v));
      v = sig * scale + offset;
    }
    return b;
  }
  DIFFUSE_FAIL(owner, ": beta_schedule '", beta_schedule, "' is not implemented (expected ",
               allow_sigmoid ? "'linear', 'scaled_linear', 'squaredcos_cap_v2' or 'sigmoid'"
                             : "'linear', 'scaled_linear' or 'squaredcos_cap_v2'",
               ", or trained_betas)");
}

std::vector<float> one_minus(const std::vector<float>& betas) {
  std::vector<float> out(betas.size());
  for (std::size_t i = 0; i < betas.size(); ++i) out[i] = 1.0f - betas[i];
  return out;
}

std::vector<float> cumprod_f32(const std::vector<float>& alphas) {
  std::vector<float> out(alphas.size());
  double acc = 1.0;  // at::acc_type<float, /*is_cuda=*/false> is double
  for (std::size_t i = 0; i < alphas.size(); ++i) {
    acc *= static_cast<double>(alphas[i]);
    out[i] = static_cast<float>(acc);
  }
  return out;
}

std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  DIFFUSE_CHECK(betas.size() >= 2, "rescale_zero_terminal_snr: needs at least 2 betas");
  const std::vector<float> alphas_cumprod = cumprod_f32(one_minus(betas));
  std::vector<float> sq(alphas_cumprod.size());
  for (std::size_t i = 0; i < sq.size(); ++i) sq[i] = std::sqrt(alphas_cumprod[i]);
  const float s0 = sq.front();
  const float sT = sq.back();
  // Shift so the last timestep is zero, then scale so the first is back to its old value.
  const float scale = s0 / (s0 - sT);
  for (float& v : sq) {
    v = v - sT;
    v = v * scale;
  }
  std::vector<float> bar(sq.size());
  for (std::size_t i = 0; i < sq.size(); ++i) bar[i] = sq[i] * sq[i];
  std::vector<float> out(bar.size());
  out[0] = 1.0f - bar[0];
  for (std::size_t i = 1; i < bar.size(); ++i) out[i] = 1.0f - bar[i] / bar[i - 1];
  return out;
}

std::vector<float> sigmas_from_alphas_cumprod(const std::vector<float>& alphas_cumprod) {
  std::vector<float> out(alphas_cumprod.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float a = alphas_cumprod[i];
    // torch's pow(x, 0.5) is sqrt.
    out[i] = std::sqrt((1.0f - a) / a);
  }
  return out;
}

std::vector<float> log_f32(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = std::log(v[i]);
  return out;
}

double sigma_to_t(double sigma, const std::vector<double>& log_sigmas) {
  const std::size_t n = log_sigmas.size();
  DIFFUSE_CHECK(n >= 2, "sigma_to_t: needs at least 2 training sigmas");
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // np.cumsum(dists >= 0).argmax(): the last index whose log-sigma is <= log_sigma (0 if none).
  std::size_t count = 0;
  std::size_t low_idx = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (log_sigma - log_sigmas[i] >= 0) {
      ++count;
      low_idx = i;
    }
  }
  if (count == 0) low_idx = 0;
  low_idx = std::min(low_idx, n - 2);
  const std::size_t high_idx = low_idx + 1;
  const double low = log_sigmas[low_idx];
  const double high = log_sigmas[high_idx];
  double w = (low - log_sigma) / (low - high);
  w = std::clamp(w, 0.0, 1.0);
  return (1 - w) * static_cast<double>(low_idx) + w * static_cast<double>(high_idx);
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t num_inference_steps,
                                  double rho) {
  const std::vector<double> ramp = np_linspace(0, 1, num_inference_steps);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1 / rho);
  std::vector<double> out(ramp.size());
  for (std::size_t i = 0; i < ramp.size(); ++i) {
    out[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  }
  return out;
}

std::vector<double> exponential_sigmas(double sigma_min, double sigma_max,
                                       int64_t num_inference_steps) {
  std::vector<double> out =
      np_linspace(std::log(sigma_max), std::log(sigma_min), num_inference_steps);
  for (double& v : out) v = std::exp(v);
  return out;
}

std::vector<double> beta_sigmas(double sigma_min, double sigma_max, int64_t num_inference_steps,
                                double alpha, double beta) {
  const std::vector<double> lin = np_linspace(0, 1, num_inference_steps);
  std::vector<double> out(lin.size());
  for (std::size_t i = 0; i < lin.size(); ++i) {
    const double ppf = beta_ppf(1 - lin[i], alpha, beta);
    out[i] = sigma_min + (ppf * (sigma_max - sigma_min));
  }
  return out;
}

namespace {

// Continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2).
double beta_continued_fraction(double x, double a, double b) {
  constexpr double kTiny = 1e-300;
  constexpr double kEps = 1e-17;
  const double qab = a + b;
  const double qap = a + 1;
  const double qam = a - 1;
  double c = 1;
  double d = 1 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 10000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1) < kEps) break;
  }
  return h;
}

}  // namespace

double incomplete_beta(double x, double a, double b) {
  DIFFUSE_CHECK(a > 0 && b > 0, "incomplete_beta: a and b must be positive, got ", a, ", ", b);
  DIFFUSE_CHECK(x >= 0 && x <= 1, "incomplete_beta: x must be in [0, 1], got ", x);
  if (x == 0) return 0;
  if (x == 1) return 1;
  const double log_front =
      std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  const double front = std::exp(log_front);
  if (x < (a + 1) / (a + b + 2)) return front * beta_continued_fraction(x, a, b) / a;
  return 1 - front * beta_continued_fraction(1 - x, b, a) / b;
}

double beta_ppf(double p, double a, double b) {
  DIFFUSE_CHECK(a > 0 && b > 0 && std::isfinite(a) && std::isfinite(b),
                "beta_ppf: alpha and beta must be positive, got ", a, ", ", b);
  DIFFUSE_CHECK(p >= 0 && p <= 1, "beta_ppf: probability must be in [0, 1], got ", p);
  if (p == 0) return 0;
  if (p == 1) return 1;
  // Bisection to a bracket, then Newton steps on I_x(a, b) - p kept inside the bracket; the
  // density is x^(a-1) (1-x)^(b-1) / B(a, b).
  double lo = 0;
  double hi = 1;
  double x = 0.5;
  const double log_beta = std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b);
  for (int it = 0; it < 200; ++it) {
    const double f = incomplete_beta(x, a, b) - p;
    if (f == 0) return x;
    if (f < 0) {
      lo = x;
    } else {
      hi = x;
    }
    const double log_pdf = (a - 1) * std::log(x) + (b - 1) * std::log1p(-x) - log_beta;
    const double pdf = std::exp(log_pdf);
    double next = x - f / pdf;
    if (!(next > lo && next < hi) || !std::isfinite(next)) next = 0.5 * (lo + hi);
    if (std::fabs(next - x) <= 1e-17 + 4 * std::numeric_limits<double>::epsilon() * x) {
      return next;
    }
    if (hi - lo <= 2 * std::numeric_limits<double>::epsilon() * hi) return next;
    x = next;
  }
  return x;
}

std::size_t index_for_timestep(double timestep, const std::vector<double>& schedule_timesteps,
                               const char* owner) {
  std::size_t matches = 0;
  std::size_t first = 0;
  for (std::size_t i = 0; i < schedule_timesteps.size(); ++i) {
    if (schedule_timesteps[i] == timestep) {
      if (matches == 1) return i;  // the second match
      if (matches == 0) first = i;
      ++matches;
    }
  }
  DIFFUSE_CHECK(matches > 0, owner, ": timestep ", timestep,
                " is not in the schedule set by set_timesteps (", schedule_timesteps.size(),
                " timesteps)");
  return first;
}

namespace {

// torch.lerp's scalar formula.
template <typename T>
T lerp(T a, T b, T w) {
  return std::fabs(w) < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

template <typename T>
Tensor threshold_impl(const Tensor& sample, double ratio, double max_value) {
  const int64_t batch = sample.size(0);
  const int64_t n = sample.numel() / std::max<int64_t>(batch, 1);
  std::vector<T> x = sample.to_vector<T>();
  std::vector<T> abs_row(static_cast<std::size_t>(n));
  const T q = static_cast<T>(ratio);
  for (int64_t bi = 0; bi < batch; ++bi) {
    T* row = x.data() + bi * n;
    for (int64_t i = 0; i < n; ++i) abs_row[static_cast<std::size_t>(i)] = std::fabs(row[i]);
    std::sort(abs_row.begin(), abs_row.end());
    const T rank = q * static_cast<T>(n - 1);
    const int64_t below = static_cast<int64_t>(rank);
    const int64_t above = static_cast<int64_t>(std::ceil(rank));
    const T weight = rank - static_cast<T>(below);
    T s = lerp(abs_row[static_cast<std::size_t>(below)], abs_row[static_cast<std::size_t>(above)],
               weight);
    s = std::min(std::max(s, T(1)), static_cast<T>(max_value));
    for (int64_t i = 0; i < n; ++i) row[i] = std::min(std::max(row[i], -s), s) / s;
  }
  return Tensor::from_vector(x, sample.shape(), DTypeOf<T>::value);
}

}  // namespace

Tensor threshold_sample(const Tensor& sample, double dynamic_thresholding_ratio,
                        double sample_max_value) {
  DIFFUSE_CHECK(sample.defined() && sample.dim() >= 2 && is_floating(sample.dtype()),
                "_threshold_sample: expected a floating [batch, channels, ...] sample, got ",
                sample.defined() ? sample.str() : std::string("undefined"));
  DIFFUSE_CHECK(dynamic_thresholding_ratio >= 0 && dynamic_thresholding_ratio <= 1,
                "_threshold_sample: dynamic_thresholding_ratio must be in [0, 1], got ",
                dynamic_thresholding_ratio);
  if (sample.numel() == 0) return sample.clone();
  if (sample.dtype() == DType::f64) {
    return threshold_impl<double>(sample, dynamic_thresholding_ratio, sample_max_value);
  }
  Tensor out =
      threshold_impl<float>(sample.to(DType::f32), dynamic_thresholding_ratio, sample_max_value);
  return out.to(sample.dtype());
}

Tensor draw_noise(const StepArgs& args, const Shape& shape, DType dtype, const char* owner) {
  DIFFUSE_CHECK(static_cast<bool>(args.noise), owner,
                ".step: this configuration draws random noise; pass StepArgs.noise (e.g. "
                "generator_noise(generator))");
  Tensor n = args.noise(shape, dtype);
  DIFFUSE_CHECK(n.defined() && n.shape() == shape, owner, ".step: the noise source returned ",
                n.defined() ? n.str() : std::string("an undefined tensor"), ", expected shape ",
                shape_str(shape));
  return n;
}

std::vector<double> timesteps_per_item(const std::vector<double>& timesteps, int64_t batch,
                                       const char* owner) {
  DIFFUSE_CHECK(!timesteps.empty(), owner, ".add_noise: expected at least one timestep");
  if (timesteps.size() == 1)
    return std::vector<double>(static_cast<std::size_t>(batch), timesteps[0]);
  DIFFUSE_CHECK(static_cast<int64_t>(timesteps.size()) == batch, owner, ".add_noise: got ",
                timesteps.size(), " timesteps for a batch of ", batch,
                " (expected 1 or one per batch item)");
  return timesteps;
}

}  // namespace diffuse::schedulers
