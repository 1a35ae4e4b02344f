// libFuzzer target: GGUF headers, metadata, tensor infos and dequantization.
#include "diffuse/core/error.h"
#include "diffuse/formats/gguf.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    const auto f =
        diffuse::GGUFFile::from_storage(diffuse::fuzz::to_storage(data, size), "fuzz.gguf");
    for (const auto& [key, value] : f.metadata()) (void)value.summary();
    for (const auto& t : f.tensors()) {
      const auto* info = diffuse::ggml_type_info(t.type);
      if (!info->dequantizable || t.nbytes > (1u << 20)) continue;
      const diffuse::Tensor x = f.dequantize(t.name, diffuse::DType::bf16);
      (void)diffuse::fuzz::touch(x.data_ptr(), x.nbytes());
    }
  } catch (const diffuse::Error&) {
  }
  return 0;
}
