// `diffuse random-weights CONFIG_OR_FOLDER OUT [--seed N] [--dtype f32|f16|bf16]`: random
// weights of the right names and shapes for a diffusers config (a model's config.json, a model
// folder, or a whole pipeline folder with model_index.json), for tests and smoke runs of an
// architecture without its real weights.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "commands.h"
#include "diffuse/diffuse.h"
#include "diffuse/loaders/random_weights.h"

namespace diffuse::cli {

void add_random_weights_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "random-weights",
      "Write random weights for a diffusers config.json, model folder or pipeline folder");
  struct Args {
    std::string in, out, dtype = "f32";
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option(
         "CONFIG_OR_FOLDER", args->in,
         "config.json, a model folder holding one, or a pipeline folder (model_index.json)")
      ->required();
  cmd->add_option("OUT", args->out,
                  "output folder (or a .safetensors file for a single model config)")
      ->required();
  cmd->add_option("--seed", args->seed, "random seed (the same seed gives the same file)");
  cmd->add_option("--dtype", args->dtype, "weight dtype: f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->callback([args] {
    RandomWeightsOptions o;
    o.seed = args->seed;
    o.dtype = parse_dtype(args->dtype);
    const auto t0 = std::chrono::steady_clock::now();
    const auto files = write_random_weights(args->in, args->out, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& f : files) {
      std::error_code ec;
      const auto bytes = std::filesystem::file_size(f, ec);
      std::printf("wrote %s (%.1f MB)\n", f.string().c_str(),
                  ec ? 0.0 : static_cast<double>(bytes) / 1e6);
    }
    std::printf("%zu weight file(s) in %.2f s\n", files.size(), s);
  });
}

}  // namespace diffuse::cli
