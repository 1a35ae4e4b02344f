// Test helpers: where the reference data lives, and reading its JSON + safetensors pairs.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "diffuse/diffuse.h"

namespace diffuse::testing {

// The shared folder beside the repository (DIFFUSE_SHARED_DIR in the environment overrides it).
std::filesystem::path shared_dir();

// Every reference root: shared/reference/base, shared/reference/extra (those that exist) and
// $DIFFUSE_REFERENCE_DIR when set.
std::vector<std::filesystem::path> reference_roots();

// Reads a JSON file, failing the test with the path on error.
nlohmann::json read_json(const std::filesystem::path& path);

// Elementwise comparison summary of two tensors (any dtypes, compared in double).
struct Diff {
  double max_abs = 0;        // largest |a - b|
  double max_rel = 0;        // largest |a - b| / max(|b|, tiny)
  int64_t worst_index = -1;  // flat index of the largest |a - b|
  bool shape_mismatch = false;
  bool nonfinite_mismatch = false;  // inf/nan in one but not at the same place in the other
};
Diff compare(const Tensor& actual, const Tensor& expected);
std::string describe(const Diff& d, const Tensor& actual, const Tensor& expected);

// gtest predicate: |actual - expected| <= atol + rtol * |expected| everywhere.
::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double atol,
                                     double rtol = 0.0);

}  // namespace diffuse::testing
