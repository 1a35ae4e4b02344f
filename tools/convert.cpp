// `diffuse convert IN OUT [--dtype f16|bf16|f32]`: any readable checkpoint to safetensors.
//
// Streaming: the output header is built from the source's listing, then tensors are read,
// converted and written one at a time, so memory holds at most one converted tensor (the
// input stays memory-mapped).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "commands.h"
#include "diffuse/diffuse.h"
#include "diffuse/formats/tensor_source.h"

namespace diffuse::cli {
namespace {

void run_convert(const std::string& in, const std::string& out, const std::string& dtype_arg) {
  std::optional<DType> target;
  if (!dtype_arg.empty()) {
    target = parse_dtype(dtype_arg);
    DIFFUSE_CHECK(*target == DType::f32 || *target == DType::f16 || *target == DType::bf16,
                  "convert: --dtype must be f32, f16 or bf16, got '", dtype_arg, "'");
  }
  std::error_code ec;
  DIFFUSE_CHECK(!std::filesystem::equivalent(in, out, ec), "convert: the output '", out,
                "' is the input file; write to another path");
  const auto t0 = std::chrono::steady_clock::now();
  const auto src = open_tensor_source(in);
  std::vector<SafetensorsTensorSpec> specs;
  for (const TensorInfo& t : src->tensors()) {
    // Only floating tensors change type; integer tensors (position ids, counters) keep theirs.
    const DType d = target && is_floating(t.dtype) ? *target : t.dtype;
    specs.push_back({t.name, d, t.shape});
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [k, v] : src->metadata())
    if (v.size() <= 65536) metadata[k] = v;
  if (metadata.find("format") == metadata.end()) metadata["format"] = "pt";
  uint64_t written = 0;
  save_safetensors_streaming(
      out, specs,
      [&](const SafetensorsTensorSpec& s) {
        Tensor t = src->get(s.name, s.dtype);
        written += t.nbytes();
        return t;
      },
      metadata);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s -> %s: %zu tensors, %.1f MiB in %.2f s\n", in.c_str(), out.c_str(), specs.size(),
              static_cast<double>(written) / (1 << 20), secs);
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("convert",
                         "Convert a checkpoint (safetensors, .ckpt/.pt/.bin, GGUF, sharded index, "
                         "component folder) to one safetensors file, streaming");
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>();
  cmd->add_option("input", *in, "checkpoint to read")->required();
  cmd->add_option("output", *out, "safetensors file to write")->required();
  cmd->add_option("--dtype", *dtype, "convert floating tensors to f32, f16 or bf16");
  cmd->callback([in, out, dtype] { run_convert(*in, *out, *dtype); });
}

}  // namespace diffuse::cli
