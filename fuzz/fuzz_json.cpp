// libFuzzer target: the JSON files of a diffusers folder (model_index.json, weight index files).
#include <string_view>

#include "diffuse/core/error.h"
#include "diffuse/formats/diffusers.h"
#include "diffuse/formats/tensor_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    (void)diffuse::parse_model_index(text, "model_index.json");
  } catch (const diffuse::Error&) {
  }
  try {
    (void)diffuse::parse_weight_index(text, "model.safetensors.index.json");
  } catch (const diffuse::Error&) {
  }
  return 0;
}
