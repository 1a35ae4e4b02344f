// libFuzzer target: PyTorch zip checkpoints (zip directory, pickle, storages, tensor views).
#include "diffuse/core/error.h"
#include "diffuse/formats/torch.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    const auto ck =
        diffuse::TorchCheckpoint::from_storage(diffuse::fuzz::to_storage(data, size), "fuzz.pt");
    uint64_t sum = 0;
    for (const auto& info : ck->tensors()) {
      const diffuse::Tensor t = ck->get(info.name).contiguous();
      sum += diffuse::fuzz::touch(t.data_ptr(), t.nbytes());
    }
    (void)sum;
  } catch (const diffuse::Error&) {
  }
  return 0;
}
