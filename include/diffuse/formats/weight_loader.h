// WeightLoader: hands model code its named tensors, scoped like a path.
//
//   WeightLoader w(open_tensor_source(path), DType::f32);
//   auto conv = w.scope("down_blocks").scope(0).scope("resnets").scope(1);
//   Tensor k = conv.get("conv1.weight", {out, in, 3, 3});   //
//   "down_blocks.0.resnets.1.conv1.weight"
//   ...
//   w.finish();   // warns about tensors of the file that no module asked for
//
// get() checks that the tensor exists and has exactly the expected shape, and converts it to the
// loader's dtype (a zero-copy view when the file already holds that dtype). Errors name the full
// tensor name, the file, and the expected and found shapes. The same loader serves checkpoints,
// randomly initialized weights (RandomTensorSource) and adapters.
// Thread-safety: scoped copies share their bookkeeping; get() may be called from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/formats/tensor_source.h"

namespace diffuse {

struct WeightLoaderOptions {
  DType dtype = DType::f32;  // dtype of floating tensors handed out (integer tensors keep theirs)
  // When true, a missing tensor is not an error: get() returns zeros of the expected shape and
  // records the name in missing() (like diffusers' warning for newly initialized weights).
  bool allow_missing = false;
};

class WeightLoader {
 public:
  using Options = WeightLoaderOptions;

  explicit WeightLoader(std::shared_ptr<const TensorSource> source,
                        Options options = WeightLoaderOptions());
  WeightLoader(std::shared_ptr<const TensorSource> source, DType dtype)
      : WeightLoader(std::move(source), Options{dtype, false}) {}

  // A loader whose names are prefixed by "<prefix>.<name>" (or "<name>" at the root).
  WeightLoader scope(std::string_view name) const;
  WeightLoader scope(int64_t index) const;
  // The same names, another dtype for the tensors handed out.
  WeightLoader with_dtype(DType dtype) const;

  const std::string& prefix() const { return prefix_; }
  DType dtype() const { return options_.dtype; }
  const TensorSource& source() const { return *source_; }
  // The full name of `name` in this scope.
  std::string full_name(std::string_view name) const;

  // True when the source holds `name` in this scope (does not mark it used).
  bool contains(std::string_view name) const;

  // The tensor `name` of exactly `shape`, converted to dtype() when floating. Throws
  // diffuse::Error when it is missing (unless allow_missing), misshapen, or not convertible.
  Tensor get(std::string_view name, const Shape& shape) const;
  // Same with an explicit dtype for this tensor.
  Tensor get(std::string_view name, const Shape& shape, DType dtype) const;
  // nullopt when absent (never an error, never recorded as missing); shape still checked.
  std::optional<Tensor> get_optional(std::string_view name, const Shape& shape) const;
  // The tensor with whatever shape the file gives (for adapters that learn shapes from files).
  Tensor get_any(std::string_view name) const;

  // Names of the source never handed out, in file order.
  std::vector<std::string> unused() const;
  // Names requested but absent (only with allow_missing).
  std::vector<std::string> missing() const;
  // Logs a warning listing unused and missing tensors (at most 20 names each); with `strict`,
  // throws diffuse::Error instead when any tensor is unused or missing.
  void finish(bool strict = false) const;

 private:
  struct State;
  WeightLoader(std::shared_ptr<const TensorSource> source, Options options,
               std::shared_ptr<State> state, std::string prefix);
  Tensor fetch(const std::string& full, const Shape* shape, DType dtype, bool optional_tensor,
               bool* found) const;

  std::shared_ptr<const TensorSource> source_;
  Options options_;
  std::shared_ptr<State> state_;
  std::string prefix_;
};

}  // namespace diffuse
