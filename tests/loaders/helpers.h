// Helpers shared by the single-file loader tests: JSON and .ckpt writers, bitwise comparison of
// model outputs, and error-message checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"
#include "diffuse/core/tensor.h"
#include "tests/formats/writers.h"

namespace diffuse::loader_tests {

// Elements in a list of tensor shapes (parameter counts of safetensors headers or model specs).
template <class Specs>
int64_t count_params(const Specs& specs) {
  int64_t n = 0;
  for (const auto& s : specs) {
    int64_t m = 1;
    for (const int64_t d : s.shape) m *= d;
    n += m;
  }
  return n;
}

inline void write_json(const std::filesystem::path& p, const nlohmann::json& j) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << j.dump(2);
}

inline std::string storage_type(DType d) {
  switch (d) {
    case DType::f32:
      return "FloatStorage";
    case DType::f16:
      return "HalfStorage";
    case DType::bf16:
      return "BFloat16Storage";
    case DType::i64:
      return "LongStorage";
    default:
      return "ByteStorage";
  }
}

// torch.save({"state_dict": OrderedDict(tensors), "global_step": step}) as a zip.
inline void write_ckpt(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       int64_t global_step) {
  testing::PickleWriter p;
  p.proto(2);
  p.op('}').binput(0).mark().str("state_dict");
  p.global("collections", "OrderedDict").op(')').reduce().binput(1).mark();
  std::vector<testing::ZipEntry> entries;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor t = tensors[i].second.contiguous();
    const std::string key = std::to_string(i);
    p.str(tensors[i].first)
        .tensor(storage_type(t.dtype()), key, t.numel(), 0, t.shape(),
                contiguous_strides(t.shape()));
    entries.push_back({"archive/data/" + key, testing::tensor_bytes(t), false});
  }
  p.op('u');
  p.str("global_step").integer(global_step).op('u');
  p.stop();
  entries.insert(entries.begin(), {"archive/data.pkl", p.bytes(), false});
  entries.push_back({"archive/byteorder", "little", false});
  entries.push_back({"archive/version", "3\n", false});
  testing::write_zip(path, entries);
}

// Bitwise equality, and a non-trivial output (random weights that give zeros prove nothing).
inline void expect_identical(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what << ": undefined tensor";
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const Tensor ca = a.to(DType::f32).contiguous();
  const Tensor cb = b.to(DType::f32).contiguous();
  EXPECT_EQ(std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()), 0) << what << " differs";
  double sum = 0;
  for (const float v : ca.to_vector<float>()) sum += std::abs(v);
  EXPECT_GT(sum, 0.0) << what;
}

// `f` must throw diffuse::Error whose message contains every needle.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needles.at(0) << "'";
  } catch (const Error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

}  // namespace diffuse::loader_tests
