// `diffuse info PATH [--tensors]`: what a weight file or a diffusers folder holds, and for an
// original Stable Diffusion / SDXL single file the architecture diffusers would detect.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "commands.h"
#include "diffuse/diffuse.h"
#include "diffuse/formats/diffusers.h"
#include "diffuse/formats/tensor_source.h"
#include "diffuse/loaders/single_file.h"

namespace diffuse::cli {
namespace {

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string clip(const std::string& s, std::size_t n) {
  std::string out;
  for (char c : s) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  if (out.size() > n) out = out.substr(0, n) + "...";
  return out;
}

void print_source(const TensorSource& src, bool list_tensors, const std::string& indent) {
  std::printf("%sformat:     %s\n", indent.c_str(), std::string(src.format()).c_str());
  if (!src.metadata().empty()) {
    std::printf("%smetadata:   %zu keys\n", indent.c_str(), src.metadata().size());
    for (const auto& [k, v] : src.metadata())
      std::printf("%s  %s = %s\n", indent.c_str(), clip(k, 60).c_str(), clip(v, 100).c_str());
  }
  std::map<std::string, std::pair<uint64_t, uint64_t>> per_type;  // params, bytes
  uint64_t params = 0, bytes = 0;
  for (const TensorInfo& t : src.tensors()) {
    uint64_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    per_type[t.stored_type].first += n;
    per_type[t.stored_type].second += t.stored_bytes;
    params += n;
    bytes += t.stored_bytes;
  }
  std::printf("%stensors:    %zu\n", indent.c_str(), src.tensors().size());
  std::printf("%sparameters: %llu (%s)\n", indent.c_str(), static_cast<unsigned long long>(params),
              human_bytes(bytes).c_str());
  for (const auto& [type, pb] : per_type)
    std::printf("%s  %-10s %llu parameters, %s\n", indent.c_str(), type.c_str(),
                static_cast<unsigned long long>(pb.first), human_bytes(pb.second).c_str());
  if (list_tensors) {
    for (const TensorInfo& t : src.tensors())
      std::printf("%s  %s  %s  %s\n", indent.c_str(), t.name.c_str(), t.stored_type.c_str(),
                  shape_str(t.shape).c_str());
  }
}

std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// The architecture of an original LDM / SGM single file: what from_single_file would load.
void print_single_file_architecture(const SingleFileSummary& s, const std::string& indent) {
  std::printf("%sarchitecture:    %s (diffusers model type %s)\n", indent.c_str(),
              std::string(single_file_model_type_description(s.type)).c_str(),
              std::string(single_file_model_type_name(s.type)).c_str());
  std::printf("%sprediction type: %s\n", indent.c_str(), s.prediction_type.c_str());
  std::printf("%sloads with:      %s\n", indent.c_str(),
              is_sdxl(s.type) ? "from_single_file_xl (StableDiffusionXLComponents)"
                              : "from_single_file (StableDiffusionComponents)");
  std::printf("%scomponents:\n", indent.c_str());
  for (const SingleFileComponentSummary& c : s.components) {
    std::string types;
    for (const auto& [type, n] : c.parameters_per_type)
      types += (types.empty() ? "" : ", ") +
               (c.parameters_per_type.size() == 1 ? type : type + " " + with_commas(n));
    std::printf("%s  %-15s %-40s %6lld %-7s %15s parameters  %s, %s\n", indent.c_str(),
                c.component.c_str(), c.prefix.empty() ? "(other keys)" : (c.prefix + "*").c_str(),
                static_cast<long long>(c.tensors), c.tensors == 1 ? "tensor" : "tensors",
                with_commas(c.parameters).c_str(), types.c_str(), human_bytes(c.bytes).c_str());
  }
}

void print_component_folder(const std::filesystem::path& folder, bool list_tensors,
                            const std::string& indent) {
  std::error_code ec;
  for (const char* n : {"config.json", "scheduler_config.json", "preprocessor_config.json"})
    if (std::filesystem::is_regular_file(folder / n, ec))
      std::printf("%sconfig:     %s\n", indent.c_str(), n);
  bool has_weights = true;
  WeightFiles w;
  try {
    w = find_weight_files(folder);
  } catch (const Error&) {
    has_weights = false;
  }
  if (has_weights) {
    std::printf("%sweights:    %s%s\n", indent.c_str(),
                (w.index ? w.index->filename().string() : w.files[0].filename().string()).c_str(),
                w.index ? (" (" + std::to_string(w.files.size()) + " shards)").c_str() : "");
    print_source(*open_tensor_source(folder), list_tensors, indent);
  }
  try {
    const TokenizerFiles t = find_tokenizer_files(folder);
    std::string files;
    for (const auto* p : {&t.vocab_json, &t.merges_txt, &t.tokenizer_config_json,
                          &t.special_tokens_map_json, &t.tokenizer_json, &t.spiece_model})
      if (*p) files += (files.empty() ? "" : ", ") + (*p)->filename().string();
    std::printf("%stokenizer:  %s\n", indent.c_str(), files.c_str());
  } catch (const Error&) {
  }
}

void run_info(const std::string& path, bool list_tensors) {
  const std::filesystem::path p(path);
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) {
    if (std::filesystem::is_regular_file(p / "model_index.json", ec)) {
      const auto f = DiffusersPipelineFolder::open(p);
      std::printf("%s: diffusers pipeline %s", path.c_str(), f.index().class_name.c_str());
      if (!f.index().diffusers_version.empty())
        std::printf(" (diffusers %s)", f.index().diffusers_version.c_str());
      std::printf("\n");
      std::string names;
      for (const auto& c : f.index().components) names += (names.empty() ? "" : ", ") + c.name;
      std::printf("  components: %s\n", names.c_str());
      if (!f.index().absent.empty()) {
        std::string absent;
        for (const auto& a : f.index().absent) absent += (absent.empty() ? "" : ", ") + a;
        std::printf("  absent:     %s\n", absent.c_str());
      }
      for (const auto& [k, v] : f.index().options) std::printf("  %s = %s\n", k.c_str(), v.c_str());
      for (const auto& c : f.index().components) {
        std::printf("\n  %s: %s.%s\n", c.name.c_str(), c.library.c_str(), c.class_name.c_str());
        if (!std::filesystem::is_directory(p / c.name, ec)) {
          std::printf("    (folder missing)\n");
          continue;
        }
        print_component_folder(p / c.name, list_tensors, "    ");
      }
      return;
    }
    std::printf("%s: component folder\n", path.c_str());
    print_component_folder(p, list_tensors, "  ");
    return;
  }
  const auto src = open_tensor_source(p);
  std::printf("%s\n", path.c_str());
  if (const auto summary = summarize_single_file(*src))
    print_single_file_architecture(*summary, "  ");
  print_source(*src, list_tensors, "  ");
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "info",
      "Describe a weight file (safetensors, .ckpt/.pt/.bin, GGUF, *.index.json) or a "
      "diffusers folder: format, metadata, tensors, parameters per dtype; the architecture of "
      "SD 1.x / 2.x / XL single files");
  auto path = std::make_shared<std::string>();
  auto tensors = std::make_shared<bool>(false);
  cmd->add_option("path", *path, "file or folder")->required();
  cmd->add_flag("--tensors", *tensors, "list every tensor (name, stored type, shape)");
  cmd->callback([path, tensors] { run_info(*path, *tensors); });
}

}  // namespace diffuse::cli
