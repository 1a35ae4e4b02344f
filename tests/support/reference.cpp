#include "tests/support/reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace diffuse::testing {

std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("DIFFUSE_SHARED_DIR"); env != nullptr && *env != '\0')
    return env;
  return DIFFUSE_SHARED_DIR;
}

std::vector<std::filesystem::path> reference_roots() {
  std::vector<std::filesystem::path> roots;
  for (const char* name : {"base", "extra"}) {
    const auto p = shared_dir() / "reference" / name;
    if (std::filesystem::is_directory(p)) roots.push_back(p);
  }
  if (const char* env = std::getenv("DIFFUSE_REFERENCE_DIR"); env != nullptr && *env != '\0')
    roots.emplace_back(env);
  return roots;
}

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

Diff compare(const Tensor& actual, const Tensor& expected) {
  Diff d;
  if (actual.shape() != expected.shape()) {
    d.shape_mismatch = true;
    return d;
  }
  const auto a = actual.to_vector<double>();
  const auto b = expected.to_vector<double>();
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool fa = std::isfinite(a[i]), fb = std::isfinite(b[i]);
    if (!fa || !fb) {
      const bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
      if (!same) {
        d.nonfinite_mismatch = true;
        d.worst_index = static_cast<int64_t>(i);
      }
      continue;
    }
    const double err = std::fabs(a[i] - b[i]);
    if (err > d.max_abs) {
      d.max_abs = err;
      if (!d.nonfinite_mismatch) d.worst_index = static_cast<int64_t>(i);
    }
    d.max_rel = std::max(d.max_rel, err / std::max(std::fabs(b[i]), 1e-30));
  }
  return d;
}

std::string describe(const Diff& d, const Tensor& actual, const Tensor& expected) {
  std::ostringstream os;
  if (d.shape_mismatch) {
    os << "shape " << shape_str(actual.shape()) << " != expected " << shape_str(expected.shape());
    return os.str();
  }
  os << "max |err| " << d.max_abs << ", max rel " << d.max_rel;
  if (d.worst_index >= 0) {
    const auto a = actual.to_vector<double>();
    const auto b = expected.to_vector<double>();
    os << ", worst at flat index " << d.worst_index << ": " << a[d.worst_index] << " vs "
       << b[d.worst_index];
  }
  if (d.nonfinite_mismatch) os << " (inf/nan mismatch)";
  return os.str();
}

::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double atol,
                                     double rtol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << describe(compare(actual, expected), actual, expected);
  const auto a = actual.to_vector<double>();
  const auto b = expected.to_vector<double>();
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool ok = std::isfinite(b[i]) ? std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i])
                                        : (std::isnan(b[i]) ? std::isnan(a[i]) : a[i] == b[i]);
    if (!ok) {
      return ::testing::AssertionFailure()
             << "first mismatch at flat index " << i << ": " << a[i] << " vs expected " << b[i]
             << " (atol " << atol << ", rtol " << rtol << "); "
             << describe(compare(actual, expected), actual, expected);
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace diffuse::testing
