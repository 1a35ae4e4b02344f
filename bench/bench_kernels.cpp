// The CPU kernels of the norms, activations, softmax and elementwise ops at Stable Diffusion
// shapes, in GB/s (bytes read + written once), next to a large parallel memcpy measured in the
// same run: these ops are memory-bound, so memcpy bandwidth is their roofline.
//
//   bench_kernels                      # all
//   bench_kernels --benchmark_filter=GroupNorm
//
// Each benchmark reports bytes_per_second (wall clock), `of_memcpy` (its fraction of the memcpy
// bandwidth, wall clock; memcpy runs first) and `of_memcpy_cpu` (the same from process CPU time
// of all threads: the meaningful figure on a loaded machine, best with OMP_NUM_THREADS=1). The
// label is the instruction set in use.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <vector>

#include "diffuse/core/threads.h"
#include "diffuse/ops.h"
#include "src/backends/cpu/kernels.h"

namespace {

using diffuse::DType;
using diffuse::Shape;
using diffuse::Tensor;
namespace ops = diffuse::ops;

double g_memcpy_gbps = 0.0;      // wall clock
double g_memcpy_cpu_gbps = 0.0;  // per CPU-second of all threads

// Wall-clock and process CPU seconds.
struct Stopwatch {
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  std::clock_t cpu = std::clock();
  double wall_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  }
  double cpu_s() const { return static_cast<double>(std::clock() - cpu) / CLOCKS_PER_SEC; }
};

Tensor random_tensor(const Shape& shape, DType dtype = DType::f32) {
  std::vector<float> v(static_cast<std::size_t>(diffuse::shape_numel(shape)));
  uint32_t s = 12345;
  for (float& e : v) {
    s = s * 1664525u + 1013904223u;
    e = static_cast<float>(s >> 8) * (1.0f / 16777216.0f) * 4.0f - 2.0f;
  }
  return Tensor::from_vector(v, shape, dtype);
}

// Sets bytes_per_second and the fractions of the memcpy bandwidth from the measured seconds.
void report(benchmark::State& state, double bytes_per_iter, double wall_s, double cpu_s) {
  const double bytes = bytes_per_iter * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  if (g_memcpy_gbps > 0.0 && wall_s > 0.0 && cpu_s > 0.0) {
    state.counters["of_memcpy"] = bytes / wall_s / 1e9 / g_memcpy_gbps;
    state.counters["of_memcpy_cpu"] = bytes / cpu_s / 1e9 / g_memcpy_cpu_gbps;
  }
}

// A parallel memcpy of 64 MiB (well beyond the last-level cache), with the kernels' threads.
void BM_Memcpy(benchmark::State& state) {
  const std::size_t n = std::size_t{64} << 20;
  std::vector<char> src(n, 1), dst(n, 0);
  const int threads = diffuse::num_threads();
  double wall = 0.0, cpu = 0.0;
  for (auto _ : state) {
    const Stopwatch sw;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const std::size_t begin = n / threads * t, end = t + 1 == threads ? n : n / threads * (t + 1);
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
    benchmark::ClobberMemory();
    wall += sw.wall_s();
    cpu += sw.cpu_s();
  }
  const double bytes = 2.0 * static_cast<double>(n) * static_cast<double>(state.iterations());
  g_memcpy_gbps = bytes / wall / 1e9;
  g_memcpy_cpu_gbps = bytes / cpu / 1e9;
  report(state, 2.0 * static_cast<double>(n), wall, cpu);
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();

// Runs `fn` per iteration, timing it, and reports GB/s for `bytes` per call.
template <class Fn>
void run(benchmark::State& state, double bytes, Fn fn) {
  state.SetLabel(diffuse::cpu::isa_name(diffuse::cpu::active_isa()));
  double wall = 0.0, cpu = 0.0;
  for (auto _ : state) {
    const Stopwatch sw;
    Tensor y = fn();
    benchmark::DoNotOptimize(y.data_ptr());
    wall += sw.wall_s();
    cpu += sw.cpu_s();
  }
  report(state, bytes, wall, cpu);
}

// GroupNorm(32) + SiLU of the SD 1.5 UNet resnets at 64x64 latents, 320 channels, batch 2
// (classifier-free guidance). Arg: 0 = f32, 1 = bf16.
void BM_GroupNormSilu(benchmark::State& state) {
  const DType dt = state.range(0) == 0 ? DType::f32 : DType::bf16;
  const Tensor x = random_tensor({2, 320, 64, 64}, dt);
  const Tensor w = random_tensor({320}), b = random_tensor({320});
  run(state, 2.0 * static_cast<double>(x.nbytes()),
      [&] { return ops::group_norm(x, 32, w, b, 1e-5, ops::Activation::silu); });
}
BENCHMARK(BM_GroupNormSilu)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// LayerNorm of the transformer blocks: 4096 tokens x 320 channels.
void BM_LayerNorm(benchmark::State& state) {
  const Tensor x = random_tensor({4096, 320});
  const Tensor w = random_tensor({320}), b = random_tensor({320});
  run(state, 2.0 * static_cast<double>(x.nbytes()), [&] { return ops::layer_norm(x, 1, w, b); });
}
BENCHMARK(BM_LayerNorm)->Unit(benchmark::kMillisecond)->UseRealTime();

// Softmax over attention scores: 8 heads x 256 queries x 1024 keys.
void BM_Softmax(benchmark::State& state) {
  const Tensor x = random_tensor({8, 256, 1024});
  run(state, 2.0 * static_cast<double>(x.nbytes()), [&] { return ops::softmax(x, -1); });
}
BENCHMARK(BM_Softmax)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Silu(benchmark::State& state) {
  const Tensor x = random_tensor({2, 320, 64, 64});
  run(state, 2.0 * static_cast<double>(x.nbytes()), [&] { return ops::silu(x); });
}
BENCHMARK(BM_Silu)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Gelu(benchmark::State& state) {
  const Tensor x = random_tensor({2, 320, 64, 64});
  run(state, 2.0 * static_cast<double>(x.nbytes()), [&] { return ops::gelu(x); });
}
BENCHMARK(BM_Gelu)->Unit(benchmark::kMillisecond)->UseRealTime();

// The residual add of the resnets.
void BM_Add(benchmark::State& state) {
  const Tensor a = random_tensor({2, 320, 64, 64}), b = random_tensor({2, 320, 64, 64});
  run(state, 3.0 * static_cast<double>(a.nbytes()), [&] { return ops::add(a, b); });
}
BENCHMARK(BM_Add)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
