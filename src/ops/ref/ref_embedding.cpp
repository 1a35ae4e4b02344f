// Naive reference of diffusers' get_timestep_embedding: the same float32 operations in the same
// order, one scalar at a time (the spec is the float32 computation, not the exact sinusoid).
#include <cmath>

#include "src/ops/ref/ref.h"

namespace diffuse::ops::ref {

Tensor timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                          double downscale_freq_shift, double scale, int64_t max_period) {
  const std::vector<float> t = timesteps.to_vector<float>();
  const int64_t n = static_cast<int64_t>(t.size());
  const int64_t half = dim / 2;
  std::vector<double> out(static_cast<std::size_t>(n * dim), 0.0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < half; ++i) {
      // exponent = -math.log(max_period) * torch.arange(half, dtype=float32)
      float e =
          static_cast<float>(-std::log(static_cast<double>(max_period))) * static_cast<float>(i);
      // exponent = exponent / (half_dim - downscale_freq_shift)
      e = e / static_cast<float>(static_cast<double>(half) - downscale_freq_shift);
      // emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]; emb = scale * emb
      const float arg = static_cast<float>(scale) * (t[r] * std::exp(e));
      const double s = std::sin(arg), c = std::cos(arg);
      // emb = cat([sin, cos]); flip_sin_to_cos swaps the halves
      out[r * dim + (flip_sin_to_cos ? half + i : i)] = static_cast<float>(s);
      out[r * dim + (flip_sin_to_cos ? i : half + i)] = static_cast<float>(c);
    }
  }
  return from_double(out, {n, dim}, DType::f32);
}

}  // namespace diffuse::ops::ref
