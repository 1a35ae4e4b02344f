// Generator: reproduces PyTorch's CPU generator bit for bit.
//
// torch.Generator("cpu").manual_seed(s) followed by torch.randn(shape) / torch.rand(shape) give
// the same values as Generator(s).randn(shape) / .rand(shape), including PyTorch's different
// code paths for tensors of fewer than 16 elements (one Box-Muller pair per two elements, the
// second value cached in the generator) and of 16 or more (uniforms first, then Box-Muller in
// blocks of 16 with the float32 AVX2 log/sincos that PyTorch's CPU kernel uses; a tail that is
// not a multiple of 16 redraws the last 16 elements). Checked against reference values from
// PyTorch (shared/reference/*/randn).
// Not thread-safe: one generator per thread (or external locking).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>

#include "diffuse/core/tensor.h"

namespace diffuse {

class Generator {
 public:
  // PyTorch's default CPU seed (c10::default_rng_seed_val).
  static constexpr uint64_t kDefaultSeed = 67280421310721ULL;

  explicit Generator(uint64_t seed = kDefaultSeed);

  // Resets the state as torch.Generator.manual_seed(seed) does: the engine is seeded with the
  // low 32 bits of `seed` (as at::mt19937 does) and the cached normal values are dropped;
  // initial_seed() still reports the full 64-bit value.
  void manual_seed(uint64_t seed);
  uint64_t initial_seed() const { return seed_; }

  // torch.randn(shape, generator=g, dtype=dtype): standard normal values for dtype f32, f64,
  // f16 or bf16. f16/bf16 follow PyTorch 1.13's half-precision CPU code, intermediate roundings
  // included (read from its source; the reference data has no half-precision case). Throws
  // diffuse::Error for any other dtype. Advances the state exactly as PyTorch does, so
  // consecutive calls match consecutive torch.randn calls.
  Tensor randn(const Shape& shape, DType dtype = DType::f32);
  // torch.rand: uniform in [0, 1) for f32, f64, f16, bf16 (other dtypes throw).
  Tensor rand(const Shape& shape, DType dtype = DType::f32);

  // Raw engine outputs: the next mt19937 word, and (hi << 32) | lo of the next two words
  // (at::CPUGeneratorImpl::random / random64).
  uint32_t random();
  uint64_t random64();

 private:
  // at::normal_distribution<double> on this generator: one standard normal draw that uses (and
  // refills) the cached second Box-Muller value.
  double scalar_normal();

  uint64_t seed_ = kDefaultSeed;
  // at::mt19937 is the standard MT19937 seeded with a 32-bit value: std::mt19937 reproduces it.
  std::mt19937 engine_;
  // at::CPUGeneratorImpl caches the second Box-Muller value of scalar normal draws. Only the
  // double cache is reachable from randn (its scalar path always draws in double); the float
  // cache exists in PyTorch for other callers and is reset alongside for the same semantics.
  std::optional<double> next_double_normal_;
};

// diffusers.utils.torch_utils.randn_tensor(shape, generator=generators, dtype=dtype) on CPU.
// One generator: generators[0].randn(shape). Several: one generator per batch item, each drawing
// a [1, shape[1:]...] tensor, concatenated along dim 0; then the count must equal shape[0]
// (diffusers' pipelines raise the same error). Throws diffuse::Error when `generators` is empty,
// when the counts differ, or when `shape` is a scalar shape and several generators are given.
Tensor randn_tensor(const Shape& shape, std::span<Generator> generators, DType dtype = DType::f32);
inline Tensor randn_tensor(const Shape& shape, Generator& generator, DType dtype = DType::f32) {
  return randn_tensor(shape, std::span<Generator>(&generator, 1), dtype);
}

}  // namespace diffuse
