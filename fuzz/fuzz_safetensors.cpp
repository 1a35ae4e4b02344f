// libFuzzer target: safetensors headers and tensor views.
#include "diffuse/core/error.h"
#include "diffuse/formats/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    const auto f = diffuse::SafetensorsFile::from_storage(diffuse::fuzz::to_storage(data, size),
                                                          "fuzz.safetensors");
    uint64_t sum = 0;
    for (const auto& e : f.entries()) {
      const diffuse::Tensor t = f.get(e.name);
      sum += diffuse::fuzz::touch(t.data_ptr(), t.nbytes());
    }
    (void)sum;
  } catch (const diffuse::Error&) {
  }
  return 0;
}
