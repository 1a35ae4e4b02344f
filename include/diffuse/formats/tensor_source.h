// TensorSource: one interface over every weight container diffuse reads (safetensors, sharded
// checkpoints, PyTorch zip checkpoints, GGUF, in-memory tensors, random weights for tests), so
// that model code never knows which format its weights came from.
//
// A source lists its tensors (name, shape, dtype, where they live) without reading their bytes,
// and hands out a tensor on request. File-backed sources return read-only views into the
// memory-mapped file whenever the stored bytes can be used as they are (zero-copy); otherwise
// (compressed zip entries, quantized GGUF blocks) they decode into new heap memory.
// Thread-safety: a source is immutable after it is opened; get() may be called concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse {

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;  // the dtype get(name) returns
  Shape shape;
  std::string stored_type;    // element type as the file names it: "F16", "Q4_K", "HalfStorage"
  uint64_t stored_bytes = 0;  // bytes the tensor occupies in the file
  std::string file;           // the file that holds it (shards name their own file)
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // The path (or a description for synthetic sources) used in messages.
  const std::string& path() const { return path_; }
  // "safetensors", "safetensors (sharded)", "pytorch", "gguf", "memory", "random".
  virtual std::string_view format() const = 0;

  // Every tensor in file order.
  const std::vector<TensorInfo>& tensors() const { return infos_; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // Throws diffuse::Error naming the source when `name` is absent.
  const TensorInfo& info(std::string_view name) const;

  // The tensor `name`, in info(name).dtype; a read-only view into the file when possible.
  // Throws diffuse::Error when absent or when its bytes are invalid.
  Tensor get(std::string_view name) const;
  // The tensor converted to `dtype` (sources that decode, such as GGUF, decode straight into it).
  Tensor get(std::string_view name, DType dtype) const;

  // File-level string metadata (safetensors __metadata__, GGUF scalar key/values, ...).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Sources that make tensors on demand (RandomTensorSource) return one of `shape` for a name
  // they do not list; file sources return nullopt.
  virtual std::optional<Tensor> synthesize(std::string_view name, const Shape& shape,
                                           DType dtype) const;

 protected:
  explicit TensorSource(std::string path) : path_(std::move(path)) {}
  // Appends a tensor to the listing. Throws diffuse::Error on a duplicate name.
  void add(TensorInfo info);
  // Reads one listed tensor (the default of get(name, dtype) converts load(info)).
  virtual Tensor load(const TensorInfo& info) const = 0;
  virtual Tensor load_as(const TensorInfo& info, DType dtype) const;

  std::string path_;
  std::map<std::string, std::string> metadata_;

 private:
  std::vector<TensorInfo> infos_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

// Opens a weight file or folder, detecting the format from its bytes, not its extension:
//   a zip (PK\3\4)                      -> PyTorch checkpoint (.ckpt, .pt, .pth, .bin)
//   "GGUF" magic                        -> GGUF
//   *.index.json                        -> sharded checkpoint (safetensors or .bin shards)
//   anything else                       -> safetensors
//   a folder with weights of a diffusers component (config.json + weights) -> those weights
// Throws diffuse::Error naming the path when nothing readable is found.
std::shared_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path,
                                                 std::string_view variant = {});

// Tensors held in memory (tests, adapters, results of conversions). Tensors are returned as
// they were added (shared, not copied).
class MemoryTensorSource final : public TensorSource {
 public:
  explicit MemoryTensorSource(std::string description = "memory")
      : TensorSource(std::move(description)) {}
  // Throws diffuse::Error on a duplicate name or an undefined tensor.
  void insert(const std::string& name, Tensor tensor);
  std::string_view format() const override { return "memory"; }

 protected:
  Tensor load(const TensorInfo& info) const override;

 private:
  std::map<std::string, Tensor, std::less<>> tensors_;
};

// Randomly initialized weights for tests and training: lists nothing, and synthesizes any
// requested tensor deterministically from (seed, name): a name ending in "bias" gets zeros, a
// name containing "norm" and ending in "weight" gets ones, anything else N(0, std^2) from a
// counter-based generator keyed by seed ^ hash(name) (element i depends only on seed, name and
// i; filled in parallel), so two loaders with the same seed see the same weights.
class RandomTensorSource final : public TensorSource {
 public:
  explicit RandomTensorSource(uint64_t seed = 0, double std = 0.02);
  std::string_view format() const override { return "random"; }
  std::optional<Tensor> synthesize(std::string_view name, const Shape& shape,
                                   DType dtype) const override;

 protected:
  Tensor load(const TensorInfo& info) const override;

 private:
  uint64_t seed_;
  double std_;
};

// Several sources seen as one (shards, or a base checkpoint plus extra tensors). Names must be
// unique across parts; the first source's metadata is kept.
class CombinedTensorSource final : public TensorSource {
 public:
  CombinedTensorSource(std::string description, std::string format,
                       std::vector<std::shared_ptr<TensorSource>> parts);
  std::string_view format() const override { return format_; }
  const std::vector<std::shared_ptr<TensorSource>>& parts() const { return parts_; }

 protected:
  Tensor load(const TensorInfo& info) const override;
  Tensor load_as(const TensorInfo& info, DType dtype) const override;

 private:
  std::string format_;
  std::vector<std::shared_ptr<TensorSource>> parts_;
  std::map<std::string, std::size_t, std::less<>> owner_;
};

// A safetensors file as a TensorSource (zero-copy views into the mapping).
std::shared_ptr<TensorSource> open_safetensors_source(const std::filesystem::path& path);

// A sharded checkpoint from its index (`model.safetensors.index.json`,
// `diffusion_pytorch_model.safetensors.index.json`, `pytorch_model.bin.index.json`): every
// shard named in "weight_map" is opened (shard names must be plain file names beside the index);
// each mapped name must be in the shard it is mapped to. Throws diffuse::Error otherwise.
std::shared_ptr<TensorSource> open_sharded_source(const std::filesystem::path& index_path);

// Parses the "weight_map" of an index file: tensor name -> shard file name. Throws
// diffuse::Error naming `where` for malformed JSON, a missing map, non-string shard names or
// shard names that are not plain file names (no '/', '\\', "..").
std::vector<std::pair<std::string, std::string>> parse_weight_index(std::string_view json,
                                                                    const std::string& where);

}  // namespace diffuse
