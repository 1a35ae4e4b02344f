// libFuzzer target: the restricted unpickler on raw pickle bytes.
#include <span>

#include "diffuse/core/error.h"
#include "pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    const auto p = diffuse::pickle::parse(std::span<const uint8_t>(data, size), "fuzz.pkl");
    (void)p;
  } catch (const diffuse::Error&) {
  }
  return 0;
}
