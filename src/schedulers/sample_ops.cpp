// Sample-level helpers shared by several scheduler ports: see sample_ops.h.
#include "src/schedulers/sample_ops.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "src/schedulers/scheduling_utils.h"

namespace diffuse::schedulers {

int64_t train_timestep_index(double timestep, int64_t num_train_timesteps, const char* owner) {
  DIFFUSE_CHECK(std::isfinite(timestep) && timestep == std::floor(timestep) && timestep >= 0 &&
                    timestep < static_cast<double>(num_train_timesteps),
                owner, ": timestep ", timestep, " is not an integer training timestep in [0, ",
                num_train_timesteps, ")");
  return static_cast<int64_t>(timestep);
}

Tensor add_noise_alphas_cumprod(const std::vector<float>& alphas_cumprod, const Tensor& original,
                                const Tensor& noise, const std::vector<double>& timesteps,
                                const char* owner) {
  DIFFUSE_CHECK(original.defined() && noise.defined() && original.dim() >= 1, owner,
                ".add_noise: expected defined [batch, ...] tensors");
  DIFFUSE_CHECK(original.shape() == noise.shape(), owner, ".add_noise: original shape ",
                shape_str(original.shape()), " differs from noise shape ",
                shape_str(noise.shape()));
  const DType s = original.dtype();
  const DType out_dtype = promote(s, noise.dtype());
  const int64_t batch = original.size(0);
  const std::vector<double> ts = timesteps_per_item(timesteps, batch, owner);
  const std::vector<double> x = values(original);
  const std::vector<double> z = values(noise);
  std::vector<double> out(x.size());
  const int64_t per_item = batch > 0 ? original.numel() / batch : 0;
  const int64_t num_train = static_cast<int64_t>(alphas_cumprod.size());
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t t = train_timestep_index(ts[static_cast<std::size_t>(b)], num_train, owner);
    // alphas_cumprod.to(sample dtype), then ** 0.5 and (1 - a) ** 0.5 in that dtype.
    const double a = round_to(s, alphas_cumprod[static_cast<std::size_t>(t)]);
    const double sqrt_a = round_to(s, std::sqrt(a));
    const double sqrt_one_minus_a = round_to(s, std::sqrt(round_to(s, 1.0 - a)));
    for (int64_t i = b * per_item; i < (b + 1) * per_item; ++i) {
      const auto k = static_cast<std::size_t>(i);
      out[k] =
          round_to(out_dtype, round_to(s, sqrt_a * x[k]) + round_to(s, sqrt_one_minus_a * z[k]));
    }
  }
  return from_values(out, original.shape(), out_dtype);
}

Tensor noise_like(const StepArgs& args, const Shape& shape, DType dtype, const char* owner) {
  Tensor n = draw_noise(args, shape, dtype, owner);
  DIFFUSE_CHECK(is_floating(n.dtype()), owner, ".step: the noise source returned ", n.str(),
                ", expected a floating-point tensor");
  return n.dtype() == dtype ? n : n.to(dtype);
}

}  // namespace diffuse::schedulers
