// Internal pieces of the single-file loader: a TensorSource that renames (and reshapes or slices)
// the tensors of another source, and the prefix tables that map LDM module paths to diffusers
// module paths in both directions.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/formats/tensor_source.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/models/unet_2d_condition.h"

namespace diffuse::loaders {

// How a renamed tensor is derived from the base tensor (all views, no copy, unless the base
// tensor's strides force reshape() to copy).
struct Remap {
  enum class Op { none, reshape, narrow0, transpose };
  std::string base_name;
  Op op = Op::none;
  Shape shape;        // reshape: the new shape
  int64_t start = 0;  // narrow0: rows [start, start + length)
  int64_t length = 0;
};

class RemappedTensorSource final : public TensorSource {
 public:
  RemappedTensorSource(std::shared_ptr<const TensorSource> base, std::string description);
  std::string_view format() const override { return format_; }
  // Lists `name` as `remap` of the base tensor remap.base_name (which must exist). Throws
  // diffuse::Error when the remap does not fit the base tensor's shape.
  void add_entry(const std::string& name, Remap remap);
  // The base tensor name of `name`, or nullptr.
  const Remap* remap_of(std::string_view name) const;
  const TensorSource& base() const { return *base_; }

 protected:
  Tensor load(const TensorInfo& info) const override;
  Tensor load_as(const TensorInfo& info, DType dtype) const override;

 private:
  Tensor apply(const Remap& r, Tensor t) const;
  std::shared_ptr<const TensorSource> base_;
  std::string format_;
  std::map<std::string, Remap, std::less<>> remaps_;
};

// Module-path renames inside one kind of module (resnets, VAE attention).
enum class LeafKind { plain, unet_resnet, vae_resnet, vae_attention };

// A table of (LDM module path, diffusers module path, leaf kind); a key maps through its longest
// listed dotted prefix, then the rest of the key is renamed by the leaf kind's table.
class KeyMap {
 public:
  void add(const std::string& ldm, const std::string& diffusers, LeafKind leaf = LeafKind::plain);
  // nullopt when no prefix of `ldm_key` is listed.
  std::optional<std::string> to_diffusers(std::string_view ldm_key, LeafKind* leaf) const;
  std::optional<std::string> to_ldm(std::string_view diffusers_key, LeafKind* leaf) const;

 private:
  struct Rule {
    std::string target;
    LeafKind leaf;
  };
  std::map<std::string, Rule, std::less<>> by_ldm_, by_diffusers_;
};

// The LDM <-> diffusers module tables of a UNet (input_blocks / middle_block / output_blocks) and
// a VAE (encoder.down / mid / decoder.up) of the given configs.
KeyMap unet_key_map(const UNet2DConditionConfig& config);
KeyMap vae_key_map(const AutoencoderKLConfig& config);

}  // namespace diffuse::loaders
