// Generator: reproduces PyTorch's CPU generator bit for bit.
//
// torch.Generator("cpu").manual_seed(s) followed by torch.randn(shape) / torch.rand(shape) give
// the same values as Generator(s).randn(shape) / .rand(shape), including PyTorch's different
// code paths for tensors of fewer than 16 elements and of 16 or more (vectorized Box-Muller).
// Not thread-safe: one generator per thread (or external locking).
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "diffuse/core/tensor.h"

namespace diffuse {

class Generator {
 public:
  // PyTorch's default CPU seed (c10::default_rng_seed_val).
  static constexpr uint64_t kDefaultSeed = 67280421310721ULL;

  explicit Generator(uint64_t seed = kDefaultSeed);

  // Resets the state as torch.Generator.manual_seed(seed) does.
  void manual_seed(uint64_t seed);
  uint64_t initial_seed() const { return seed_; }

  // torch.randn(shape, generator=g, dtype=dtype): standard normal, f32 or f64 (other floating
  // dtypes are drawn in f32 and converted, as PyTorch does for half types on CPU).
  Tensor randn(const Shape& shape, DType dtype = DType::f32);
  // torch.rand: uniform in [0, 1).
  Tensor rand(const Shape& shape, DType dtype = DType::f32);

  // Raw engine outputs (mt19937).
  uint32_t random();
  uint64_t random64();

 private:
  uint64_t seed_ = kDefaultSeed;
  std::array<uint32_t, 624> state_{};
  int index_ = 624;
  // at::CPUGeneratorImpl caches the second Box-Muller value of scalar normal draws.
  std::optional<double> next_double_normal_;
  std::optional<float> next_float_normal_;
};

}  // namespace diffuse
