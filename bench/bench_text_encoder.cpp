// Tokenizing + encoding one prompt with a ViT-L/14-shaped CLIPTextModel (SD 1.x's text encoder:
// hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 49408, random weights), in f32 and
// bf16 compute, next to a large oneDNN GEMM measured in the same run (the roofline). Reports
// seconds per prompt, GFLOP/s (the encoder's FLOPs counted from its config) and the fraction of
// the GEMM roofline of the compute dtype.
//
//   bench_text_encoder [--threads=N] [google benchmark flags]     (default: 2 threads)
//
// The tokenizer is the real CLIP one from shared/assets/clip-tokenizer when present, else the
// tiny reference pipeline's (shared/reference/base/tiny/pipeline/tokenizer); DIFFUSE_SHARED_DIR
// in the environment overrides the shared folder.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "diffuse/core/threads.h"
#include "diffuse/formats/tensor_source.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/clip_text_model.h"
#include "diffuse/ops.h"
#include "diffuse/pipelines/prompt_weighting.h"

namespace {

namespace fs = std::filesystem;
using diffuse::DType;
using diffuse::Tensor;

double g_roof_f32 = 0.0;   // GFLOP/s of the f32 GEMM roofline
double g_roof_bf16 = 0.0;  // GFLOP/s of the bf16 GEMM roofline

// A typical SD prompt with emphasis (one 77-token chunk with the real vocabulary).
constexpr const char* kPrompt =
    "a (photograph:1.2) of an astronaut riding a horse on mars, highly detailed, "
    "sharp focus, ((dramatic lighting)), 8k, [blurry]";

fs::path shared_dir() {
  if (const char* env = std::getenv("DIFFUSE_SHARED_DIR")) return env;
  return DIFFUSE_SHARED_DIR;
}

const diffuse::ClipTokenizer* tokenizer() {
  static const std::unique_ptr<diffuse::ClipTokenizer> tok = [] {
    for (const fs::path& dir :
         {shared_dir() / "assets" / "clip-tokenizer",
          shared_dir() / "reference" / "base" / "tiny" / "pipeline" / "tokenizer"}) {
      if (fs::exists(dir / "vocab.json")) {
        benchmark::AddCustomContext("tokenizer", dir.string());
        return std::make_unique<diffuse::ClipTokenizer>(diffuse::ClipTokenizer::from_folder(dir));
      }
    }
    return std::unique_ptr<diffuse::ClipTokenizer>();
  }();
  return tok.get();
}

// OpenAI CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14 config.json text_config).
diffuse::CLIPTextConfig vit_l14() {
  diffuse::CLIPTextConfig c;
  c.vocab_size = 49408;
  c.hidden_size = 768;
  c.intermediate_size = 3072;
  c.projection_dim = 768;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.max_position_embeddings = 77;
  c.hidden_act = "quick_gelu";
  return c;
}

const diffuse::CLIPTextModel& encoder(DType compute) {
  static std::unique_ptr<diffuse::CLIPTextModel> models[2];
  auto& m = models[compute == DType::bf16 ? 1 : 0];
  if (!m) {
    // f32 weights (ModelOptions' default weight_dtype); bf16 compute converts them once, when the
    // first forward reorders them for oneDNN (excluded from the timings by the warm-up call).
    diffuse::WeightLoader w(std::make_shared<diffuse::RandomTensorSource>(42), DType::f32);
    m = std::make_unique<diffuse::CLIPTextModel>(vit_l14(), w, compute);
  }
  return *m;
}

// FLOPs of one forward over `tokens` positions (multiply-add = 2): per layer the q, k, v and out
// projections (4 * 2 L h^2), fc1 + fc2 (2 * 2 L h I) and attention scores + weighted sum
// (2 * 2 L^2 h, per 77-token sequence). Embeddings, norms and activations are negligible.
double encoder_flops(const diffuse::CLIPTextConfig& c, double sequences) {
  const double l = static_cast<double>(c.max_position_embeddings);
  const auto h = static_cast<double>(c.hidden_size), i = static_cast<double>(c.intermediate_size);
  const double per_layer = 8.0 * l * h * h + 4.0 * l * h * i + 4.0 * l * l * h;
  return sequences * static_cast<double>(c.num_hidden_layers) * per_layer;
}

// Runs `fn` under the benchmark loop (wall clock: the work is parallel) and reports seconds per
// call, GFLOP/s and the fraction of the roofline of `compute` when one was measured.
template <typename Fn>
void run_timed(benchmark::State& state, double flops, DType compute, Fn fn) {
  fn();  // warm-up: oneDNN primitive creation and weight reorders are one-time costs
  double seconds = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++iters;
  }
  state.counters["s_per_call"] = seconds / static_cast<double>(iters);
  if (flops <= 0) return;
  const double gflops = flops * static_cast<double>(iters) / seconds * 1e-9;
  state.counters["GFLOPS"] = gflops;
  const double roof = compute == DType::bf16 ? g_roof_bf16 : g_roof_f32;
  if (roof > 0) state.counters["of_roofline"] = gflops / roof;
}

// --- Roofline: a large GEMM of the compute dtype ------------------------------------------------

void BM_roofline_gemm(benchmark::State& state, DType dtype) {
  const int64_t n = state.range(0);
  std::mt19937 gen(1234);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(n * n));
  for (float& e : v) e = dist(gen);
  const Tensor a = Tensor::from_vector(v, {n, n}, dtype), b = Tensor::from_vector(v, {n, n}, dtype);
  run_timed(state, 2.0 * static_cast<double>(n * n * n), dtype,
            [&] { benchmark::DoNotOptimize(diffuse::ops::matmul(a, b, dtype)); });
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

// --- Tokenizing alone ---------------------------------------------------------------------------

void BM_tokenize(benchmark::State& state) {
  const diffuse::ClipTokenizer* tok = tokenizer();
  if (tok == nullptr) {
    state.SkipWithError("no CLIP tokenizer under shared/assets or shared/reference");
    return;
  }
  // Parse + chunk as encode_weighted_prompt does. The tokenizer caches BPE merges per word, so
  // after the first call this is the steady-state cost of a repeated prompt.
  run_timed(state, 0, DType::f32,
            [&] { benchmark::DoNotOptimize(diffuse::tokenize_prompt_chunks(*tok, kPrompt)); });
}
BENCHMARK(BM_tokenize)->UseRealTime()->Unit(benchmark::kMicrosecond);

// --- Tokenizing + encoding one prompt -----------------------------------------------------------

// range(0): chunks (1: the prompt above; 3: the prompt repeated to ~200 tokens).
void BM_encode_prompt(benchmark::State& state, DType compute) {
  const diffuse::ClipTokenizer* tok = tokenizer();
  if (tok == nullptr) {
    state.SkipWithError("no CLIP tokenizer under shared/assets or shared/reference");
    return;
  }
  const diffuse::CLIPTextModel& model = encoder(compute);
  std::string prompt = kPrompt;
  const int64_t want = state.range(0);
  while (diffuse::count_prompt_chunks(*tok, prompt) < want) prompt += std::string(", ") + kPrompt;
  const int64_t chunks = diffuse::count_prompt_chunks(*tok, prompt);
  state.counters["chunks"] = static_cast<double>(chunks);
  run_timed(state, encoder_flops(model.config(), static_cast<double>(chunks)), compute, [&] {
    benchmark::DoNotOptimize(diffuse::encode_weighted_prompt(*tok, model, prompt, std::nullopt));
  });
}
BENCHMARK_CAPTURE(BM_encode_prompt, f32, DType::f32)
    ->Arg(1)
    ->Arg(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_encode_prompt, bf16, DType::bf16)
    ->Arg(1)
    ->Arg(3)
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
