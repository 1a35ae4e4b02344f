// Throughput of linear / conv2d / attention at Stable Diffusion 1.5 shapes (512x512, batch 2),
// next to rooflines measured in the same run: a large oneDNN f32 GEMM, a large bf16 GEMM (bf16
// inputs, f32 accumulation) and a large memcpy. Each op reports GFLOP/s and its fraction of the
// roofline of its compute dtype; attention also reports its peak workspace in MB.
//
//   bench_linalg [--threads=N] [google benchmark flags]     (default: 2 threads)
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "diffuse/core/threads.h"
#include "diffuse/ops.h"
#include "src/backends/cpu/attention_cpu.h"

namespace {

using diffuse::DType;
using diffuse::Tensor;
namespace ops = diffuse::ops;

double g_roof_f32 = 0.0;   // GFLOP/s of the f32 GEMM roofline
double g_roof_bf16 = 0.0;  // GFLOP/s of the bf16 GEMM roofline

Tensor randn(const diffuse::Shape& shape, DType dtype = DType::f32, float scale = 1.f) {
  std::mt19937 gen(1234);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(static_cast<std::size_t>(diffuse::shape_numel(shape)));
  for (float& e : v) e = dist(gen);
  return Tensor::from_vector(v, shape, dtype);
}

// Runs `fn` under the benchmark loop and reports GFLOP/s (wall clock: the work is parallel)
// plus the fraction of the roofline of `compute` when one was measured.
template <typename Fn>
void run_flops(benchmark::State& state, double flops, DType compute, Fn fn) {
  fn();  // warm-up: primitive creation and weight reorder are one-time costs
  double seconds = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++iters;
  }
  const double gflops = flops * static_cast<double>(iters) / seconds * 1e-9;
  state.counters["GFLOPS"] = gflops;
  const double roof = compute == DType::bf16 ? g_roof_bf16 : g_roof_f32;
  if (roof > 0) state.counters["of_roofline"] = gflops / roof;
}

// --- Rooflines ---------------------------------------------------------------------------------

void BM_roofline_gemm(benchmark::State& state, DType dtype) {
  const int64_t n = state.range(0);
  const Tensor a = randn({n, n}, dtype), b = randn({n, n}, dtype);
  run_flops(state, 2.0 * n * n * n, dtype,
            [&] { benchmark::DoNotOptimize(ops::matmul(a, b, dtype)); });
  (dtype == DType::bf16 ? g_roof_bf16 : g_roof_f32) = state.counters["GFLOPS"];
  state.counters.erase("of_roofline");
}
BENCHMARK_CAPTURE(BM_roofline_gemm, f32, DType::f32)
    ->Arg(2048)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_roofline_gemm, bf16, DType::bf16)
    ->Arg(2048)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_roofline_memcpy(benchmark::State& state) {
  const std::size_t bytes = std::size_t{256} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  double seconds = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    // One contiguous slice per thread, like a memory-bound elementwise kernel.
    const int threads = diffuse::num_threads();
#pragma omp parallel for num_threads(threads)
    for (int t = 0; t < threads; ++t) {
      const std::size_t lo = bytes * t / threads, hi = bytes * (t + 1) / threads;
      std::memcpy(dst.data() + lo, src.data() + lo, hi - lo);
    }
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++iters;
  }
  // Read + write traffic.
  state.counters["GBps"] = 2.0 * static_cast<double>(bytes) * iters / seconds * 1e-9;
}
BENCHMARK(BM_roofline_memcpy)->UseRealTime()->Unit(benchmark::kMillisecond);

// --- conv2d 3x3, pad 1 (UNet resnet convolutions) ---------------------------------------------

void BM_conv2d_3x3(benchmark::State& state, DType compute) {
  const int64_t c = state.range(0), hw = state.range(1), n = 2;
  const Tensor x = randn({n, c, hw, hw});
  const Tensor w = randn({c, c, 3, 3}, DType::f32, 0.02f);
  const Tensor b = randn({c});
  ops::Conv2dParams p;
  p.padding = {1, 1};
  const double flops = 2.0 * n * c * hw * hw * c * 9;
  run_flops(state, flops, compute,
            [&] { benchmark::DoNotOptimize(ops::conv2d(x, w, b, p, compute)); });
}
#define DIFFUSE_CONV_ARGS ->Args({320, 64})->Args({640, 32})->Args({1280, 16})->Args({1280, 8})
BENCHMARK_CAPTURE(BM_conv2d_3x3, bf16, DType::bf16)
DIFFUSE_CONV_ARGS->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_conv2d_3x3, f32, DType::f32)
DIFFUSE_CONV_ARGS->UseRealTime()->Unit(benchmark::kMillisecond);

// --- linear --------------------------------------------------------------------------------------

void BM_linear(benchmark::State& state, DType compute) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor x = randn({m, k});
  const Tensor w = randn({n, k}, DType::f32, 0.05f);
  const Tensor b = randn({n});
  run_flops(state, 2.0 * m * k * n, compute,
            [&] { benchmark::DoNotOptimize(ops::linear(x, w, b, compute)); });
}
// 8192 = 2 x 4096 tokens: the 64x64 transformer's feed-forward-sized projection 320 -> 1280;
// 154 = 2 x 77 text tokens: cross-attention k/v projections 768 -> 320.
#define DIFFUSE_LINEAR_ARGS ->Args({8192, 320, 1280})->Args({154, 768, 320})
BENCHMARK_CAPTURE(BM_linear, bf16, DType::bf16)
DIFFUSE_LINEAR_ARGS->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_linear, f32, DType::f32)
DIFFUSE_LINEAR_ARGS->UseRealTime()->Unit(benchmark::kMillisecond);

// --- attention -----------------------------------------------------------------------------------

void BM_attention(benchmark::State& state, DType compute) {
  const int64_t b = 2, h = 8, d = 40, lq = state.range(0), lk = state.range(1);
  const Tensor q = randn({b, h, lq, d}), k = randn({b, h, lk, d}), v = randn({b, h, lk, d});
  diffuse::cpu::attention_reset_peak_workspace();
  const double flops = 2.0 * b * h * lq * lk * (d + d);
  run_flops(state, flops, compute,
            [&] { benchmark::DoNotOptimize(ops::attention(q, k, v, {}, compute)); });
  state.counters["workspace_MB"] =
      static_cast<double>(diffuse::cpu::attention_peak_workspace_bytes()) / (1 << 20);
}
// Self-attention of the 64x64 level (4096 tokens) and cross-attention with 77 text tokens.
BENCHMARK_CAPTURE(BM_attention, bf16, DType::bf16)
    ->Args({4096, 4096})
    ->Args({4096, 77})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_attention, f32, DType::f32)
    ->Args({4096, 4096})
    ->Args({4096, 77})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::stoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  diffuse::set_num_threads(threads);
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
