// Storage: a reference-counted, contiguous block of bytes that tensors view.
//
// Three kinds: aligned heap memory owned by the storage, a read-only memory-mapped region of a
// file (weights used in place, zero-copy), and borrowed external memory kept alive by an optional
// owner handle. Thread-safety: a Storage is immutable after creation apart from its bytes;
// sharing it between threads is safe, concurrent writes to the same bytes are the caller's
// business.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>

#include "diffuse/core/device.h"

namespace diffuse {

class Storage : public std::enable_shared_from_this<Storage> {
 public:
  enum class Kind { heap, mapped_file, borrowed };

  // Allocates `nbytes` of uninitialized memory aligned to kAlignment bytes. Throws
  // diffuse::Error when the allocation fails.
  static std::shared_ptr<Storage> allocate(std::size_t nbytes);

  // Maps the whole file read-only (MAP_PRIVATE). The mapping lives as long as any storage or
  // tensor referring to it. Throws diffuse::Error naming the path when it cannot be opened.
  static std::shared_ptr<Storage> map_file(const std::filesystem::path& path);

  // Wraps external memory without copying. `owner` (may be null) is kept alive as long as the
  // storage; the caller guarantees `data` stays valid at least that long.
  static std::shared_ptr<Storage> borrow(void* data, std::size_t nbytes, bool read_only,
                                         std::shared_ptr<void> owner = nullptr);

  // A view of `nbytes` bytes at `offset` of this storage sharing its lifetime (used for tensors
  // inside a mapped file). Throws diffuse::Error when the range is outside the storage.
  std::shared_ptr<Storage> subrange(std::size_t offset, std::size_t nbytes);

  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Kind kind() const { return kind_; }
  bool read_only() const { return read_only_; }
  Device device() const { return device_; }

  static constexpr std::size_t kAlignment = 64;

 private:
  Storage() = default;

  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Kind kind_ = Kind::heap;
  bool read_only_ = false;
  Device device_;
  std::size_t map_length_ = 0;   // mapped_file: length passed to munmap
  std::shared_ptr<void> owner_;  // borrowed / subrange: keeps the real owner alive
};

}  // namespace diffuse
