// Timestep embeddings: argument checks and dispatch to the device's kernels.
#include "diffuse/ops/embedding.h"

#include "src/backends/cpu/kernels.h"
#include "src/ops/kernel_checks.h"

namespace diffuse::ops {

Tensor timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                          double downscale_freq_shift, double scale, int64_t max_period) {
  detail::check_defined(timesteps, "timestep_embedding", "timesteps");
  detail::check_device({&timesteps}, "timestep_embedding");
  DIFFUSE_CHECK(timesteps.dim() == 1, "timestep_embedding: timesteps should be 1-D [N], got ",
                shape_str(timesteps.shape()));
  const DType dt = timesteps.dtype();
  DIFFUSE_CHECK(is_floating(dt) || dt == DType::i32 || dt == DType::i64,
                "timestep_embedding: timesteps must be floating or i32/i64, got ", timesteps.str());
  DIFFUSE_CHECK(dim >= 1, "timestep_embedding: dim must be >= 1, got ", dim);
  DIFFUSE_CHECK(max_period > 0, "timestep_embedding: max_period must be > 0, got ", max_period);
  DIFFUSE_CHECK(dim / 2 == 0 || static_cast<double>(dim / 2) != downscale_freq_shift,
                "timestep_embedding: half the dim (", dim / 2,
                ") equals downscale_freq_shift, which divides by zero");
  Tensor out = Tensor::empty({timesteps.size(0), dim}, DType::f32);
  if (out.numel() > 0) {
    cpu::timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift, scale,
                            max_period, out);
  }
  return out;
}

}  // namespace diffuse::ops
