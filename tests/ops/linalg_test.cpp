// linear, matmul, conv2d and attention against the naive double references of src/ops/ref, over
// tail sizes, non-contiguous views, broadcasting, every weight dtype and both compute dtypes.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "diffuse/ops.h"
#include "src/backends/cpu/attention_cpu.h"
#include "src/backends/cpu/dnnl_layout.h"
#include "src/backends/cpu/dnnl_linalg.h"
#include "src/ops/linalg_weight.h"
#include "src/ops/ref/ref.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

using ops::Activation;
using testing::all_close;

// Deterministic N(0, 1) * scale values in a new contiguous tensor of `dtype`.
Tensor randn(const Shape& shape, uint32_t seed, DType dtype = DType::f32, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, static_cast<float>(scale));
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
  for (float& e : v) e = dist(gen);
  return Tensor::from_vector(v, shape, dtype);
}

// The same logical tensor as randn(shape) but stored with the last two dims swapped.
Tensor randn_transposed(const Shape& shape, uint32_t seed, DType dtype = DType::f32) {
  Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  return randn(swapped, seed, dtype).transpose(-1, -2);
}

// A view taking every other element of the last dim of a larger buffer, at a non-zero offset.
Tensor randn_strided(const Shape& shape, uint32_t seed, DType dtype = DType::f32) {
  Shape big = shape;
  big.back() = big.back() * 2 + 1;
  return randn(big, seed, dtype).slice(-1, 1, big.back(), 2);
}

std::string name(const Shape& s) {
  return shape_str(s);
}

// Tolerances: both paths multiply the same (possibly bf16-rounded) operands, so the only
// difference is f32 rounding in the accumulation, ~sqrt(K) * 2^-24 * |terms| for random data.
constexpr double kGemmAtol = 2e-4, kGemmRtol = 1e-4;

const std::vector<Activation> kActivations = {Activation::none,       Activation::silu,
                                              Activation::gelu,       Activation::gelu_tanh,
                                              Activation::quick_gelu, Activation::relu};

const char* act_name(Activation a) {
  switch (a) {
    case Activation::none:
      return "none";
    case Activation::silu:
      return "silu";
    case Activation::gelu:
      return "gelu";
    case Activation::gelu_tanh:
      return "gelu_tanh";
    case Activation::quick_gelu:
      return "quick_gelu";
    case Activation::relu:
      return "relu";
  }
  return "?";
}

// --- linear --------------------------------------------------------------------------------------

TEST(OpsLinalg, LinearMatchesReference) {
  struct Case {
    Shape x;
    int64_t out;
  };
  const std::vector<Case> cases = {{{1, 1}, 1},       {{17, 33}, 17},    {{2, 5, 64}, 33},
                                   {{3, 17, 48}, 80}, {{1, 77, 96}, 40}, {{33, 1}, 5}};
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const int64_t in = c.x.back();
    for (DType wdt : {DType::f32, DType::f16, DType::bf16}) {
      for (DType compute : {DType::f32, DType::bf16}) {
        for (int layout = 0; layout < 2; ++layout) {
          const Tensor x = layout == 0 ? randn(c.x, seed) : randn_strided(c.x, seed);
          const Tensor w = randn({c.out, in}, seed + 1, wdt, 0.3);
          const Tensor b = randn({c.out}, seed + 2);
          const Activation post = kActivations[seed % kActivations.size()];
          ++seed;
          const Tensor got = ops::linear(x, w, b, compute, post);
          const Tensor want = ops::ref::linear(x, w, b, compute, post);
          EXPECT_TRUE(all_close(got, want, kGemmAtol, kGemmRtol))
              << "linear x " << name(c.x) << (layout ? " (strided)" : "") << " weight "
              << dtype_name(wdt) << " [" << c.out << ", " << in << "] compute "
              << dtype_name(compute) << " post " << act_name(post);
        }
      }
    }
  }
}

TEST(OpsLinalg, LinearWithoutBiasAndBf16Input) {
  const Tensor x = randn({4, 9, 40}, 7, DType::bf16);
  const Tensor w = randn({24, 40}, 8, DType::f32, 0.3);
  for (DType compute : {DType::f32, DType::bf16}) {
    EXPECT_TRUE(all_close(ops::linear(x, w, {}, compute), ops::ref::linear(x, w, {}, compute),
                          kGemmAtol, kGemmRtol))
        << "compute " << dtype_name(compute);
  }
  // A transposed weight view (non-contiguous [out, in]).
  const Tensor wt = randn({40, 24}, 9).transpose(0, 1);
  EXPECT_TRUE(all_close(ops::linear(x, wt), ops::ref::linear(x, wt), kGemmAtol, kGemmRtol));
}

TEST(OpsLinalg, WeightCacheFollowsStorageLifetime) {
  ops::clear_linalg_caches();
  const Tensor x = randn({5, 32}, 11);
  const std::size_t before = cpu::dnnl_cached_weight_count();
  for (int round = 0; round < 3; ++round) {
    // A new weight each round, likely at a recycled address: the cache must not serve the
    // previous round's converted copy.
    const Tensor w = randn({16, 32}, 100 + round, DType::f16);
    const Tensor got = ops::linear(x, w, {}, DType::bf16);
    EXPECT_TRUE(all_close(got, ops::ref::linear(x, w, {}, DType::bf16), kGemmAtol, kGemmRtol))
        << "round " << round;
    EXPECT_EQ(cpu::dnnl_cached_weight_count(), before + 1) << "round " << round;
    // Second call hits the cache and gives the same result.
    EXPECT_TRUE(all_close(ops::linear(x, w, {}, DType::bf16), got, 0.0));
  }
  // Every weight above is dead now: no entry survives.
  EXPECT_EQ(cpu::dnnl_cached_weight_count(), before);
}

TEST(OpsLinalg, LinearErrors) {
  const Tensor x = randn({2, 8}, 1);
  auto expect_error = [](const auto& fn, const std::vector<std::string>& fragments) {
    try {
      fn();
      ADD_FAILURE() << "no error thrown";
    } catch (const Error& e) {
      for (const auto& f : fragments) {
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
            << "message '" << e.what() << "' lacks '" << f << "'";
      }
    }
  };
  expect_error([&] { ops::linear(x, randn({4, 9}, 2)); }, {"linear", "[2, 8]", "[4, 9]"});
  expect_error([&] { ops::linear(x, randn({4, 8}, 2), randn({5}, 3)); }, {"linear", "bias", "[5]"});
  expect_error(
      [&] {
        ops::linear(x, randn({4, 8}, 2), {}, DType::f16);
      },
      {"linear", "compute", "f16"});
  expect_error(
      [&] {
        ops::linear(x, Tensor::zeros({4, 8}, DType::i32));
      },
      {"linear", "weight", "i32"});
  expect_error(
      [&] {
        ops::matmul(randn({3, 4}, 1), randn({5, 6}, 2));
      },
      {"matmul", "[3, 4]", "[5, 6]"});
  expect_error(
      [&] {
        ops::matmul(randn({2, 3, 4}, 1), randn({3, 4, 6}, 2));
      },
      {"matmul", "[2]", "[3]"});
  expect_error([&] { ops::matmul(randn({4}, 1), randn({4, 6}, 2)); }, {"matmul", "2-D"});
  expect_error(
      [&] {
        ops::conv2d(randn({1, 4, 8, 8}, 1), randn({6, 3, 3, 3}, 2));
      },
      {"conv2d", "[1, 4, 8, 8]", "[6, 3, 3, 3]"});
  ops::Conv2dParams bad;
  bad.groups = 3;
  expect_error(
      [&] {
        ops::conv2d(randn({1, 4, 8, 8}, 1), randn({6, 2, 3, 3}, 2), {}, bad);
      },
      {"conv2d", "groups = 3"});
  expect_error(
      [&] {
        ops::conv2d(randn({1, 4, 2, 2}, 1), randn({6, 4, 3, 3}, 2));
      },
      {"conv2d", "smaller than the dilated kernel"});
  expect_error(
      [&] {
        ops::conv2d(randn({4, 8, 8}, 1), randn({6, 4, 3, 3}, 2));
      },
      {"conv2d", "NCHW", "[4, 8, 8]"});
  expect_error(
      [&] {
        ops::conv2d(randn({1, 4, 8, 8}, 1), randn({6, 4, 3, 3}, 2), {}, {}, DType::i8);
      },
      {"conv2d", "compute", "i8"});
  const Tensor q = randn({1, 2, 5, 8}, 1);
  expect_error(
      [&] {
        ops::attention(q, randn({1, 2, 6, 7}, 2), randn({1, 2, 6, 8}, 3));
      },
      {"attention", "[1, 2, 5, 8]", "[1, 2, 6, 7]"});
  expect_error(
      [&] {
        ops::attention(q, randn({1, 2, 6, 8}, 2), randn({1, 2, 7, 8}, 3));
      },
      {"attention", "[1, 2, 7, 8]"});
  ops::AttentionOptions o;
  o.mask = randn({3, 6}, 4);
  expect_error(
      [&] {
        ops::attention(q, randn({1, 2, 6, 8}, 2), randn({1, 2, 6, 8}, 3), o);
      },
      {"attention", "mask", "[3, 6]"});
  o.mask = Tensor::zeros({5, 6}, DType::i32);
  expect_error(
      [&] {
        ops::attention(q, randn({1, 2, 6, 8}, 2), randn({1, 2, 6, 8}, 3), o);
      },
      {"attention", "mask", "i32"});
  expect_error(
      [&] {
        ops::attention(q, randn({1, 2, 6, 8}, 2), randn({1, 2, 6, 8}, 3), {}, DType::f16);
      },
      {"attention", "compute", "f16"});
}

// --- matmul --------------------------------------------------------------------------------------

TEST(OpsLinalg, MatmulMatchesReference) {
  struct Case {
    Shape a, b;
  };
  const std::vector<Case> cases = {
      {{1, 1}, {1, 1}},
      {{17, 33}, {33, 5}},
      {{2, 17, 9}, {2, 9, 33}},
      {{2, 3, 7, 16}, {16, 11}},
      {{4, 1, 5, 8}, {3, 8, 6}},
      {{1, 3, 20}, {2, 1, 20, 17}},
      {{2, 8, 33, 40}, {2, 8, 40, 77}},
  };
  uint32_t seed = 50;
  for (const Case& c : cases) {
    for (DType compute : {DType::f32, DType::bf16}) {
      for (int layout = 0; layout < 3; ++layout) {
        Tensor a, b;
        if (layout == 0) {
          a = randn(c.a, seed);
          b = randn(c.b, seed + 1);
        } else if (layout == 1) {  // transposed storage (e.g. k^T as a view)
          a = randn_transposed(c.a, seed);
          b = randn_transposed(c.b, seed + 1);
        } else {  // strided along the last dim, and a half-precision operand
          a = randn_strided(c.a, seed, DType::f16);
          b = randn_strided(c.b, seed + 1);
        }
        ++seed;
        EXPECT_TRUE(all_close(ops::matmul(a, b, compute), ops::ref::matmul(a, b, compute),
                              kGemmAtol, kGemmRtol))
            << "matmul " << name(c.a) << " x " << name(c.b) << " layout " << layout << " compute "
            << dtype_name(compute);
      }
    }
  }
  // Expanded (stride-0) batch dims are read in place.
  const Tensor a = randn({1, 6, 10}, 3).expand({4, 6, 10});
  const Tensor b = randn({4, 10, 7}, 4);
  EXPECT_TRUE(all_close(ops::matmul(a, b), ops::ref::matmul(a, b), kGemmAtol, kGemmRtol));
}

// --- conv2d --------------------------------------------------------------------------------------

TEST(OpsLinalg, Conv2dMatchesReference) {
  struct Case {
    Shape x;
    int64_t out, k;
    ops::Conv2dParams p;
  };
  auto params = [](int64_t s, int64_t pad, int64_t dil, int64_t g, Activation post) {
    ops::Conv2dParams p;
    p.stride = {s, s};
    p.padding = {pad, pad};
    p.dilation = {dil, dil};
    p.groups = g;
    p.post = post;
    return p;
  };
  std::vector<Case> cases = {
      {{1, 1, 1, 1}, 1, 1, params(1, 0, 1, 1, Activation::none)},
      {{2, 4, 17, 9}, 33, 3, params(1, 1, 1, 1, Activation::silu)},
      {{1, 17, 12, 12}, 16, 3, params(2, 1, 1, 1, Activation::none)},
      {{1, 8, 11, 13}, 8, 3, params(1, 2, 2, 1, Activation::gelu)},
      {{2, 8, 9, 9}, 12, 3, params(1, 1, 1, 4, Activation::relu)},
      {{1, 32, 16, 16}, 64, 1, params(1, 0, 1, 1, Activation::gelu_tanh)},
      {{1, 6, 10, 10}, 6, 3, params(2, 0, 1, 6, Activation::quick_gelu)},  // depthwise
      {{1, 3, 33, 17}, 16, 3, params(1, 1, 1, 1, Activation::none)},       // few channels
  };
  cases[2].p.stride = {2, 1};
  cases[2].p.padding = {1, 0};
  uint32_t seed = 200;
  for (const Case& c : cases) {
    for (DType wdt : {DType::f32, DType::f16, DType::bf16}) {
      for (DType compute : {DType::f32, DType::bf16}) {
        const bool strided = seed % 4 >= 2;  // both compute dtypes see both layouts
        const Tensor x = strided ? randn_strided(c.x, seed) : randn(c.x, seed);
        const Tensor w = randn({c.out, c.x[1] / c.p.groups, c.k, c.k}, seed + 1, wdt, 0.3);
        const Tensor b = seed % 3 == 0 ? Tensor() : randn({c.out}, seed + 2);
        ++seed;
        EXPECT_TRUE(all_close(ops::conv2d(x, w, b, c.p, compute),
                              ops::ref::conv2d(x, w, b, c.p, compute), kGemmAtol, kGemmRtol))
            << "conv2d x " << name(c.x) << (strided ? " (strided)" : "") << " weight "
            << dtype_name(wdt) << " O " << c.out << " k " << c.k << " stride (" << c.p.stride[0]
            << ", " << c.p.stride[1] << ") pad (" << c.p.padding[0] << ", " << c.p.padding[1]
            << ") dilation " << c.p.dilation[0] << " groups " << c.p.groups << " post "
            << act_name(c.p.post) << " bias " << b.defined() << " compute " << dtype_name(compute);
      }
    }
  }
}

// --- layer-owned weights (ops::LinalgWeight) ---------------------------------------------------

// True when a copy of a `wdt` weight in `compute` holds it exactly (the plain one may go).
bool exact_in(DType wdt, DType compute) {
  return wdt == compute || compute == DType::f32;
}

TEST(OpsLinalg, LinalgWeightLinearMatchesPlainWeight) {
  const Tensor x_few = randn({1, 3, 48}, 21);
  const Tensor x_many = randn({4, 70, 48}, 22);
  for (DType wdt : {DType::f32, DType::f16, DType::bf16}) {
    for (DType compute : {DType::f32, DType::bf16}) {
      const std::string what =
          "weight " + std::string(dtype_name(wdt)) + " compute " + std::string(dtype_name(compute));
      const Tensor w = randn({40, 48}, 23, wdt, 0.3);
      const Tensor b = randn({40}, 24);
      const ops::LinalgWeight lw(w);
      EXPECT_TRUE(lw.holds_plain()) << what;
      EXPECT_EQ(lw.shape(), w.shape()) << what;
      EXPECT_EQ(lw.dtype(), wdt) << what;
      EXPECT_EQ(lw.size(-1), 48) << what;
      // Few and many rows (oneDNN may pick another weight layout), then few again: every call
      // is bit-identical to the plain weight's, whichever copy it reads.
      for (const Tensor* x : {&x_few, &x_many, &x_few}) {
        EXPECT_TRUE(all_close(ops::linear(*x, lw, b, compute, Activation::gelu),
                              ops::linear(*x, w, b, compute, Activation::gelu), 0.0))
            << what << " x " << name(x->shape());
      }
      if (exact_in(wdt, compute)) {
        // Dropped, unless the plain tensor is itself the compute copy (no copy at all).
        EXPECT_TRUE(!lw.holds_plain() || lw.copy_bytes() == 0) << what;
      } else {
        EXPECT_TRUE(lw.holds_plain()) << what;  // a bf16 copy of f32/f16 values is lossy
        EXPECT_GT(lw.copy_bytes(), 0u) << what;
      }
      const Tensor back = lw.tensor();
      EXPECT_EQ(back.dtype(), wdt) << what;
      EXPECT_TRUE(all_close(back, w, 0.0)) << what;
    }
  }
}

TEST(OpsLinalg, LinalgWeightStoredInAnotherDtype) {
  // A bf16 (or f16) weight given as the f32 / f16 tensor of a checkpoint: the values are the
  // converted ones, exactly as if the loader had converted it.
  const Tensor x = randn({5, 48}, 51);
  for (DType stored_dtype : {DType::f32, DType::f16}) {
    for (DType dtype : {DType::bf16, DType::f16}) {
      if (stored_dtype == dtype) continue;
      for (DType compute : {DType::f32, DType::bf16}) {
        const std::string what = "stored " + std::string(dtype_name(stored_dtype)) + " as " +
                                 std::string(dtype_name(dtype)) + " compute " +
                                 std::string(dtype_name(compute));
        const Tensor stored = randn({40, 48}, 52, stored_dtype, 0.3);
        const Tensor converted = stored.to(dtype);
        const ops::LinalgWeight lw(stored, dtype);
        EXPECT_EQ(lw.dtype(), dtype) << what;
        EXPECT_TRUE(all_close(lw.tensor(), converted, 0.0)) << what;
        EXPECT_TRUE(
            all_close(ops::linear(x, lw, {}, compute), ops::linear(x, converted, {}, compute), 0.0))
            << what;
        EXPECT_EQ(lw.holds_plain(), !exact_in(dtype, compute)) << what;
        EXPECT_EQ(lw.tensor().dtype(), dtype) << what;
        EXPECT_TRUE(all_close(lw.tensor(), converted, 0.0)) << what;
      }
    }
  }
}

TEST(OpsLinalg, LinalgWeightConv2dMatchesPlainWeight) {
  ops::Conv2dParams p;
  p.padding = {1, 1};
  for (int64_t groups : {1, 2}) {
    p.groups = groups;
    const Tensor x_small = randn({1, 16, 9, 11}, 31);
    const Tensor x_large = randn({2, 16, 40, 40}, 32);
    for (DType wdt : {DType::f32, DType::f16, DType::bf16}) {
      for (DType compute : {DType::f32, DType::bf16}) {
        const std::string what = "weight " + std::string(dtype_name(wdt)) + " compute " +
                                 std::string(dtype_name(compute)) + " groups " +
                                 std::to_string(groups);
        const Tensor w = randn({32, 16 / groups, 3, 3}, 33, wdt, 0.2);
        const Tensor b = randn({32}, 34);
        const ops::LinalgWeight lw(w);
        for (const Tensor* x : {&x_small, &x_large, &x_small}) {
          EXPECT_TRUE(
              all_close(ops::conv2d(*x, lw, b, p, compute), ops::conv2d(*x, w, b, p, compute), 0.0))
              << what << " x " << name(x->shape());
        }
        if (!exact_in(wdt, compute)) {
          EXPECT_TRUE(lw.holds_plain()) << what;
        }
        EXPECT_TRUE(all_close(lw.tensor(), w, 0.0)) << what;
      }
    }
  }
}

TEST(OpsLinalg, LinalgWeightErrors) {
  EXPECT_THROW(ops::LinalgWeight{Tensor{}}, Error);
  EXPECT_THROW(ops::LinalgWeight{Tensor::zeros({4, 4}, DType::i32)}, Error);
  const ops::LinalgWeight lw(randn({8, 6}, 1));
  EXPECT_THROW(ops::linear(randn({2, 5}, 2), lw), Error);        // 5 features for 6
  EXPECT_THROW(ops::conv2d(randn({1, 6, 4, 4}, 3), lw), Error);  // not a conv weight
  const ops::LinalgWeight undefined;
  EXPECT_FALSE(undefined.defined());
  EXPECT_THROW(ops::linear(randn({2, 6}, 4), undefined), Error);
}

// The resident set's file-backed part (RssFile of /proc/self/status) in bytes, -1 if unknown.
int64_t rss_file_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  return -1;
}

TEST(OpsLinalg, LinalgWeightReleasesMappedPages) {
  if (rss_file_bytes() < 0) GTEST_SKIP() << "no RssFile in /proc/self/status";
  // A bf16 weight of 16 MiB in a memory-mapped file, used in bf16: once its compute copy exists,
  // the file's pages must leave the resident set, while the tensor stays valid.
  const int64_t out = 2048, in = 4096;
  const Tensor w = randn({out, in}, 41, DType::bf16, 0.05);
  const auto path = std::filesystem::temp_directory_path() /
                    ("diffuse_linalg_weight_" + std::to_string(::getpid()) + ".bin");
  {
    std::ofstream f(path, std::ios::binary);
    f.write(static_cast<const char*>(w.data_ptr()), static_cast<std::streamsize>(w.nbytes()));
  }
  const Tensor mapped = Tensor::wrap(Storage::map_file(path), {out, in}, DType::bf16);
  std::filesystem::remove(path);           // the mapping keeps the bytes
  EXPECT_TRUE(all_close(mapped, w, 0.0));  // reads (and maps in) every page
  const int64_t before = rss_file_bytes();
  const ops::LinalgWeight lw(mapped);
  const Tensor x = randn({3, in}, 42);
  const Tensor y = ops::linear(x, lw, {}, DType::bf16);
  const int64_t after = rss_file_bytes();
  if (lw.copy_bytes() == 0) GTEST_SKIP() << "the mapped weight is used in place (no copy)";
  EXPECT_FALSE(lw.holds_plain());
  EXPECT_LT(after, before - static_cast<int64_t>(w.nbytes()) * 3 / 4)
      << "RssFile " << before << " -> " << after << " bytes";
  EXPECT_TRUE(all_close(y, ops::linear(x, w, {}, DType::bf16), 0.0));
  EXPECT_TRUE(all_close(mapped, w, 0.0));  // read back from the file
  EXPECT_TRUE(all_close(lw.tensor(), w, 0.0));
}

// Large NHWC convolutions run in bands of output rows; here every NHWC convolution does (the
// smallest bands), so that bands meet padding, strides, dilation and uneven remainders on small
// shapes.
class ConvBandingGuard {
 public:
  explicit ConvBandingGuard(const cpu::DnnlConvBanding& b) : saved_(cpu::dnnl_conv_banding()) {
    cpu::set_dnnl_conv_banding(b);
  }
  ~ConvBandingGuard() { cpu::set_dnnl_conv_banding(saved_); }
  ConvBandingGuard(const ConvBandingGuard&) = delete;
  ConvBandingGuard& operator=(const ConvBandingGuard&) = delete;

 private:
  cpu::DnnlConvBanding saved_;
};

struct BandCase {
  Shape x;
  int64_t out, k, stride, pad, dil;
  Activation post;
};

const std::vector<BandCase> kBandCases = {
    {{1, 32, 23, 13}, 48, 3, 1, 1, 1, Activation::silu},
    {{2, 32, 17, 16}, 32, 3, 2, 1, 1, Activation::none},
    {{1, 48, 15, 9}, 32, 3, 1, 0, 1, Activation::none},
    {{1, 32, 19, 12}, 32, 5, 1, 4, 2, Activation::gelu},
    {{1, 64, 21, 8}, 32, 1, 1, 0, 1, Activation::none},
};

TEST(OpsLinalg, Conv2dInBandsMatchesReference) {
  std::size_t banded_runs[2] = {0, 0};  // f32, bf16 compute
  for (int64_t bytes : {1, 6000}) {     // one output row per band; a few rows, with a remainder
    const ConvBandingGuard guard({0, bytes});
    uint32_t seed = 500;
    for (const BandCase& c : kBandCases) {
      for (DType compute : {DType::f32, DType::bf16}) {
        ops::Conv2dParams p;
        p.stride = {c.stride, c.stride};
        p.padding = {c.pad, c.pad};
        p.dilation = {c.dil, c.dil};
        p.post = c.post;
        const Tensor x = randn(c.x, seed);  // bands need unit-stride rows
        const Tensor w = randn({c.out, c.x[1], c.k, c.k}, seed + 1, DType::bf16, 0.2);
        const Tensor b = seed % 3 ? randn({c.out}, seed + 2) : Tensor();
        ++seed;
        const Tensor want = ops::ref::conv2d(x, w, b, p, compute);
        const std::size_t banded = cpu::dnnl_banded_conv_count();
        std::ostringstream what;
        what << "x " << name(c.x) << " O " << c.out << " k " << c.k << " stride " << c.stride
             << " pad " << c.pad << " dilation " << c.dil << " compute " << dtype_name(compute)
             << " band bytes/thread " << bytes;
        EXPECT_TRUE(all_close(ops::conv2d(x, w, b, p, compute), want, kGemmAtol, kGemmRtol))
            << what.str();
        EXPECT_TRUE(all_close(ops::conv2d(x, ops::LinalgWeight(w), b, p, compute), want, kGemmAtol,
                              kGemmRtol))
            << what.str();
        banded_runs[compute == DType::bf16] += cpu::dnnl_banded_conv_count() - banded;
      }
    }
  }
  // Bands need the primitive to work in NHWC, which oneDNN picks on AVX-512 (BF16) machines.
  if (cpu::fast_layout_available()) {
    EXPECT_GT(banded_runs[0], 0u) << "no f32 convolution ran in bands";
    EXPECT_GT(banded_runs[1], 0u) << "no bf16 convolution ran in bands";
  }
}

TEST(OpsLinalg, UpsampleConv2dMatchesReference) {
  std::size_t fused_runs[2] = {0, 0};  // f32, bf16 compute
  // Fused nearest-2x upsampling: in bands (forced), by default (small shapes run whole, with the
  // upsampled tensor materialized) and with banding off.
  for (int64_t band_min : {int64_t{0}, cpu::dnnl_conv_banding().min_output_bytes, int64_t{-1}}) {
    const ConvBandingGuard guard({band_min, 4000});
    uint32_t seed = 600;
    for (const Shape& xs : {Shape{1, 32, 7, 5}, Shape{2, 48, 6, 9}, Shape{1, 3, 5, 4}}) {
      for (DType compute : {DType::f32, DType::bf16}) {
        const Tensor x = randn(xs, seed);
        const Tensor w = randn({32, xs[1], 3, 3}, seed + 1, DType::bf16, 0.2);
        const Tensor b = randn({32}, seed + 2);
        ++seed;
        ops::Conv2dParams p;
        p.padding = {1, 1};
        const Tensor up = ops::ref::upsample_nearest(x, {2 * xs[2], 2 * xs[3]});
        const Tensor want = ops::ref::conv2d(up, w, b, p, compute);
        const std::size_t banded = cpu::dnnl_banded_conv_count();
        const Tensor got = ops::upsample_nearest2x_conv2d(x, ops::LinalgWeight(w), b, p, compute);
        if (band_min < 0) {
          EXPECT_EQ(cpu::dnnl_banded_conv_count(), banded) << "banding is off";
        } else {
          fused_runs[compute == DType::bf16] += cpu::dnnl_banded_conv_count() - banded;
        }
        EXPECT_TRUE(all_close(got, want, kGemmAtol, kGemmRtol))
            << "x " << name(xs) << " compute " << dtype_name(compute) << " band min " << band_min;
      }
    }
  }
  if (cpu::fast_layout_available()) {
    EXPECT_GT(fused_runs[0], 0u) << "no f32 upsampling was fused";
    EXPECT_GT(fused_runs[1], 0u) << "no bf16 upsampling was fused";
  }
  // Arguments are checked against the upsampled size.
  ops::Conv2dParams p;
  const ops::LinalgWeight w(randn({4, 3, 3, 3}, 1));
  EXPECT_NO_THROW(ops::upsample_nearest2x_conv2d(randn({1, 3, 2, 2}, 2), w, {}, p));  // 4x4 in
  EXPECT_THROW(ops::upsample_nearest2x_conv2d(randn({1, 3, 1, 1}, 3), w, {}, p), Error);
  EXPECT_THROW(ops::upsample_nearest2x_conv2d(randn({1, 5, 2, 2}, 4), w, {}, p), Error);
}

TEST(OpsLinalg, GroupNormConv2dMatchesReference) {
  // A group norm (+ activation) fused into the next convolution: in bands (forced), by default
  // (small shapes run whole, with the normalized tensor materialized) and with banding off; the
  // normalized values are group_norm's exactly, so the result is the unfused pair's.
  std::size_t fused_runs[2] = {0, 0};  // f32, bf16 compute
  for (int64_t band_min : {int64_t{0}, cpu::dnnl_conv_banding().min_output_bytes, int64_t{-1}}) {
    const ConvBandingGuard guard({band_min, 5000});
    uint32_t seed = 700;
    struct Case {
      Shape x;
      int64_t groups, out, k, pad;
      Activation act;
    };
    for (const Case& c : {Case{{1, 32, 13, 11}, 8, 48, 3, 1, Activation::silu},
                          Case{{2, 64, 9, 7}, 32, 32, 3, 1, Activation::none},
                          Case{{1, 32, 10, 10}, 4, 16, 1, 0, Activation::gelu}}) {
      for (DType compute : {DType::f32, DType::bf16}) {
        const Tensor x = randn(c.x, seed, DType::f32, 3.0);
        const Tensor gw = randn({c.x[1]}, seed + 1), gb = randn({c.x[1]}, seed + 2);
        const Tensor w = randn({c.out, c.x[1], c.k, c.k}, seed + 3, DType::bf16, 0.2);
        const Tensor b = randn({c.out}, seed + 4);
        ++seed;
        ops::Conv2dParams p;
        p.padding = {c.pad, c.pad};
        const std::size_t banded = cpu::dnnl_banded_conv_count();
        const Tensor got = ops::group_norm_conv2d(x, c.groups, gw, gb, 1e-6, c.act,
                                                  ops::LinalgWeight(w), b, p, compute);
        if (band_min >= 0)
          fused_runs[compute == DType::bf16] += cpu::dnnl_banded_conv_count() - banded;
        const std::string what = "x " + name(c.x) + " compute " + std::string(dtype_name(compute)) +
                                 " band min " + std::to_string(band_min);
        const Tensor normed = ops::group_norm(x, c.groups, gw, gb, 1e-6, c.act);
        EXPECT_TRUE(
            all_close(got, ops::ref::conv2d(normed, w, b, p, compute), kGemmAtol, kGemmRtol))
            << what;
        // Against the double reference of both ops (group norm's f32 rounding included).
        const Tensor ref_normed = ops::ref::group_norm(x, c.groups, gw, gb, 1e-6, c.act);
        EXPECT_TRUE(all_close(got, ops::ref::conv2d(ref_normed, w, b, p, compute), 1e-2, 1e-2))
            << what;
      }
    }
  }
  if (cpu::fast_layout_available()) {
    EXPECT_GT(fused_runs[0], 0u) << "no f32 group norm was fused";
    EXPECT_GT(fused_runs[1], 0u) << "no bf16 group norm was fused";
  }
  // Inputs the fused path does not take go through the two ops (same values, same errors).
  const ops::LinalgWeight w(randn({8, 16, 3, 3}, 1, DType::bf16));
  ops::Conv2dParams p;
  p.padding = {1, 1};
  const Tensor xb = randn({1, 16, 6, 6}, 2, DType::bf16);
  EXPECT_TRUE(all_close(
      ops::group_norm_conv2d(xb, 4, {}, {}, 1e-5, Activation::silu, w, {}, p),
      ops::conv2d(ops::group_norm(xb, 4, {}, {}, 1e-5, Activation::silu), w, {}, p), 0.0));
  EXPECT_THROW(
      ops::group_norm_conv2d(randn({1, 16, 6, 6}, 3), 5, {}, {}, 1e-5, Activation::none, w, {}, p),
      Error);  // 16 channels in 5 groups
  EXPECT_THROW(
      ops::group_norm_conv2d(randn({1, 12, 6, 6}, 4), 4, {}, {}, 1e-5, Activation::none, w, {}, p),
      Error);  // 12 channels for a 16-channel weight
}

// --- attention -----------------------------------------------------------------------------------

struct AttnCase {
  int64_t b, h, lq, lk, d, dv;
  int mask;  // 0 none, 1 bool [B, 1, 1, Lk], 2 float [Lq, Lk], 3 bool [B, H, Lq, Lk]
  bool causal;
  std::optional<double> scale;
};

std::string describe_case(const AttnCase& c, DType compute, bool generic, bool transposed) {
  std::ostringstream os;
  os << "attention B " << c.b << " H " << c.h << " Lq " << c.lq << " Lk " << c.lk << " D " << c.d
     << " Dv " << c.dv << " mask " << c.mask << " causal " << c.causal << " scale "
     << (c.scale ? std::to_string(*c.scale) : "default") << " compute " << dtype_name(compute)
     << (generic ? " generic" : " avx512") << (transposed ? " (q, k transposed views)" : "");
  return os.str();
}

// Tolerances: f32 differs from the reference by exp2's polynomial (< 2e-7 relative) and f32
// rounding; bf16 additionally rounds q * scale and the probabilities to bf16 (2^-9 relative).
double attention_atol(DType compute) {
  return compute == DType::bf16 ? 2e-2 : 2e-5;
}
double attention_rtol(DType compute) {
  return compute == DType::bf16 ? 2e-2 : 1e-4;
}

void check_attention(const AttnCase& c, uint32_t seed, bool generic) {
  for (DType compute : {DType::f32, DType::bf16}) {
    for (bool transposed : {false, true}) {
      Tensor q, k;
      if (transposed) {  // [B, L, H, D] storage viewed as [B, H, L, D], like a projection
        q = randn({c.b, c.lq, c.h, c.d}, seed).permute({0, 2, 1, 3});
        k = randn({c.b, c.lk, c.h, c.d}, seed + 1, DType::f16).permute({0, 2, 1, 3});
      } else {
        q = randn({c.b, c.h, c.lq, c.d}, seed);
        k = randn({c.b, c.h, c.lk, c.d}, seed + 1);
      }
      const Tensor v = randn({c.b, c.h, c.lk, c.dv}, seed + 2);
      ops::AttentionOptions o;
      o.is_causal = c.causal;
      o.scale = c.scale;
      if (c.mask == 1) {
        std::vector<uint8_t> m(static_cast<std::size_t>(c.b * c.lk));
        for (std::size_t i = 0; i < m.size(); ++i) m[i] = (i * 7 + seed) % 5 != 0;
        for (int64_t bi = 0; bi < c.b; ++bi) m[bi * c.lk] = 1;  // every row sees a key
        o.mask = Tensor::from_vector(m, {c.b, 1, 1, c.lk}, DType::boolean);
      } else if (c.mask == 2) {
        o.mask = randn({c.lq, c.lk}, seed + 3, DType::f32, 2.0);
      } else if (c.mask == 3) {
        std::vector<uint8_t> m(static_cast<std::size_t>(c.b * c.h * c.lq * c.lk));
        for (std::size_t i = 0; i < m.size(); ++i) m[i] = (i * 13 + seed) % 3 != 0;
        o.mask = Tensor::from_vector(m, {c.b, c.h, c.lq, c.lk}, DType::boolean);
      }
      const Tensor want = ops::ref::attention(q, k, v, o, compute);
      Tensor got;
      if (generic) {
        Tensor mask = o.mask.defined() ? o.mask.expand({c.b, c.h, c.lq, c.lk}) : Tensor();
        const double scale = c.scale ? *c.scale : 1.0 / std::sqrt(static_cast<double>(c.d));
        got = cpu::attention_cpu(q, k, v, mask, scale, c.causal, compute, true);
      } else {
        got = ops::attention(q, k, v, o, compute);
      }
      EXPECT_TRUE(all_close(got, want, attention_atol(compute), attention_rtol(compute)))
          << describe_case(c, compute, generic, transposed);
    }
  }
}

const std::vector<AttnCase> kAttnCases = {
    {1, 1, 1, 1, 1, 1, 0, false, std::nullopt},      {2, 3, 17, 33, 40, 40, 0, false, std::nullopt},
    {1, 2, 70, 77, 64, 17, 1, false, std::nullopt},  {2, 2, 33, 65, 8, 33, 2, false, 0.3},
    {1, 2, 130, 130, 40, 40, 0, true, std::nullopt}, {1, 1, 90, 40, 33, 80, 3, true, std::nullopt},
    {1, 1, 5, 150, 80, 72, 2, true, std::nullopt},   {2, 1, 64, 128, 16, 16, 1, false, 1.5},
};

TEST(OpsLinalg, AttentionMatchesReference) {
  uint32_t seed = 300;
  for (const AttnCase& c : kAttnCases) check_attention(c, seed += 10, false);
}

TEST(OpsLinalg, AttentionGenericKernelsMatchReference) {
  uint32_t seed = 700;
  for (const AttnCase& c : kAttnCases) check_attention(c, seed += 10, true);
}

TEST(OpsLinalg, AttentionFullyMaskedRowIsNaN) {
  // torch's math path: softmax over a row of -inf is NaN.
  const Tensor q = randn({1, 1, 3, 8}, 1), k = randn({1, 1, 4, 8}, 2), v = randn({1, 1, 4, 8}, 3);
  ops::AttentionOptions o;
  o.mask = Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0}, {3, 4},
                               DType::boolean);
  for (DType compute : {DType::f32, DType::bf16}) {
    const Tensor got = ops::attention(q, k, v, o, compute);
    const std::vector<float> g = got.to_vector<float>();
    for (int c = 0; c < 8; ++c) {
      EXPECT_TRUE(std::isnan(g[8 + c])) << "row 1 col " << c;
      EXPECT_TRUE(std::isfinite(g[c]) && std::isfinite(g[16 + c])) << "col " << c;
    }
    EXPECT_TRUE(all_close(got.select(2, 0), ops::ref::attention(q, k, v, o, compute).select(2, 0),
                          attention_atol(compute), attention_rtol(compute)));
  }
}

TEST(OpsLinalg, AttentionWorkspaceIsBlockSized) {
  // The score matrix (Lq x Lk f32 = 4 MB here) must never be allocated: the workspace is packed
  // K, V plus per-thread blocks.
  const int64_t l = 1024, d = 40;
  const Tensor q = randn({1, 1, l, d}, 1), k = randn({1, 1, l, d}, 2), v = randn({1, 1, l, d}, 3);
  cpu::attention_reset_peak_workspace();
  ops::attention(q, k, v, {}, DType::bf16);
  const std::size_t packed = static_cast<std::size_t>(l * d * 2 + l * 48 * 2);
  const std::size_t per_thread = 64 * 1024;
  EXPECT_LE(cpu::attention_peak_workspace_bytes(),
            packed + per_thread * static_cast<std::size_t>(num_threads()));
  EXPECT_LT(cpu::attention_peak_workspace_bytes(), static_cast<std::size_t>(l * l * 4));
}

}  // namespace
}  // namespace diffuse
