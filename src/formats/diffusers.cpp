#include "diffuse/formats/diffusers.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "json_util.h"

namespace diffuse {
namespace {

bool plain_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

bool is_file(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

std::string read_text(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  DIFFUSE_CHECK(!ec, "cannot read '", path.string(), "': ", ec.message());
  // model_index.json files are a few hundred bytes; 16 MB leaves room for anything real.
  DIFFUSE_CHECK(size <= (16u << 20), path.string(), ": ", size, " bytes is too large for a config");
  std::ifstream in(path, std::ios::binary);
  std::string s(size, '\0');
  in.read(s.data(), static_cast<std::streamsize>(size));
  DIFFUSE_CHECK(in.gcount() == static_cast<std::streamsize>(size), "short read from '",
                path.string(), "'");
  return s;
}

}  // namespace

ModelIndex parse_model_index(std::string_view json, const std::string& where) {
  detail::check_json_depth(json, where);
  // ordered_json: components keep the file order.
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(json.begin(), json.end());
  } catch (const nlohmann::json::exception& e) {
    DIFFUSE_FAIL(where, ": not valid JSON: ", e.what());
  }
  DIFFUSE_CHECK(j.is_object(), where, ": expected a JSON object");
  ModelIndex m;
  DIFFUSE_CHECK(j.contains("_class_name") && j["_class_name"].is_string(), where,
                ": \"_class_name\" (the pipeline class) is missing or not a string");
  m.class_name = j["_class_name"].get<std::string>();
  if (j.contains("_diffusers_version") && j["_diffusers_version"].is_string())
    m.diffusers_version = j["_diffusers_version"].get<std::string>();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key.starts_with("_")) continue;
    const nlohmann::ordered_json& v = it.value();
    const bool pair = v.is_array() && v.size() == 2 && (v[0].is_string() || v[0].is_null()) &&
                      (v[1].is_string() || v[1].is_null());
    if (!pair) {
      DIFFUSE_CHECK(!v.is_array(), where, ": component '", key,
                    "' must be [library, class] (two strings, or [null, null]), got ", v.dump());
      m.options[key] = v.dump();
      continue;
    }
    if (v[0].is_null() || v[1].is_null()) {
      DIFFUSE_CHECK(v[0].is_null() && v[1].is_null(), where, ": component '", key,
                    "' has only one of library and class: ", v.dump());
      m.absent.push_back(key);
      continue;
    }
    DIFFUSE_CHECK(plain_name(key), where, ": component name '", key,
                  "' is not a plain folder name");
    m.components.push_back({key, v[0].get<std::string>(), v[1].get<std::string>()});
  }
  return m;
}

std::string add_variant(std::string_view weights_name, std::string_view variant) {
  if (variant.empty()) return std::string(weights_name);
  const auto dot = weights_name.rfind('.');
  if (dot == std::string_view::npos) return std::string(variant) + "." + std::string(weights_name);
  return std::string(weights_name.substr(0, dot)) + "." + std::string(variant) +
         std::string(weights_name.substr(dot));
}

WeightFiles find_weight_files(const std::filesystem::path& folder, std::string_view variant) {
  // diffusers constants: SAFETENSORS_WEIGHTS_NAME / WEIGHTS_NAME (+ ".index.json" for shards);
  // transformers: model.safetensors / pytorch_model.bin.
  static const char* kSafetensors[] = {"diffusion_pytorch_model.safetensors", "model.safetensors"};
  static const char* kBin[] = {"diffusion_pytorch_model.bin", "pytorch_model.bin"};
  std::vector<std::string> tried;
  for (int pass = 0; pass < 2; ++pass) {
    const auto& names = pass == 0 ? kSafetensors : kBin;
    for (const char* base : names) {
      const std::string idx = add_variant(std::string(base) + ".index.json", variant);
      tried.push_back(idx);
      if (is_file(folder / idx)) {
        WeightFiles w;
        w.index = folder / idx;
        w.safetensors = pass == 0;
        const auto map = parse_weight_index(read_text(folder / idx), (folder / idx).string());
        for (const auto& [name, shard] : map) {
          const auto p = folder / shard;
          if (std::find(w.files.begin(), w.files.end(), p) == w.files.end()) w.files.push_back(p);
        }
        return w;
      }
    }
    for (const char* base : names) {
      const std::string f = add_variant(base, variant);
      tried.push_back(f);
      if (is_file(folder / f)) {
        WeightFiles w;
        w.files.push_back(folder / f);
        w.safetensors = pass == 0;
        return w;
      }
    }
  }
  std::string list;
  for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  DIFFUSE_FAIL("no weights in '", folder.string(), "'",
               variant.empty() ? std::string() : " for variant '" + std::string(variant) + "'",
               " (looked for ", list, ")");
}

std::filesystem::path find_config_file(const std::filesystem::path& folder) {
  for (const char* n : {"config.json", "scheduler_config.json", "preprocessor_config.json"})
    if (is_file(folder / n)) return folder / n;
  DIFFUSE_FAIL("'", folder.string(),
               "' has no config.json, scheduler_config.json or preprocessor_config.json");
}

TokenizerFiles find_tokenizer_files(const std::filesystem::path& folder) {
  TokenizerFiles t;
  t.folder = folder;
  const auto opt = [&](const char* n) -> std::optional<std::filesystem::path> {
    if (is_file(folder / n)) return folder / n;
    return std::nullopt;
  };
  t.vocab_json = opt("vocab.json");
  t.merges_txt = opt("merges.txt");
  t.tokenizer_config_json = opt("tokenizer_config.json");
  t.special_tokens_map_json = opt("special_tokens_map.json");
  t.tokenizer_json = opt("tokenizer.json");
  t.spiece_model = opt("spiece.model");
  DIFFUSE_CHECK((t.vocab_json && t.merges_txt) || t.spiece_model || t.tokenizer_json, "'",
                folder.string(),
                "' is not a tokenizer folder: expected vocab.json + merges.txt (CLIP), "
                "spiece.model (T5) or tokenizer.json");
  return t;
}

DiffusersPipelineFolder DiffusersPipelineFolder::open(const std::filesystem::path& root) {
  const auto index = root / "model_index.json";
  DIFFUSE_CHECK(is_file(index), "'", root.string(),
                "' is not a diffusers pipeline folder: it has no model_index.json");
  DiffusersPipelineFolder f;
  f.root_ = root;
  f.index_ = parse_model_index(read_text(index), index.string());
  return f;
}

const DiffusersComponent* DiffusersPipelineFolder::find(std::string_view name) const {
  for (const auto& c : index_.components)
    if (c.name == name) return &c;
  return nullptr;
}

const DiffusersComponent& DiffusersPipelineFolder::component(std::string_view name) const {
  if (const auto* c = find(name)) return *c;
  std::string have;
  for (const auto& c : index_.components) have += (have.empty() ? "" : ", ") + c.name;
  DIFFUSE_FAIL(root_.string(), ": the ", index_.class_name, " has no component '", name,
               "' (it has: ", have, ")");
}

std::filesystem::path DiffusersPipelineFolder::folder(std::string_view name) const {
  const auto p = root_ / component(name).name;
  std::error_code ec;
  DIFFUSE_CHECK(std::filesystem::is_directory(p, ec), root_.string(), ": component '", name,
                "' is listed in model_index.json but its folder ", p.string(), " is missing");
  return p;
}

std::filesystem::path DiffusersPipelineFolder::config_path(std::string_view name) const {
  return find_config_file(folder(name));
}

WeightFiles DiffusersPipelineFolder::weight_files(std::string_view name,
                                                  std::string_view variant) const {
  return find_weight_files(folder(name), variant);
}

std::shared_ptr<TensorSource> DiffusersPipelineFolder::open_weights(
    std::string_view name, std::string_view variant) const {
  return open_tensor_source(folder(name), variant);
}

TokenizerFiles DiffusersPipelineFolder::tokenizer_files(std::string_view name) const {
  return find_tokenizer_files(folder(name));
}

}  // namespace diffuse
