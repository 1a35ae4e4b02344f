// safetensors: read through mmap (zero-copy, lazy) and write.
//
// Byte layout (https://github.com/huggingface/safetensors):
//   [0, 8)          N: little-endian u64, the length of the JSON header
//   [8, 8 + N)      UTF-8 JSON object: {"name": {"dtype": "F32", "shape": [..],
//                   "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
//                   (writers pad it with spaces to a multiple of 8)
//   [8 + N, EOF)    the data; offsets are relative to 8 + N, row-major little-endian
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin;  // byte offset of the data, relative to the start of the data section
  uint64_t end;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates the header (length bound, JSON, dtypes, shapes against byte
  // ranges, ranges inside the file, no overlaps, string metadata). Throws diffuse::Error naming
  // the file and the problem. Reads nothing but the header; tensor bytes are touched on use.
  static SafetensorsFile open(const std::filesystem::path& path);
  // Same over bytes already in memory (fuzzing, embedded data); `bytes` is kept alive and
  // `name` is used in messages.
  static SafetensorsFile from_storage(std::shared_ptr<Storage> bytes, const std::string& name);

  const std::filesystem::path& path() const { return path_; }
  // Entries in header order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(std::string_view name) const;
  // Throws diffuse::Error when `name` is absent.
  const SafetensorsEntry& entry(std::string_view name) const;
  // A read-only tensor viewing the mapped bytes (no copy); keeps the mapping alive. When the
  // bytes are not aligned to the element size (a header whose length is not a multiple of 8),
  // the tensor is an aligned copy instead, so kernels never read misaligned elements.
  Tensor get(std::string_view name) const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<Storage> mapping_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any layout; written contiguous, little-endian) with optional string metadata.
// Layout as the reference library writes it: tensors sorted by dtype (descending alignment) then
// name, header padded with spaces to a multiple of 8. Throws diffuse::Error on I/O failure or
// duplicate names. The file is written beside `path` and renamed into place when complete.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsTensorSpec {
  std::string name;
  DType dtype;
  Shape shape;
};

// Streaming writer: the header is built from `specs`, then `produce(spec)` is called once per
// tensor, in the order the file stores them, and its result (which must have the spec's dtype
// and shape) is written and released before the next call, so at most one tensor is in memory.
// Same layout, checks and atomic rename as save_safetensors.
void save_safetensors_streaming(const std::filesystem::path& path,
                                const std::vector<SafetensorsTensorSpec>& specs,
                                const std::function<Tensor(const SafetensorsTensorSpec&)>& produce,
                                const std::map<std::string, std::string>& metadata = {});

}  // namespace diffuse
