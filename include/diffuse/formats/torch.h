// PyTorch zip checkpoints (torch.save since torch 1.6: .ckpt, .pt, .pth, .bin), read without
// Python and without running code.
//
// Byte layout (torch/csrc/jit/serialization/pickler.cpp, caffe2/serialize/inline_container.cc):
//   a zip archive (usually stored, not compressed; entries aligned to 64 bytes) holding
//     <archive>/data.pkl      the pickled object (protocol 2), typically a dict of tensors or
//                             {"state_dict": {...}, "global_step": ..., ...}
//     <archive>/data/<key>    the raw little-endian bytes of each storage
//     <archive>/byteorder     "little" (absent in old files, meaning little)
//     <archive>/version, .format_version, .storage_alignment  (ignored)
//   Tensors are pickled as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
//   where `storage` is a persistent id ('storage', torch.FloatStorage, key, location, numel).
//
// The pickle is read by a restricted unpickler (src/formats/pickle.h) that builds plain data and
// allows only the globals a state dict needs; any other global (os.system, builtins.eval,
// subprocess.*, ...) is refused by name before anything could use it. Nothing is executed.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "diffuse/formats/tensor_source.h"

namespace diffuse {

class TorchCheckpoint final : public TensorSource {
 public:
  // Opens and validates `path`: the zip directory, the pickle (restricted), every tensor's
  // storage entry, dtype, and extent (offset, sizes, strides inside the storage). Tensors nested
  // under "state_dict" (or "model"/"module"/"params_ema" when that is the only tensor holder) are
  // unwrapped; otherwise tensors nested in dicts or lists are named by their dotted path.
  // Non-tensor scalars (epoch, global_step, ...) go to metadata(). Throws diffuse::Error naming
  // the file and the problem.
  static std::shared_ptr<TorchCheckpoint> open(const std::filesystem::path& path);
  // Same over bytes already in memory (fuzzing, embedded files); `bytes` is kept alive.
  static std::shared_ptr<TorchCheckpoint> from_storage(std::shared_ptr<Storage> bytes,
                                                       const std::string& name);

  std::string_view format() const override { return "pytorch"; }
  // Whether tensors of `name` view the file without a copy (stored, uncompressed entry).
  bool zero_copy(std::string_view name) const;

  struct TensorRecord {
    std::string entry;  // zip entry of the storage
    DType dtype;
    int64_t storage_numel;  // elements in the storage
    int64_t offset;         // in elements
    Shape shape;
    Shape strides;
  };

  explicit TorchCheckpoint(std::string path) : TensorSource(std::move(path)) {}
  ~TorchCheckpoint() override;

 protected:
  Tensor load(const TensorInfo& info) const override;

 private:
  struct Entry {
    uint64_t index = 0;        // libzip index
    uint64_t size = 0;         // uncompressed bytes
    int64_t data_offset = -1;  // offset of the bytes in the file when stored uncompressed
  };
  std::shared_ptr<Storage> entry_storage(const std::string& entry) const;

  std::shared_ptr<Storage> file_;
  void* zip_ = nullptr;  // zip_t*
  std::map<std::string, Entry, std::less<>> entries_;
  std::map<std::string, TensorRecord, std::less<>> records_;
  mutable std::mutex mutex_;  // libzip handles are not thread-safe; cache of decompressed entries
  mutable std::map<std::string, std::shared_ptr<Storage>, std::less<>> decompressed_;
};

}  // namespace diffuse
