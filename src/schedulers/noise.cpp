// generator_noise: the NoiseSource of real runs (diffusers' randn_tensor with one generator).
// Kept in its own file so that programs that never draw from a Generator do not link it.
#include "diffuse/core/generator.h"
#include "diffuse/schedulers/scheduler.h"

namespace diffuse {

NoiseSource generator_noise(Generator& generator) {
  return [&generator](const Shape& shape, DType dtype) {
    return randn_tensor(shape, generator, dtype);
  };
}

}  // namespace diffuse
