// The Stable Diffusion 1.5 VAE decoder (AutoencoderKL::decode) on the CPU with random weights of
// the real shapes: a 512x512 decode in bf16 and f32 compute, with its GFLOP/s next to a bf16 /
// f32 GEMM roofline measured in the same row (just before and after the timed decodes, since
// the machine's load can change between rows), the decode with banded convolutions switched off
// (the whole-tensor path, for comparison in the same run), its main operations one by one at
// the decoder's shapes (where the time goes), and with --tiled a 2048x2048 tiled decode with its
// peak memory. See docs/benchmarks.md.
//
//   bench_vae [--threads=N] [--tiled] [google benchmark flags]     (default: 2 threads)
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "diffuse/core/error.h"
#include "diffuse/core/generator.h"
#include "diffuse/core/threads.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/tensor_source.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/ops.h"
#include "src/backends/cpu/dnnl_linalg.h"
#include "src/ops/linalg_weight.h"

namespace {

namespace fs = std::filesystem;
using diffuse::DType;
using diffuse::Tensor;

fs::path shared_dir() {
  if (const char* env = std::getenv("DIFFUSE_SHARED_DIR")) return env;
  return DIFFUSE_SHARED_DIR;
}

// runwayml/stable-diffusion-v1-5 vae/config.json, or the same values when the asset is absent.
nlohmann::json sd15_vae_json() {
  const fs::path file = shared_dir() / "assets" / "model-configs" / "runwayml" /
                        "stable-diffusion-v1-5" / "vae" / "config.json";
  if (fs::exists(file)) return diffuse::read_json_file(file);
  const std::vector<std::string> down(4, "DownEncoderBlock2D"), up(4, "UpDecoderBlock2D");
  return {{"act_fn", "silu"},         {"block_out_channels", {128, 256, 512, 512}},
          {"down_block_types", down}, {"in_channels", 3},
          {"latent_channels", 4},     {"layers_per_block", 2},
          {"norm_num_groups", 32},    {"out_channels", 3},
          {"sample_size", 512},       {"up_block_types", up}};
}

// VmHWM / VmRSS of /proc/self/status in MiB (-1 when unreadable).
double status_mb(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::size_t len = std::strlen(field);
  while (std::getline(status, line)) {
    if (line.compare(0, len, field) == 0) return std::stod(line.substr(len)) / 1024.0;
  }
  return -1.0;
}

// Resets VmHWM to the current RSS (Linux >= 4.0), so that each row's peak is its own.
void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

// Seconds of `fn`, wall clock (the work is parallel).
template <typename Fn>
double seconds_of(Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// GFLOP/s of a 2048^3 GEMM of `dtype` (f32 accumulation), best of repeats over >= 1 s: the
// roofline the decoder's rate is compared with.
double gemm_roofline(DType dtype) {
  constexpr int64_t n = 2048;
  std::mt19937 gen(1234);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(n * n));
  for (float& e : v) e = dist(gen);
  const Tensor a = Tensor::from_vector(v, {n, n}, dtype), b = Tensor::from_vector(v, {n, n}, dtype);
  benchmark::DoNotOptimize(diffuse::ops::matmul(a, b, dtype));  // primitive creation
  double best = 1e30, total = 0.0;
  while (total < 1.0) {
    const double s =
        seconds_of([&] { benchmark::DoNotOptimize(diffuse::ops::matmul(a, b, dtype)); });
    best = std::min(best, s);
    total += s;
  }
  return 2.0 * double(n) * double(n) * double(n) / best * 1e-9;
}

// --- FLOPs of the decoder, walked as diffusers builds it (vae.py Decoder) -----------------------
// Multiply-add = 2 FLOPs; convolutions, the mid-block attention's projections and products
// (4 * L^2 * C, one head over all channels). Norms, activations, upsampling and adds are not
// counted.
double decoder_flops(const diffuse::AutoencoderKLConfig& c, int64_t h, int64_t w) {
  double total = 0.0;
  const auto conv = [&](int64_t cin, int64_t cout, int64_t k) {
    total += 2.0 * double(cin) * double(cout) * double(k * k) * double(h) * double(w);
  };
  const auto resnet = [&](int64_t cin, int64_t cout) {
    conv(cin, cout, 3);
    conv(cout, cout, 3);
    if (cin != cout) conv(cin, cout, 1);
  };
  const auto& ch = c.block_out_channels;
  if (c.use_post_quant_conv) conv(c.latent_channels, c.latent_channels, 1);
  int64_t cur = ch.back();
  conv(c.latent_channels, cur, 3);
  resnet(cur, cur);
  if (c.mid_block_add_attention) {
    const double l = double(h) * double(w);
    total += 4.0 * 2.0 * double(cur) * double(cur) * l;  // to_q, to_k, to_v, to_out
    total += 4.0 * l * l * double(cur);                  // scores and weighted sum
  }
  resnet(cur, cur);
  for (std::size_t i = 0; i < ch.size(); ++i) {
    const int64_t out = ch[ch.size() - 1 - i];
    for (int64_t j = 0; j <= c.layers_per_block; ++j) {
      resnet(cur, out);
      cur = out;
    }
    if (i + 1 < ch.size()) {
      h *= 2;
      w *= 2;
      conv(cur, cur, 3);
    }
  }
  conv(cur, c.out_channels, 3);
  return total;
}

// RandomTensorSource that counts the elements of every weight it hands out.
class CountingRandomSource final : public diffuse::TensorSource {
 public:
  CountingRandomSource() : TensorSource("random (counted)"), inner_(42) {}
  std::string_view format() const override { return "random"; }
  std::optional<Tensor> synthesize(std::string_view name, const diffuse::Shape& shape,
                                   DType dtype) const override {
    std::optional<Tensor> t = inner_.synthesize(name, shape, dtype);
    if (t) elements_ += t->numel();
    return t;
  }
  int64_t elements() const { return elements_.load(); }

 protected:
  Tensor load(const diffuse::TensorInfo& info) const override {
    DIFFUSE_FAIL("bench_vae: CountingRandomSource lists no tensors, asked for ", info.name);
  }

 private:
  diffuse::RandomTensorSource inner_;
  mutable std::atomic<int64_t> elements_{0};
};

// Switches banded convolutions off for one row, and back to what they were.
class BandingOff {
 public:
  explicit BandingOff(bool off) : saved_(diffuse::cpu::dnnl_conv_banding()), off_(off) {
    if (off_) diffuse::cpu::set_dnnl_conv_banding({-1, saved_.bytes_per_thread});
  }
  ~BandingOff() { diffuse::cpu::set_dnnl_conv_banding(saved_); }
  BandingOff(const BandingOff&) = delete;
  BandingOff& operator=(const BandingOff&) = delete;

 private:
  diffuse::cpu::DnnlConvBanding saved_;
  bool off_;
};

// --- The decode
// -----------------------------------------------------------------------------------

// range(0): image side in pixels. `whole`: banded convolutions off. `tiled`: enable_tiling.
void BM_vae_decode(benchmark::State& state, DType compute, bool whole, bool tiled) {
  const diffuse::AutoencoderKLConfig config =
      diffuse::AutoencoderKLConfig::from_json(sd15_vae_json());
  const BandingOff banding(whole);
  reset_peak_rss();
  const double rss_before = status_mb("VmRSS:");
  auto source = std::make_shared<CountingRandomSource>();
  diffuse::AutoencoderKL vae(config, diffuse::WeightLoader(source, compute), compute);
  vae.enable_tiling(tiled);
  const int64_t side = state.range(0) / vae.scale_factor();
  diffuse::Generator gen(11);
  const Tensor latents = gen.randn({1, config.latent_channels, side, side});
  // Untimed warm-up (primitive creation, weight reorders) unless tiled (minutes per decode).
  if (!tiled) benchmark::DoNotOptimize(vae.decode(latents));

  const double roof_before = gemm_roofline(compute);
  double seconds = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    seconds += seconds_of([&] { benchmark::DoNotOptimize(vae.decode(latents)); });
    ++iters;
  }
  const double roof_after = gemm_roofline(compute);
  const double s = iters > 0 ? seconds / double(iters) : 0.0;
  // FLOPs: tiled, the sum over the (overlapping) tiles diffusers' tiled_decode decodes: tiles of
  // sample_size / 8 latents every 3/4 of that, the last ones in each direction cut short.
  double flops = decoder_flops(config, side, side);
  int64_t tiles = 1;
  if (tiled) {
    const int64_t tile = config.sample_size.values.at(0) / vae.scale_factor();
    const auto step = static_cast<int64_t>(static_cast<double>(tile) * 0.75);
    flops = 0.0;
    tiles = 0;
    for (int64_t i = 0; i < side; i += step) {
      for (int64_t j = 0; j < side; j += step) {
        flops += decoder_flops(config, std::min(tile, side - i), std::min(tile, side - j));
        ++tiles;
      }
    }
  }
  const double roof = 0.5 * (roof_before + roof_after);
  state.counters["s_per_decode"] = s;
  if (tiled) state.counters["tiles"] = double(tiles);
  state.counters["GFLOP_per_decode"] = flops * 1e-9;
  state.counters["GFLOPS"] = flops / s * 1e-9;
  state.counters["roofline_GFLOPS"] = roof;
  state.counters["fraction_of_roofline"] = flops / s * 1e-9 / roof;
  state.counters["weights_mb"] =
      double(source->elements()) * double(diffuse::dtype_size(compute)) / (1024.0 * 1024.0);
  state.counters["rss_before_mb"] = rss_before;
  state.counters["peak_rss_mb"] = status_mb("VmHWM:");
}
BENCHMARK_CAPTURE(BM_vae_decode, bf16, DType::bf16, false, false)
    ->Arg(512)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);
BENCHMARK_CAPTURE(BM_vae_decode, bf16_whole, DType::bf16, true, false)
    ->Arg(512)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);
BENCHMARK_CAPTURE(BM_vae_decode, f32, DType::f32, false, false)
    ->Arg(512)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

// --- The decoder's main operations at its 512x512 shapes
// -------------------------------------------

Tensor randn(const diffuse::Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  diffuse::Generator gen(seed);
  return gen.randn(shape).to(dtype);
}

// GroupNorm(32) + SiLU, as in every decoder resnet (memory-bound).
void BM_op_group_norm_silu(benchmark::State& state) {
  const int64_t c = state.range(0), side = state.range(1);
  const Tensor x = randn({1, c, side, side}, 1);
  const Tensor w = randn({c}, 2), b = randn({c}, 3);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        diffuse::ops::group_norm(x, 32, w, b, 1e-6, diffuse::ops::Activation::silu));
  }
  state.counters["GB_per_s"] = benchmark::Counter(
      double(x.nbytes()) * 2.0 * double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_op_group_norm_silu)
    ->Args({128, 512})
    ->Args({256, 512})
    ->Args({512, 256})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// A 3x3 bf16 convolution (range: Cin, Cout, side, banded) with a layer-owned weight.
void BM_op_conv3x3(benchmark::State& state) {
  const int64_t cin = state.range(0), cout = state.range(1), side = state.range(2);
  const BandingOff banding(state.range(3) == 0);
  const Tensor x = randn({1, cin, side, side}, 4);
  const diffuse::ops::LinalgWeight w(randn({cout, cin, 3, 3}, 5, DType::bf16));
  const Tensor b = randn({cout}, 6);
  diffuse::ops::Conv2dParams p;
  p.padding = {1, 1};
  benchmark::DoNotOptimize(diffuse::ops::conv2d(x, w, b, p, DType::bf16));
  for (auto _ : state) benchmark::DoNotOptimize(diffuse::ops::conv2d(x, w, b, p, DType::bf16));
  state.counters["GFLOPS"] = benchmark::Counter(
      2.0 * double(cin * cout * 9) * double(side * side) * double(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_op_conv3x3)
    ->ArgNames({"cin", "cout", "side", "banded"})
    ->Args({128, 128, 512, 1})
    ->Args({128, 128, 512, 0})
    ->Args({256, 128, 512, 1})
    ->Args({256, 128, 512, 0})
    ->Args({512, 512, 256, 1})
    ->Args({512, 512, 256, 0})
    ->Args({512, 512, 64, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Upsample2D: nearest 2x then a 3x3 conv, fused (range(1) == 1) or materialized.
void BM_op_upsample_conv(benchmark::State& state) {
  const int64_t c = state.range(0), side = state.range(1);
  const bool fused = state.range(2) != 0;
  const Tensor x = randn({1, c, side, side}, 7);
  const diffuse::ops::LinalgWeight w(randn({c, c, 3, 3}, 8, DType::bf16));
  const Tensor b = randn({c}, 9);
  diffuse::ops::Conv2dParams p;
  p.padding = {1, 1};
  const auto run = [&] {
    return fused
               ? diffuse::ops::upsample_nearest2x_conv2d(x, w, b, p, DType::bf16)
               : diffuse::ops::conv2d(diffuse::ops::upsample_nearest(x, 2.0), w, b, p, DType::bf16);
  };
  benchmark::DoNotOptimize(run());
  for (auto _ : state) benchmark::DoNotOptimize(run());
  state.counters["GFLOPS"] = benchmark::Counter(
      2.0 * double(c * c * 9) * double(4 * side * side) * double(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_op_upsample_conv)
    ->ArgNames({"c", "side_in", "fused"})
    ->Args({256, 256, 1})
    ->Args({256, 256, 0})
    ->Args({512, 128, 1})
    ->Args({512, 128, 0})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The mid-block attention's product: one head of 512 channels over the 64x64 latent pixels.
void BM_op_mid_attention(benchmark::State& state) {
  const int64_t l = 64 * 64, c = 512;
  const Tensor q = randn({1, 1, l, c}, 10), k = randn({1, 1, l, c}, 11),
               v = randn({1, 1, l, c}, 12);
  for (auto _ : state) {
    benchmark::DoNotOptimize(diffuse::ops::attention(q, k, v, {}, DType::bf16));
  }
  state.counters["GFLOPS"] = benchmark::Counter(
      4.0 * double(l) * double(l) * double(c) * double(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_op_mid_attention)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  bool tiled = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::stoi(argv[i] + 10);
    } else if (std::strcmp(argv[i], "--tiled") == 0) {
      tiled = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  diffuse::set_num_threads(threads);
  if (tiled) {
    // 2048x2048 (latents 256x256) with enable_tiling: 512-pixel tiles; one timed decode.
    benchmark::RegisterBenchmark("BM_vae_decode_tiled/bf16", BM_vae_decode, DType::bf16, false,
                                 true)
        ->Arg(2048)
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kSecond);
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
