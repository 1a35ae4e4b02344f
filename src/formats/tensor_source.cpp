#include "diffuse/formats/tensor_source.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "diffuse/core/generator.h"
#include "diffuse/formats/diffusers.h"
#include "diffuse/formats/gguf.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/formats/torch.h"

#include "json_util.h"

namespace diffuse {

// --- TensorSource -----------------------------------------------------------------------------

const TensorInfo* TensorSource::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &infos_[it->second];
}

const TensorInfo& TensorSource::info(std::string_view name) const {
  const TensorInfo* i = find(name);
  DIFFUSE_CHECK(i != nullptr, path_, ": no tensor named '", name, "' (the ", format(),
                " source holds ", infos_.size(), " tensors)");
  return *i;
}

Tensor TensorSource::get(std::string_view name) const {
  return load(info(name));
}

Tensor TensorSource::get(std::string_view name, DType dtype) const {
  return load_as(info(name), dtype);
}

Tensor TensorSource::load_as(const TensorInfo& info, DType dtype) const {
  return load(info).to(dtype);
}

std::optional<Tensor> TensorSource::synthesize(std::string_view, const Shape&, DType) const {
  return std::nullopt;
}

void TensorSource::add(TensorInfo info) {
  DIFFUSE_CHECK(index_.find(info.name) == index_.end(), path_, ": tensor '", info.name,
                "' appears twice");
  index_.emplace(info.name, infos_.size());
  infos_.push_back(std::move(info));
}

// --- MemoryTensorSource -----------------------------------------------------------------------

void MemoryTensorSource::insert(const std::string& name, Tensor tensor) {
  DIFFUSE_CHECK(tensor.defined(), path_, ": tensor '", name, "' is undefined");
  TensorInfo i;
  i.name = name;
  i.dtype = tensor.dtype();
  i.shape = tensor.shape();
  i.stored_type = std::string(dtype_name(tensor.dtype()));
  i.stored_bytes = tensor.nbytes();
  i.file = path_;
  add(std::move(i));
  tensors_.emplace(name, std::move(tensor));
}

Tensor MemoryTensorSource::load(const TensorInfo& info) const {
  return tensors_.find(info.name)->second;
}

// --- RandomTensorSource -----------------------------------------------------------------------

RandomTensorSource::RandomTensorSource(uint64_t seed, double std)
    : TensorSource("random(seed=" + std::to_string(seed) + ")"), seed_(seed), std_(std) {}

std::optional<Tensor> RandomTensorSource::synthesize(std::string_view name, const Shape& shape,
                                                     DType dtype) const {
  const auto ends_with = [&](std::string_view s) {
    return name.size() >= s.size() && name.substr(name.size() - s.size()) == s;
  };
  if (!is_floating(dtype)) return Tensor::zeros(shape, dtype);
  if (ends_with("bias")) return Tensor::zeros(shape, dtype);
  if (name.find("norm") != std::string_view::npos && ends_with("weight"))
    return Tensor::full(shape, 1.0, dtype);
  // FNV-1a of the name: stable across runs and platforms (std::hash is not).
  uint64_t h = 1469598103934665603ull;
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  const uint64_t key = seed_ ^ h;
  // Counter-based normals: element pair j is Box-Muller of the two 32-bit halves of
  // splitmix64(key + j), so values depend only on (seed, name, index) and fill in parallel
  // (production-size models have billions of weights).
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.data<float>();
  const int64_t n = t.numel();
  const auto scale = static_cast<float>(std_);
  const int64_t pairs = (n + 1) / 2;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < pairs; ++j) {
    uint64_t z = key + static_cast<uint64_t>(j) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    // u1 in (0, 1] (log-safe), u2 in [0, 1).
    const float u1 = (static_cast<float>(z >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((z >> 8) & 0xffffffu) * (1.0f / 16777216.0f);
    const float r = std::sqrt(-2.0f * std::log(u1)) * scale;
    const float a = 6.28318530717958647692f * u2;
    p[2 * j] = r * std::cos(a);
    if (2 * j + 1 < n) p[2 * j + 1] = r * std::sin(a);
  }
  return t.to(dtype);
}

Tensor RandomTensorSource::load(const TensorInfo& info) const {
  DIFFUSE_FAIL(path_, ": no tensor named '", info.name, "'");
}

// --- CombinedTensorSource ---------------------------------------------------------------------

CombinedTensorSource::CombinedTensorSource(std::string description, std::string format,
                                           std::vector<std::shared_ptr<TensorSource>> parts)
    : TensorSource(std::move(description)), format_(std::move(format)), parts_(std::move(parts)) {
  for (std::size_t p = 0; p < parts_.size(); ++p) {
    for (const TensorInfo& i : parts_[p]->tensors()) {
      const auto it = owner_.find(i.name);
      DIFFUSE_CHECK(it == owner_.end(), path_, ": tensor '", i.name, "' is in both ",
                    parts_[it == owner_.end() ? p : it->second]->path(), " and ",
                    parts_[p]->path());
      owner_.emplace(i.name, p);
      add(i);
    }
  }
  if (!parts_.empty()) metadata_ = parts_[0]->metadata();
}

Tensor CombinedTensorSource::load(const TensorInfo& info) const {
  return parts_[owner_.find(info.name)->second]->get(info.name);
}

Tensor CombinedTensorSource::load_as(const TensorInfo& info, DType dtype) const {
  return parts_[owner_.find(info.name)->second]->get(info.name, dtype);
}

// --- safetensors ------------------------------------------------------------------------------

namespace {

class SafetensorsSource final : public TensorSource {
 public:
  explicit SafetensorsSource(SafetensorsFile file)
      : TensorSource(file.path().string()), file_(std::move(file)) {
    metadata_ = file_.metadata();
    for (const SafetensorsEntry& e : file_.entries()) {
      TensorInfo i;
      i.name = e.name;
      i.dtype = e.dtype;
      i.shape = e.shape;
      i.stored_type = std::string(dtype_info(e.dtype).safetensors_name);
      i.stored_bytes = e.end - e.begin;
      i.file = path_;
      add(std::move(i));
    }
  }
  std::string_view format() const override { return "safetensors"; }

 protected:
  Tensor load(const TensorInfo& info) const override { return file_.get(info.name); }

 private:
  SafetensorsFile file_;
};

std::string read_small_file(const std::filesystem::path& path, uint64_t limit) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  DIFFUSE_CHECK(!ec, "cannot read '", path.string(), "': ", ec.message());
  DIFFUSE_CHECK(size <= limit, path.string(), ": ", size, " bytes, more than the limit of ", limit,
                " bytes for this kind of file");
  std::ifstream in(path, std::ios::binary);
  DIFFUSE_CHECK(in.good(), "cannot open '", path.string(), "'");
  std::string s(size, '\0');
  in.read(s.data(), static_cast<std::streamsize>(size));
  DIFFUSE_CHECK(in.gcount() == static_cast<std::streamsize>(size), "short read from '",
                path.string(), "'");
  return s;
}

bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

}  // namespace

std::shared_ptr<TensorSource> open_safetensors_source(const std::filesystem::path& path) {
  return std::make_shared<SafetensorsSource>(SafetensorsFile::open(path));
}

std::vector<std::pair<std::string, std::string>> parse_weight_index(std::string_view json,
                                                                    const std::string& where) {
  detail::check_json_depth(json, where);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json.begin(), json.end());
  } catch (const nlohmann::json::exception& e) {
    DIFFUSE_FAIL(where, ": not valid JSON: ", e.what());
  }
  DIFFUSE_CHECK(
      j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), where,
      ": expected a JSON object with a \"weight_map\" object (tensor name -> shard file)");
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    DIFFUSE_CHECK(it.value().is_string(), where, ": weight_map entry '", it.key(),
                  "' is not a file name string");
    std::string shard = it.value().get<std::string>();
    DIFFUSE_CHECK(plain_file_name(shard), where, ": weight_map entry '", it.key(), "' names '",
                  shard, "', which is not a plain file name beside the index");
    out.emplace_back(it.key(), std::move(shard));
  }
  return out;
}

std::shared_ptr<TensorSource> open_sharded_source(const std::filesystem::path& index_path) {
  const std::string where = index_path.string();
  // Index files of the largest public models are a few MB; 64 MB is generous.
  const auto map = parse_weight_index(read_small_file(index_path, 64ull << 20), where);
  std::vector<std::string> shard_names;
  for (const auto& [name, shard] : map)
    if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end())
      shard_names.push_back(shard);
  std::vector<std::shared_ptr<TensorSource>> parts;
  for (const auto& shard : shard_names) {
    const auto p = index_path.parent_path() / shard;
    DIFFUSE_CHECK(std::filesystem::is_regular_file(p), where, ": shard '", shard,
                  "' named in weight_map is missing (looked for ", p.string(), ")");
    auto part = open_tensor_source(p);
    parts.push_back(std::move(part));
  }
  for (const auto& [name, shard] : map) {
    const auto pos = std::find(shard_names.begin(), shard_names.end(), shard) - shard_names.begin();
    DIFFUSE_CHECK(parts[pos]->contains(name), where, ": weight_map puts '", name, "' in ", shard,
                  ", which does not hold it");
  }
  const bool st = index_path.filename().string().find(".safetensors") != std::string::npos;
  return std::make_shared<CombinedTensorSource>(
      where, st ? "safetensors (sharded)" : "pytorch (sharded)", std::move(parts));
}

// --- detection --------------------------------------------------------------------------------

std::shared_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path,
                                                 std::string_view variant) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  DIFFUSE_CHECK(!ec && std::filesystem::exists(status), "cannot open '", path.string(),
                "': no such file or folder");
  if (std::filesystem::is_directory(status)) {
    const WeightFiles w = find_weight_files(path, variant);
    if (w.index) return open_sharded_source(*w.index);
    return open_tensor_source(w.files.at(0));
  }
  const std::string fname = path.filename().string();
  if (fname.size() > 11 && fname.ends_with(".json")) return open_sharded_source(path);
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    DIFFUSE_CHECK(in.good(), "cannot open '", path.string(), "'");
    in.read(magic, 4);
  }
  if (magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
    return TorchCheckpoint::open(path);
  if (magic[0] == 'G' && magic[1] == 'G' && magic[2] == 'U' && magic[3] == 'F')
    return open_gguf_source(path);
  // Legacy torch.save files open with PROTO 2 + LONG1 of 10 bytes (the magic number); as a
  // safetensors header length those bytes would exceed the 100 MB header limit anyway.
  const bool legacy = static_cast<unsigned char>(magic[0]) == 0x80 && magic[1] == 2 &&
                      static_cast<unsigned char>(magic[2]) == 0x8a && magic[3] == 10;
  DIFFUSE_CHECK(!legacy, path.string(),
                ": a legacy (torch < 1.6, non-zip) pickle checkpoint; diffuse reads the zip "
                "format only: re-save it with torch >= 1.6 or convert it to safetensors");
  return open_safetensors_source(path);
}

}  // namespace diffuse
