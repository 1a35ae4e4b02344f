// Stable Diffusion 1.5 at 512x512 with classifier-free guidance, random weights: one denoising
// step (a UNet2DConditionModel forward on the CFG batch of 2) and the VAE decode, in bf16 and
// f32 compute, next to a large GEMM of the compute dtype measured in the same run (the
// roofline). Reports seconds per step, the UNet's GFLOP/s (FLOPs counted from its config), the
// fraction of the roofline, peak RSS after building the model and after a step, and the
// weights' size in the compute dtype. See docs/benchmarks.md.
//
//   bench_unet [--threads=N] [--tiled] [google benchmark flags]     (default: 2 threads)
//
// --tiled adds the 2048x2048 tiled VAE decode (minutes per iteration on 2 cores). The configs
// are the real runwayml/stable-diffusion-v1-5 ones from shared/assets/model-configs when
// present (DIFFUSE_SHARED_DIR in the environment overrides the shared folder), else the same
// values built in.
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
#include <string_view>
#include <vector>

#include "diffuse/core/error.h"
#include "diffuse/core/generator.h"
#include "diffuse/core/threads.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/tensor_source.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/models/unet_2d_condition.h"
#include "diffuse/ops.h"

namespace {

namespace fs = std::filesystem;
using diffuse::DType;
using diffuse::Tensor;

constexpr int64_t kBatch = 2;    // CFG: unconditional + conditional in one UNet call
constexpr int64_t kLatent = 64;  // 512 / 8
constexpr int64_t kTextTokens = 77;

double g_roof_f32 = 0.0;   // GFLOP/s of the f32 GEMM roofline
double g_roof_bf16 = 0.0;  // GFLOP/s of the bf16 GEMM roofline

fs::path shared_dir() {
  if (const char* env = std::getenv("DIFFUSE_SHARED_DIR")) return env;
  return DIFFUSE_SHARED_DIR;
}

fs::path sd15_dir() {
  return shared_dir() / "assets" / "model-configs" / "runwayml" / "stable-diffusion-v1-5";
}

// runwayml/stable-diffusion-v1-5 unet/config.json, used when the asset is absent.
nlohmann::json sd15_unet_json() {
  const fs::path file = sd15_dir() / "unet" / "config.json";
  if (fs::exists(file)) return diffuse::read_json_file(file);
  return {{"act_fn", "silu"},
          {"attention_head_dim", 8},
          {"block_out_channels", {320, 640, 1280, 1280}},
          {"center_input_sample", false},
          {"cross_attention_dim", 768},
          {"down_block_types",
           {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
          {"downsample_padding", 1},
          {"flip_sin_to_cos", true},
          {"freq_shift", 0},
          {"in_channels", 4},
          {"layers_per_block", 2},
          {"mid_block_scale_factor", 1},
          {"norm_eps", 1e-05},
          {"norm_num_groups", 32},
          {"out_channels", 4},
          {"sample_size", 64},
          {"up_block_types",
           {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}}};
}

// runwayml/stable-diffusion-v1-5 vae/config.json, used when the asset is absent.
nlohmann::json sd15_vae_json() {
  const fs::path file = sd15_dir() / "vae" / "config.json";
  if (fs::exists(file)) return diffuse::read_json_file(file);
  const std::vector<std::string> down(4, "DownEncoderBlock2D"), up(4, "UpDecoderBlock2D");
  return {{"act_fn", "silu"},         {"block_out_channels", {128, 256, 512, 512}},
          {"down_block_types", down}, {"in_channels", 3},
          {"latent_channels", 4},     {"layers_per_block", 2},
          {"norm_num_groups", 32},    {"out_channels", 3},
          {"sample_size", 512},       {"up_block_types", up}};
}

// Peak resident set size of the process (VmHWM) in MB, or -1 when /proc is unreadable.
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  }
  return -1.0;
}

// Resets VmHWM to the current RSS (Linux >= 4.0), so that each model's peak is its own.
void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
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
    DIFFUSE_FAIL("bench_unet: CountingRandomSource lists no tensors, asked for ", info.name);
  }

 private:
  diffuse::RandomTensorSource inner_;
  mutable std::atomic<int64_t> elements_{0};
};

// --- FLOPs of a UNet2DConditionModel forward, walked as diffusers builds it ---------------------
//
// Multiply-add = 2 FLOPs; only convolutions, linear layers and attention products are counted
// (norms, activations, residual adds and softmax are a fraction of a percent). Attention is
// 4 * B * heads * Lq * Lk * d (scores and weighted sum) with heads * d = channels.
struct UNetFlops {
  int64_t batch;
  int64_t tokens;  // encoder_hidden_states length
  int64_t temb;    // time embedding dim
  double total = 0.0;

  void conv(int64_t cin, int64_t cout, int64_t k, int64_t hout, int64_t wout) {
    total += 2.0 * double(cin) * double(cout) * double(k * k) * double(hout * wout) * double(batch);
  }
  void linear(int64_t in, int64_t out, int64_t rows) {
    total += 2.0 * double(in) * double(out) * double(rows);
  }
  void attention(int64_t channels, int64_t lq, int64_t lk) {
    total += 4.0 * double(batch) * double(lq) * double(lk) * double(channels);
  }
  // ResnetBlock2D: conv1, time_emb_proj, conv2, 1x1 conv_shortcut when channels change.
  void resnet(int64_t cin, int64_t cout, int64_t h, int64_t w) {
    conv(cin, cout, 3, h, w);
    linear(temb, cout, batch);
    conv(cout, cout, 3, h, w);
    if (cin != cout) conv(cin, cout, 1, h, w);
  }
  // Transformer2DModel: proj_in, `layers` BasicTransformerBlocks (self-attention,
  // cross-attention, GEGLU feed-forward with inner dim 4c), proj_out. A 1x1 conv and a linear
  // projection cost the same.
  void transformer(int64_t c, int64_t layers, int64_t cross_dim, int64_t h, int64_t w) {
    const int64_t l = h * w, rows = batch * l;
    linear(c, c, rows);  // proj_in
    for (int64_t i = 0; i < layers; ++i) {
      linear(c, c, rows * 3);  // attn1 q, k, v
      attention(c, l, l);
      linear(c, c, rows);                        // attn1 out
      linear(c, c, rows);                        // attn2 q
      linear(cross_dim, c, batch * tokens * 2);  // attn2 k, v
      attention(c, l, tokens);
      linear(c, c, rows);      // attn2 out
      linear(c, 8 * c, rows);  // GEGLU proj (value and gate)
      linear(4 * c, c, rows);  // ff out
    }
    linear(c, c, rows);  // proj_out
  }
};

int64_t json_at(const nlohmann::json& v, std::size_t i) {
  if (v.is_array()) return v.at(i).get<int64_t>();
  return v.get<int64_t>();
}

double unet_flops(const diffuse::UNet2DConditionConfig& c, int64_t batch, int64_t h, int64_t w,
                  int64_t tokens) {
  const auto& ch = c.block_out_channels;
  const std::size_t n = ch.size();
  const int64_t temb = c.time_embedding_dim.value_or(4 * ch[0]);
  UNetFlops f{batch, tokens, temb};
  f.linear(ch[0], temb, batch);  // time_embedding.linear_1
  f.linear(temb, temb, batch);   // time_embedding.linear_2
  f.conv(c.in_channels, ch[0], c.conv_in_kernel, h, w);

  const nlohmann::json& tl = c.transformer_layers_per_block;
  DIFFUSE_CHECK(
      tl.is_number_integer() || (tl.is_array() && tl.size() == n && tl.at(0).is_number_integer()),
      "bench_unet: transformer_layers_per_block must be an int or a flat list of ", n);
  DIFFUSE_CHECK(c.reverse_transformer_layers_per_block.is_null(),
                "bench_unet: reverse_transformer_layers_per_block is not counted");
  const auto cross = [&](std::size_t i) {
    return c.cross_attention_dim.at(i, n, "cross_attention_dim");
  };
  const auto cross_block = [](const std::string& type) { return type.rfind("CrossAttn", 0) == 0; };

  // Down blocks: layers_per_block resnets (+ transformers), then a stride-2 conv.
  std::vector<int64_t> skips = {ch[0]};
  int64_t cur = ch[0];
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t layers = c.layers_per_block.at(i, n, "layers_per_block");
    for (int64_t j = 0; j < layers; ++j) {
      f.resnet(cur, ch[i], h, w);
      cur = ch[i];
      if (cross_block(c.down_block_types[i])) f.transformer(cur, json_at(tl, i), cross(i), h, w);
      skips.push_back(cur);
    }
    if (i + 1 < n) {
      h /= 2;
      w /= 2;
      f.conv(cur, cur, 3, h, w);
      skips.push_back(cur);
    }
  }

  // Mid block: resnet, then (transformer, resnet) per layer.
  if (c.mid_block_type) {
    DIFFUSE_CHECK(*c.mid_block_type == "UNetMidBlock2DCrossAttn", "bench_unet: mid block ",
                  *c.mid_block_type, " is not counted");
    f.resnet(cur, cur, h, w);
    f.transformer(cur, json_at(tl, n - 1), cross(n - 1), h, w);
    f.resnet(cur, cur, h, w);
  }

  // Up blocks: layers_per_block + 1 resnets on the concatenated skips, then nearest x2 + conv.
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t down = n - 1 - i;
    const int64_t out = ch[down];
    const int64_t layers = c.layers_per_block.at(down, n, "layers_per_block") + 1;
    for (int64_t j = 0; j < layers; ++j) {
      const int64_t skip = skips.back();
      skips.pop_back();
      f.resnet(cur + skip, out, h, w);
      cur = out;
      if (cross_block(c.up_block_types[i])) {
        f.transformer(cur, json_at(tl, down), cross(down), h, w);
      }
    }
    if (i + 1 < n) {
      h *= 2;
      w *= 2;
      f.conv(cur, cur, 3, h, w);
    }
  }
  f.conv(cur, c.out_channels, c.conv_out_kernel, h, w);
  return f.total;
}

// Seconds of each call of `fn` under the benchmark loop (wall clock: the work is parallel).
template <typename Fn>
double run_timed(benchmark::State& state, Fn fn) {
  double seconds = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++iters;
  }
  return iters > 0 ? seconds / double(iters) : 0.0;
}

// --- Roofline: a large GEMM of the compute dtype ------------------------------------------------
// 2048^3 takes ~0.2 s in bf16 on 2 cores; MinTime(1) averages several over about a second.

void BM_roofline_gemm(benchmark::State& state, DType dtype) {
  const int64_t n = state.range(0);
  std::mt19937 gen(1234);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(n * n));
  for (float& e : v) e = dist(gen);
  const Tensor a = Tensor::from_vector(v, {n, n}, dtype), b = Tensor::from_vector(v, {n, n}, dtype);
  benchmark::DoNotOptimize(diffuse::ops::matmul(a, b, dtype));  // warm-up (primitive creation)
  const double s =
      run_timed(state, [&] { benchmark::DoNotOptimize(diffuse::ops::matmul(a, b, dtype)); });
  const double gflops = 2.0 * double(n) * double(n) * double(n) / s * 1e-9;
  (dtype == DType::bf16 ? g_roof_bf16 : g_roof_f32) = gflops;
  state.counters["GFLOPS"] = gflops;
}
BENCHMARK_CAPTURE(BM_roofline_gemm, bf16, DType::bf16)
    ->Arg(2048)
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_roofline_gemm, f32, DType::f32)
    ->Arg(2048)
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// --- One denoising step: the UNet on the CFG batch ----------------------------------------------

void BM_unet_step(benchmark::State& state, DType compute) {
  const diffuse::UNet2DConditionConfig config =
      diffuse::UNet2DConditionConfig::from_json(sd15_unet_json());
  reset_peak_rss();
  const double rss_before = peak_rss_mb();
  // Weights kept in the compute dtype, as a checkpoint of that dtype would be.
  auto source = std::make_shared<CountingRandomSource>();
  const diffuse::UNet2DConditionModel unet(config, diffuse::WeightLoader(source, compute), compute);
  const double rss_built = peak_rss_mb();

  diffuse::Generator gen(7);
  const Tensor sample = gen.randn({kBatch, config.in_channels, kLatent, kLatent});
  const int64_t cross_dim = config.cross_attention_dim.values.at(0);
  const Tensor text = gen.randn({kBatch, kTextTokens, cross_dim});
  const Tensor t = Tensor::from_vector<int64_t>({981}, {});
  // Warm-up step: oneDNN primitive creation and weight reorders are one-time costs.
  benchmark::DoNotOptimize(unet.forward(sample, t, text));
  const double rss_step = peak_rss_mb();

  const double s =
      run_timed(state, [&] { benchmark::DoNotOptimize(unet.forward(sample, t, text)); });
  const double flops = unet_flops(config, kBatch, kLatent, kLatent, kTextTokens);
  const double gflops = flops / s * 1e-9;
  const double roof = compute == DType::bf16 ? g_roof_bf16 : g_roof_f32;
  state.counters["s_per_step"] = s;
  state.counters["GFLOP_per_step"] = flops * 1e-9;
  state.counters["GFLOPS"] = gflops;
  if (roof > 0) state.counters["fraction_of_roofline"] = gflops / roof;
  state.counters["weights_mb"] =
      double(source->elements()) * double(diffuse::dtype_size(compute)) / (1024.0 * 1024.0);
  state.counters["rss_before_mb"] = rss_before;
  state.counters["peak_rss_mb_built"] = rss_built;
  state.counters["peak_rss_mb_step"] = rss_step;
}
BENCHMARK_CAPTURE(BM_unet_step, bf16, DType::bf16)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);
BENCHMARK_CAPTURE(BM_unet_step, f32, DType::f32)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

// --- VAE decode ---------------------------------------------------------------------------------

// range(0): image side in pixels; `tiled`: diffusers enable_tiling (512-pixel tiles).
void BM_vae_decode(benchmark::State& state, DType compute, bool tiled) {
  const diffuse::AutoencoderKLConfig config =
      diffuse::AutoencoderKLConfig::from_json(sd15_vae_json());
  reset_peak_rss();
  auto source = std::make_shared<CountingRandomSource>();
  diffuse::AutoencoderKL vae(config, diffuse::WeightLoader(source, compute), compute);
  vae.enable_tiling(tiled);
  const int64_t side = state.range(0) / vae.scale_factor();
  diffuse::Generator gen(11);
  const Tensor latents = gen.randn({1, config.latent_channels, side, side});
  const double s = run_timed(state, [&] { benchmark::DoNotOptimize(vae.decode(latents)); });
  state.counters["s_per_decode"] = s;
  state.counters["weights_mb"] =
      double(source->elements()) * double(diffuse::dtype_size(compute)) / (1024.0 * 1024.0);
  state.counters["peak_rss_mb"] = peak_rss_mb();
}
BENCHMARK_CAPTURE(BM_vae_decode, bf16, DType::bf16, false)
    ->Arg(512)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);
BENCHMARK_CAPTURE(BM_vae_decode, f32, DType::f32, false)
    ->Arg(512)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

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
    // 2048x2048 (latents 256x256): 36 overlapping 512-pixel tiles (6 x 6); one iteration.
    for (DType dtype : {DType::bf16, DType::f32}) {
      benchmark::RegisterBenchmark(
          dtype == DType::bf16 ? "BM_vae_decode_tiled/bf16" : "BM_vae_decode_tiled/f32",
          [dtype](benchmark::State& state) { BM_vae_decode(state, dtype, true); })
          ->Arg(2048)
          ->Iterations(1)
          ->UseRealTime()
          ->Unit(benchmark::kSecond);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("configs", fs::exists(sd15_dir() / "unet" / "config.json")
                                             ? sd15_dir().string()
                                             : "built-in SD 1.5 values");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
