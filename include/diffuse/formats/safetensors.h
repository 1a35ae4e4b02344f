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

  const std::filesystem::path& path() const { return path_; }
  // Entries in header order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(std::string_view name) const;
  // Throws diffuse::Error when `name` is absent.
  const SafetensorsEntry& entry(std::string_view name) const;
  // A read-only tensor viewing the mapped bytes (no copy); keeps the mapping alive.
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
// duplicate names.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace diffuse
