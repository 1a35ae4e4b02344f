// Shared by the fuzz targets: the input as a heap storage the parsers can keep alive.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>

#include "diffuse/core/storage.h"

namespace diffuse::fuzz {

inline std::shared_ptr<Storage> to_storage(const uint8_t* data, std::size_t size) {
  auto s = Storage::allocate(size);
  if (size > 0) std::memcpy(s->data(), data, size);
  return s;
}

// Reads every byte of a tensor so that ASan sees any out-of-range view.
inline uint64_t touch(const void* p, std::size_t n) {
  uint64_t sum = 0;
  const auto* b = static_cast<const uint8_t*>(p);
  for (std::size_t i = 0; i < n; ++i) sum += b[i];
  return sum;
}

}  // namespace diffuse::fuzz
