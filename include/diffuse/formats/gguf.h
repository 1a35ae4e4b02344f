// GGUF (llama.cpp / ggml model files, versions 2 and 3): read through mmap, tensors as views.
//
// Byte layout (ggml/docs/gguf.md; all integers little-endian):
//   u32  magic "GGUF"            u32 version (2 or 3)
//   u64  n_tensors               u64 n_kv
//   n_kv x { string key, u32 value_type, value }
//        string = u64 length + UTF-8 bytes (no terminator)
//        value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
//                     9 array (u32 element type, u64 count, elements), 10 u64, 11 i64, 12 f64
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//        ne[0] is the fastest-varying extent: the PyTorch shape is ne reversed
//   padding to `general.alignment` (u32 key, default 32)
//   tensor data: each tensor at data_start + offset (offset a multiple of the alignment)
//
// Quantized types store blocks of `block_size` elements along ne[0]; the layouts (QK = 32 for
// Q4_0..Q8_0, QK_K = 256 for the K-quants) are documented at dequantize_ggml() in gguf.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "diffuse/formats/tensor_source.h"

namespace diffuse {

enum class GGMLType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
};

struct GGMLTypeInfo {
  std::string_view name;  // "Q4_K"
  int64_t block_size;     // elements per block (1 for plain types)
  int64_t block_bytes;    // bytes per block
  bool dequantizable;     // dequantize_ggml() supports it
};
// nullptr for a type id this reader does not know.
const GGMLTypeInfo* ggml_type_info(uint32_t type);

// Decodes `n` elements (a multiple of the type's block size) from `src` to f32. Throws
// diffuse::Error for types that are not dequantizable or a misaligned `n`.
void dequantize_ggml(GGMLType type, const void* src, float* dst, int64_t n);

enum class GGUFValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

struct GGUFValue {
  GGUFValueType type = GGUFValueType::u8;
  // Scalars: integers in `i` (unsigned ones too, when they fit; `u` always holds the bits),
  // floats in `f`, bools in `i`, strings in `s`.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  // Arrays: element type, count, and the elements: numbers as raw little-endian bytes in
  // `raw`, strings in `strings`, nested arrays in `arrays`.
  GGUFValueType array_type = GGUFValueType::u8;
  uint64_t count = 0;
  std::string raw;
  std::vector<std::string> strings;
  std::vector<GGUFValue> arrays;

  // Element `k` of a numeric array as a double / int64. Throws diffuse::Error when out of range.
  double number_at(uint64_t k) const;
  // "42", "\"llama\"", "[32000 x string]"
  std::string summary() const;
};

struct GGUFTensor {
  std::string name;
  uint32_t type = 0;         // GGMLType id
  std::vector<uint64_t> ne;  // ggml extents, fastest first
  Shape shape;               // PyTorch order (ne reversed)
  uint64_t offset = 0;       // relative to the data section
  uint64_t nbytes = 0;
};

class GGUFFile {
 public:
  // Maps and validates `path`: magic, version, counts bounded by the file size, strings and
  // arrays inside the file, known tensor types, extents divisible by the block size, offsets
  // aligned, inside the data section and not overlapping. Throws diffuse::Error naming the file,
  // the problem and the byte offset.
  static GGUFFile open(const std::filesystem::path& path);
  static GGUFFile from_storage(std::shared_ptr<Storage> bytes, const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return kv_; }
  // nullptr when absent.
  const GGUFValue* find(std::string_view key) const;
  const std::vector<GGUFTensor>& tensors() const { return tensors_; }
  // Throws diffuse::Error when absent.
  const GGUFTensor& tensor(std::string_view name) const;

  // The stored bytes of `name` without decoding: for F32/F16/BF16/F64/I8..I64 a typed view
  // of the PyTorch shape; for block types a u8 view of [nbytes]. Zero-copy, read-only.
  Tensor raw(std::string_view name) const;
  // `name` decoded to `dtype` (f32, f16 or bf16; plain types are converted). A new tensor
  // unless the stored type already is `dtype`, in which case it is the zero-copy view.
  Tensor dequantize(std::string_view name, DType dtype = DType::f32) const;

 private:
  std::string path_;
  std::shared_ptr<Storage> mapping_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  std::vector<GGUFTensor> tensors_;
};

// A GGUF file as a TensorSource: plain types are views, block types are decoded on get()
// (get(name) gives f32; get(name, bf16) decodes straight to bf16). TensorInfo::stored_type is
// the ggml type name; scalar metadata goes to metadata().
std::shared_ptr<TensorSource> open_gguf_source(const std::filesystem::path& path);

}  // namespace diffuse
