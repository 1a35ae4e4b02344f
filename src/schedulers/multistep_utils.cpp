// Helpers shared by the DPM-Solver family ports: see multistep_utils.h.
#include "src/schedulers/multistep_utils.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {

void check_sigma_schedule_flags(const char* owner, bool karras, bool exponential, bool beta) {
  DIFFUSE_CHECK(
      static_cast<int>(beta) + static_cast<int>(exponential) + static_cast<int>(karras) <= 1, owner,
      ": only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be "
      "used");
}

void check_solver_order(const char* owner, int64_t solver_order) {
  DIFFUSE_CHECK(solver_order >= 1 && solver_order <= 16, owner,
                ": solver_order must be a small positive integer (1, 2 or 3), got ", solver_order);
}

// --- Values ------------------------------------------------------------------------------------

Values load(const Tensor& t) {
  return Values{values(t), t.dtype()};
}

Tensor store(const Values& x, const Shape& shape) {
  return from_values(x.v, shape, x.dtype);
}

Values to_dtype(const Values& x, DType dtype) {
  Values out{x.v, dtype};
  if (dtype != x.dtype) {
    for (double& e : out.v) e = round_to(dtype, e);
  }
  return out;
}

Values zeros_like(const Values& x) {
  return Values{std::vector<double>(x.v.size(), 0.0), x.dtype};
}

namespace {

// The scalar as the op sees it: torch casts a Python scalar / 0-dim tensor to the computation
// type of a narrower-than-double tensor (float32 for f32/f16/bf16).
double scalar_for(DType dtype, double c) {
  return dtype == DType::f64 ? c : f32(c);
}

void check_same_size(const Values& a, const Values& b) {
  DIFFUSE_ASSERT(a.v.size() == b.v.size());
}

}  // namespace

Values operator*(double c, const Values& x) {
  const double s = scalar_for(x.dtype, c);
  Values out{std::vector<double>(x.v.size()), x.dtype};
  for (std::size_t i = 0; i < x.v.size(); ++i) out.v[i] = round_to(x.dtype, s * x.v[i]);
  return out;
}

Values operator/(const Values& x, double c) {
  const double s = scalar_for(x.dtype, c);
  Values out{std::vector<double>(x.v.size()), x.dtype};
  for (std::size_t i = 0; i < x.v.size(); ++i) out.v[i] = round_to(x.dtype, x.v[i] / s);
  return out;
}

Values operator-(const Values& x, double c) {
  const double s = scalar_for(x.dtype, c);
  Values out{std::vector<double>(x.v.size()), x.dtype};
  for (std::size_t i = 0; i < x.v.size(); ++i) out.v[i] = round_to(x.dtype, x.v[i] - s);
  return out;
}

Values operator+(const Values& a, const Values& b) {
  check_same_size(a, b);
  const DType d = promote(a.dtype, b.dtype);
  Values out{std::vector<double>(a.v.size()), d};
  for (std::size_t i = 0; i < a.v.size(); ++i) out.v[i] = round_to(d, a.v[i] + b.v[i]);
  return out;
}

Values operator-(const Values& a, const Values& b) {
  check_same_size(a, b);
  const DType d = promote(a.dtype, b.dtype);
  Values out{std::vector<double>(a.v.size()), d};
  for (std::size_t i = 0; i < a.v.size(); ++i) out.v[i] = round_to(d, a.v[i] - b.v[i]);
  return out;
}

Values& operator+=(Values& a, const Values& b) {
  // In-place: the result keeps a's dtype (torch casts the promoted result back).
  check_same_size(a, b);
  const DType d = promote(a.dtype, b.dtype);
  for (std::size_t i = 0; i < a.v.size(); ++i)
    a.v[i] = round_to(a.dtype, round_to(d, a.v[i] + b.v[i]));
  return a;
}

// --- Variance-preserving training schedule -----------------------------------------------------

VpSchedule make_vp_schedule(const char* owner, const std::string& beta_schedule,
                            int64_t num_train_timesteps, double beta_start, double beta_end,
                            const std::optional<std::vector<double>>& trained_betas,
                            bool rescale_betas_zero_snr) {
  std::vector<float> betas =
      make_betas(owner, beta_schedule, num_train_timesteps, beta_start, beta_end, trained_betas);
  DIFFUSE_CHECK(betas.size() >= 2, owner, ": num_train_timesteps must be at least 2, got ",
                betas.size());
  if (rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  VpSchedule s;
  s.alphas_cumprod = cumprod_f32(one_minus(betas));
  // Close to 0 without being 0 so the first sigma is not inf (fp16's smallest subnormal).
  if (rescale_betas_zero_snr) s.alphas_cumprod.back() = 0x1p-24f;
  s.sigmas = sigmas_from_alphas_cumprod(s.alphas_cumprod);
  s.log_sigmas = to_f64(log_f32(s.sigmas));
  s.lambda_t.resize(s.alphas_cumprod.size());
  for (std::size_t i = 0; i < s.lambda_t.size(); ++i) {
    const float a = s.alphas_cumprod[i];
    s.lambda_t[i] = std::log(std::sqrt(a)) - std::log(std::sqrt(1.0f - a));
  }
  return s;
}

int64_t clipped_last_timestep(const std::vector<float>& lambda_t, double lambda_min_clipped) {
  // searchsorted (left) of the scalar in the increasing flipped lambda_t, compared in float64.
  const std::size_t n = lambda_t.size();
  std::size_t idx = n;
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<double>(lambda_t[n - 1 - i]) >= lambda_min_clipped) {
      idx = i;
      break;
    }
  }
  if (std::isnan(lambda_min_clipped)) idx = n;
  return static_cast<int64_t>(n) - static_cast<int64_t>(idx);
}

std::vector<double> dpm_spacing_timesteps(const char* owner, const std::string& timestep_spacing,
                                          int64_t num_train_timesteps, int64_t last_timestep,
                                          int64_t n, int64_t steps_offset) {
  DIFFUSE_CHECK(n >= 1 && n <= 100000000, owner,
                ".set_timesteps: num_inference_steps must be a positive count, got ", n);
  std::vector<double> t;
  if (timestep_spacing == "linspace") {
    // np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    std::vector<double> lin = np_linspace(0, static_cast<double>(last_timestep - 1), n + 1);
    for (double& v : lin) v = np_round(v);
    t.assign(lin.rbegin(), lin.rend() - 1);
  } else if (timestep_spacing == "leading") {
    // (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1] + steps_offset
    const int64_t ratio = last_timestep / (n + 1);  // last_timestep >= 0
    for (int64_t i = n; i >= 1; --i) t.push_back(static_cast<double>(i * ratio + steps_offset));
  } else if (timestep_spacing == "trailing") {
    // np.arange(last, 0, -num_train / n).round() - 1
    const double ratio = static_cast<double>(num_train_timesteps) / static_cast<double>(n);
    t = np_arange(static_cast<double>(last_timestep), 0.0, -ratio);
    for (double& v : t) v = np_round(v) - 1;
  } else {
    DIFFUSE_FAIL(owner, ": timestep_spacing '", timestep_spacing,
                 "' is not supported (expected 'linspace', 'leading' or 'trailing')");
  }
  return t;
}

float vp_sigma_min(const std::vector<float>& alphas_cumprod) {
  const float a = alphas_cumprod.front();
  return std::sqrt((1.0f - a) / a);
}

AlphaSigma vp_alpha_sigma(float sigma) {
  const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  return AlphaSigma{alpha, sigma * alpha};
}

Values dpm_convert_model_output(const Values& model_output, const Values& sample,
                                const Shape& shape, float sigma, bool data_prediction,
                                const std::string& prediction_type, bool thresholding,
                                double dynamic_thresholding_ratio, double sample_max_value,
                                const char* owner) {
  const AlphaSigma as = vp_alpha_sigma(sigma);
  const Values& mo = model_output;
  auto threshold = [&](const Values& x0) {
    return load(threshold_sample(store(x0, shape), dynamic_thresholding_ratio, sample_max_value));
  };
  if (data_prediction) {
    Values x0;
    if (prediction_type == "epsilon") {
      x0 = (sample - as.sigma * mo) / as.alpha;
    } else if (prediction_type == "sample") {
      x0 = mo;
    } else if (prediction_type == "v_prediction") {
      x0 = as.alpha * sample - as.sigma * mo;
    } else {
      DIFFUSE_FAIL(owner, ": prediction_type '", prediction_type,
                   "' must be one of epsilon, sample or v_prediction");
    }
    return thresholding ? threshold(x0) : x0;
  }
  Values eps;
  if (prediction_type == "epsilon") {
    eps = mo;
  } else if (prediction_type == "sample") {
    eps = (sample - as.alpha * mo) / as.sigma;
  } else if (prediction_type == "v_prediction") {
    eps = as.alpha * mo + as.sigma * sample;
  } else {
    DIFFUSE_FAIL(owner, ": prediction_type '", prediction_type,
                 "' must be one of epsilon, sample or v_prediction");
  }
  if (thresholding) {
    const Values x0 = threshold((sample - as.sigma * eps) / as.alpha);
    eps = (sample - as.alpha * x0) / as.sigma;
  }
  return eps;
}

Values dpm_multistep_update(int order, const std::string& algorithm, bool midpoint, AlphaSigma t,
                            AlphaSigma cur, AlphaSigma s1, AlphaSigma s2, const Values& x,
                            const Values& m0, const Values& m1, const Values& m2,
                            const Values& noise, const char* owner) {
  const float lambda_t = lambda_of(t);
  const float lambda_s0 = lambda_of(cur);
  const std::string& algorithm_type = algorithm;
  Values x_t;
  if (order == 1) {
    // dpm_solver_first_order_update (DDIM-equivalent)
    const Values& m = m0;
    const float h = lambda_t - lambda_s0;
    if (algorithm_type == "dpmsolver++") {
      x_t = (t.sigma / cur.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * m;
    } else if (algorithm_type == "dpmsolver") {
      x_t = (t.alpha / cur.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * m;
    } else if (algorithm_type == "sde-dpmsolver++") {
      x_t = (t.sigma / cur.sigma * std::exp(-h)) * x +
            (t.alpha * (1.0f - std::exp(-2.0f * h))) * m +
            (t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h))) * noise;
    } else {
      x_t = (t.alpha / cur.alpha) * x - (2.0f * (t.sigma * (std::exp(h) - 1.0f))) * m +
            (t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
    }
  } else if (order == 2) {
    // multistep_dpm_solver_second_order_update
    const float lambda_s1 = lambda_of(s1);
    const float h = lambda_t - lambda_s0;
    const float h_0 = lambda_s0 - lambda_s1;
    const float r0 = h_0 / h;
    const Values& D0 = m0;
    const Values D1 = (1.0f / r0) * (m0 - m1);
    if (algorithm_type == "dpmsolver++") {
      if (midpoint) {
        x_t = (t.sigma / cur.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 -
              (0.5f * (t.alpha * (std::exp(-h) - 1.0f))) * D1;
      } else {
        x_t = (t.sigma / cur.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 +
              (t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f)) * D1;
      }
    } else if (algorithm_type == "dpmsolver") {
      if (midpoint) {
        x_t = (t.alpha / cur.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
              (0.5f * (t.sigma * (std::exp(h) - 1.0f))) * D1;
      } else {
        x_t = (t.alpha / cur.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
              (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f)) * D1;
      }
    } else if (algorithm_type == "sde-dpmsolver++") {
      if (midpoint) {
        x_t = (t.sigma / cur.sigma * std::exp(-h)) * x +
              (t.alpha * (1.0f - std::exp(-2.0f * h))) * D0 +
              (0.5f * (t.alpha * (1.0f - std::exp(-2.0f * h)))) * D1 +
              (t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h))) * noise;
      } else {
        x_t = (t.sigma / cur.sigma * std::exp(-h)) * x +
              (t.alpha * (1.0f - std::exp(-2.0f * h))) * D0 +
              (t.alpha * ((1.0f - std::exp(-2.0f * h)) / (-2.0f * h) + 1.0f)) * D1 +
              (t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h))) * noise;
      }
    } else {
      if (midpoint) {
        x_t = (t.alpha / cur.alpha) * x - (2.0f * (t.sigma * (std::exp(h) - 1.0f))) * D0 -
              (t.sigma * (std::exp(h) - 1.0f)) * D1 +
              (t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
      } else {
        x_t = (t.alpha / cur.alpha) * x - (2.0f * (t.sigma * (std::exp(h) - 1.0f))) * D0 -
              (2.0f * (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f))) * D1 +
              (t.sigma * std::sqrt(std::exp(2.0f * h) - 1.0f)) * noise;
      }
    }
  } else {
    // multistep_dpm_solver_third_order_update (no noise term, as in diffusers)
    const float lambda_s1 = lambda_of(s1);
    const float lambda_s2 = lambda_of(s2);
    const float h = lambda_t - lambda_s0;
    const float h_0 = lambda_s0 - lambda_s1;
    const float h_1 = lambda_s1 - lambda_s2;
    const float r0 = h_0 / h;
    const float r1 = h_1 / h;
    const Values& D0 = m0;
    const Values D1_0 = (1.0f / r0) * (m0 - m1);
    const Values D1_1 = (1.0f / r1) * (m1 - m2);
    const Values D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
    const Values D2 = (1.0f / (r0 + r1)) * (D1_0 - D1_1);
    if (algorithm_type == "dpmsolver++" || algorithm_type == "sde-dpmsolver++") {
      DIFFUSE_CHECK(algorithm_type == "dpmsolver++", owner,
                    ": solver_order 3 with sde-dpmsolver++ has no third-order update in "
                    "diffusers (it returns nothing); use solver_order 2");
      x_t = (t.sigma / cur.sigma) * x - (t.alpha * (std::exp(-h) - 1.0f)) * D0 +
            (t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f)) * D1 -
            (t.alpha * ((std::exp(-h) - 1.0f + h) / (h * h) - 0.5f)) * D2;
    } else {
      DIFFUSE_CHECK(algorithm_type == "dpmsolver", owner,
                    ": solver_order 3 with sde-dpmsolver has no third-order update in diffusers "
                    "(it returns nothing); use solver_order 2");
      x_t = (t.alpha / cur.alpha) * x - (t.sigma * (std::exp(h) - 1.0f)) * D0 -
            (t.sigma * ((std::exp(h) - 1.0f) / h - 1.0f)) * D1 -
            (t.sigma * ((std::exp(h) - 1.0f - h) / (h * h) - 0.5f)) * D2;
    }
  }
  return x_t;
}

std::size_t dpm_index_for_timestep(double timestep, const std::vector<double>& schedule) {
  std::size_t matches = 0;
  std::size_t first = 0;
  for (std::size_t i = 0; i < schedule.size(); ++i) {
    if (schedule[i] == timestep) {
      if (matches == 1) return i;
      first = i;
      ++matches;
    }
  }
  if (matches == 0) return schedule.empty() ? 0 : schedule.size() - 1;
  return first;
}

std::vector<std::size_t> add_noise_indices(const std::vector<double>& timesteps, int64_t batch,
                                           const std::vector<double>& schedule,
                                           std::optional<int64_t> begin_index,
                                           std::optional<int64_t> step_index, const char* owner) {
  DIFFUSE_CHECK(!schedule.empty(), owner, ".add_noise: call set_timesteps first");
  const std::vector<double> per_item = timesteps_per_item(timesteps, batch, owner);
  std::vector<std::size_t> idx(per_item.size());
  for (std::size_t b = 0; b < per_item.size(); ++b) {
    if (!begin_index) {
      idx[b] = dpm_index_for_timestep(per_item[b], schedule);
    } else if (step_index) {
      idx[b] = static_cast<std::size_t>(*step_index);
    } else {
      idx[b] = static_cast<std::size_t>(*begin_index);
    }
  }
  return idx;
}

Tensor vp_add_noise(const Tensor& original, const Tensor& noise, const std::vector<float>& sigmas,
                    const std::vector<std::size_t>& indices, const char* owner) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.shape() == noise.shape() &&
                    original.dim() >= 1,
                owner, ".add_noise: original and noise must be tensors of one shape");
  const Values x = load(original);
  const Values n = load(noise);
  const DType d = promote(x.dtype, n.dtype);
  const std::size_t batch = static_cast<std::size_t>(original.size(0));
  DIFFUSE_CHECK(indices.size() == batch, owner, ".add_noise: expected one index per batch item");
  const std::size_t per = batch == 0 ? 0 : x.v.size() / batch;
  Values out{std::vector<double>(x.v.size()), d};
  for (std::size_t b = 0; b < batch; ++b) {
    DIFFUSE_CHECK(indices[b] < sigmas.size(), owner, ".add_noise: step index ", indices[b],
                  " is outside the schedule");
    // sigmas.to(sample dtype); alpha_t = 1 / ((sigma**2 + 1) ** 0.5); sigma_t = sigma * alpha_t
    const DType sd = x.dtype;
    const double sigma = round_to(sd, sigmas[indices[b]]);
    const double alpha_t = round_to(
        sd, 1.0 / round_to(sd, std::sqrt(round_to(sd, round_to(sd, sigma * sigma) + 1.0))));
    const double sigma_t = round_to(sd, sigma * alpha_t);
    for (std::size_t i = b * per; i < (b + 1) * per; ++i) {
      const double a = round_to(sd, alpha_t * x.v[i]);
      const double c = round_to(promote(sd, n.dtype), sigma_t * n.v[i]);
      out.v[i] = round_to(d, a + c);
    }
  }
  return store(out, original.shape());
}

std::vector<float> solve_f32(std::vector<float> a, std::vector<float> b, std::size_t n,
                             const char* owner) {
  DIFFUSE_ASSERT(a.size() == n * n && b.size() == n);
  // LU factorization with partial pivoting (LAPACK sgetrf: first largest |pivot|).
  for (std::size_t k = 0; k < n; ++k) {
    std::size_t p = k;
    for (std::size_t i = k + 1; i < n; ++i) {
      if (std::fabs(a[i * n + k]) > std::fabs(a[p * n + k])) p = i;
    }
    DIFFUSE_CHECK(a[p * n + k] != 0.0f, owner,
                  ": torch.linalg.solve failed because the input matrix is singular (as in "
                  "diffusers; e.g. a third-order update onto a zero final sigma: use "
                  "lower_order_final=True or final_sigmas_type='sigma_min')");
    if (p != k) {
      for (std::size_t j = 0; j < n; ++j) std::swap(a[k * n + j], a[p * n + j]);
      std::swap(b[k], b[p]);
    }
    for (std::size_t i = k + 1; i < n; ++i) {
      const float l = a[i * n + k] / a[k * n + k];
      a[i * n + k] = l;
      for (std::size_t j = k + 1; j < n; ++j) a[i * n + j] -= l * a[k * n + j];
    }
  }
  // Forward substitution (unit lower), then back substitution.
  for (std::size_t i = 1; i < n; ++i) {
    for (std::size_t j = 0; j < i; ++j) b[i] -= a[i * n + j] * b[j];
  }
  for (std::size_t i = n; i-- > 0;) {
    for (std::size_t j = i + 1; j < n; ++j) b[i] -= a[i * n + j] * b[j];
    b[i] /= a[i * n + i];
  }
  return b;
}

nlohmann::json config_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

nlohmann::json config_floats(const std::optional<std::vector<double>>& v) {
  if (!v) return nullptr;
  nlohmann::json out = nlohmann::json::array();
  for (double e : *v) out.push_back(config_float(e));
  return out;
}

Tensor first_channels(const Tensor& t, int64_t channels) {
  DIFFUSE_CHECK(t.dim() >= 2 && t.size(1) >= channels, "variance_type 'learned': expected a ",
                "model output with at least ", channels, " channels, got ", t.str());
  return t.narrow(1, 0, channels).contiguous();
}

}  // namespace diffuse::schedulers
