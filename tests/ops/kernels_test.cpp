// Every elementwise, activation, norm, shape, reduce and embedding op against its naive reference
// (src/ops/ref) through the op harness: every float dtype, non-contiguous layouts, tail sizes,
// broadcasting, each SIMD level the CPU has; then the error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "diffuse/ops.h"
#include "src/backends/cpu/kernels.h"
#include "src/ops/ref/ref.h"
#include "tests/ops/harness.h"

namespace diffuse::test {
namespace {

namespace ref = diffuse::ops::ref;
using cpu::Isa;

// Runs body() once per instruction-set level this CPU supports (the SIMD kernels have one
// instance per level), restoring the best level afterwards.
template <class Body>
void for_each_isa(Body body) {
  const Isa best = cpu::best_isa();
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(best)) break;
    cpu::set_isa(isa);
    body(std::string(cpu::isa_name(isa)));
  }
  cpu::set_isa(best);
}

// Large shapes exercise the chunking and OpenMP paths, which do not depend on the instruction
// set: they run once, on the best level, to keep the suite fast.
bool is_best(const std::string& isa) {
  return isa == cpu::isa_name(cpu::best_isa());
}

std::string tag(const std::string& name, DType dt, const std::string& isa) {
  return name + " " + std::string(dtype_name(dt)) + " " + isa;
}

const std::vector<DType>& all_float_dtypes() {
  static const std::vector<DType> d = {DType::f32, DType::f16, DType::bf16, DType::f64};
  return d;
}

// Shapes with tails around every vector width (1, 17, 33); on the best level also a chunk
// boundary (4096) and the OpenMP threshold (>= 32768 elements).
std::vector<Shape> unary_shapes(const std::string& isa) {
  std::vector<Shape> s = {{1}, {17}, {3, 33}, {2, 5, 17}};
  if (is_best(isa)) {
    s.push_back({4100});
    s.push_back({3, 11000});
  }
  return s;
}

// --- Elementwise -------------------------------------------------------------------------------

struct Binary {
  const char* name;
  Tensor (*op)(const Tensor&, const Tensor&);
  Tensor (*ref)(const Tensor&, const Tensor&);
};

const Binary kBinary[] = {
    {"add", ops::add, ref::add},
    {"sub", ops::sub, ref::sub},
    {"mul", ops::mul, ref::mul},
    {"div", ops::div, ref::div},
};

TEST(OpsKernels, BinarySameShapeAllLayouts) {
  for_each_isa([](const std::string& isa) {
    for (const Binary& b : kBinary) {
      for (DType dt : all_float_dtypes()) {
        for (Layout la : all_layouts()) {
          for (const Shape& shape : {Shape{2, 17, 33}, Shape{3, 4, 5, 7}, Shape{5, 7000}}) {
            if (shape[0] == 5 && (!is_best(isa) || la == Layout::expanded ||
                                  la == Layout::permuted || dt == DType::f64)) {
              continue;
            }
            OpCase c;
            c.name = tag(b.name, dt, isa) + " " + shape_str(shape);
            c.inputs = {
                input(shape, dt, la),
                uniform(shape, dt, 0.5, 2.0,
                        la == Layout::contiguous ? Layout::transposed : Layout::contiguous)};
            c.op = [&b](const Inputs& in) { return b.op(in[0], in[1]); };
            c.ref = [&b](const Inputs& in) { return b.ref(in[0], in[1]); };
            c.tol = Tolerance::for_dtype(dt);
            expect_case(c);
          }
        }
      }
    }
  });
}

TEST(OpsKernels, BinaryBroadcasting) {
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{2, 17, 33}, {17, 1}}, {{2, 17, 33}, {33}}, {{2, 3, 8, 8}, {1, 3, 1, 1}}, {{1}, {5, 17}},
      {{4, 1, 7}, {1, 5, 1}}, {{17}, {17}},        {{2, 320, 9}, {2, 320, 1}},   {{}, {3, 4}},
  };
  for (const Binary& b : kBinary) {
    for (DType dt : all_float_dtypes()) {
      for (const auto& [sa, sb] : pairs) {
        for (bool swap : {false, true}) {
          OpCase c;
          c.name = tag(b.name, dt, "broadcast") + " " + shape_str(sa) + " " + shape_str(sb);
          c.inputs = {input(swap ? sb : sa, dt), uniform(swap ? sa : sb, dt, 0.5, 2.0)};
          c.op = [&b](const Inputs& in) { return b.op(in[0], in[1]); };
          c.ref = [&b](const Inputs& in) { return b.ref(in[0], in[1]); };
          c.tol = Tolerance::for_dtype(dt);
          expect_case(c);
        }
      }
    }
  }
}

TEST(OpsKernels, ScalarForms) {
  struct Scalar {
    const char* name;
    Tensor (*op)(const Tensor&, double);
    Tensor (*ref)(const Tensor&, double);
  };
  const Scalar forms[] = {{"add_scalar", ops::add, ref::add},
                          {"sub_scalar", ops::sub, ref::sub},
                          {"mul_scalar", ops::mul, ref::mul},
                          {"div_scalar", ops::div, ref::div}};
  for_each_isa([&](const std::string& isa) {
    for (const Scalar& f : forms) {
      for (DType dt : all_float_dtypes()) {
        for (const Shape& shape : unary_shapes(isa)) {
          OpCase c;
          c.name = tag(f.name, dt, isa) + " " + shape_str(shape);
          c.inputs = {input(shape, dt, Layout::strided)};
          c.op = [&f](const Inputs& in) { return f.op(in[0], 0.1234567891); };
          c.ref = [&f](const Inputs& in) { return f.ref(in[0], 0.1234567891); };
          c.tol = Tolerance::for_dtype(dt);
          expect_case(c);
        }
      }
    }
  });
}

struct Unary {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<Tensor(const Tensor&)> ref;
  InputSpec (*spec)(const Shape&, DType, Layout);
};

InputSpec wide_normal(const Shape& s, DType dt, Layout la) {
  return normal(s, dt, 3.0, 0.0, la);
}
InputSpec positive(const Shape& s, DType dt, Layout la) {
  return uniform(s, dt, 0.01, 10.0, la);
}
InputSpec very_wide(const Shape& s, DType dt, Layout la) {
  return normal(s, dt, 30.0, 0.0, la);
}

const std::vector<Unary>& unary_ops() {
  static const std::vector<Unary> ops_list = {
      {"neg", ops::neg, ref::neg, wide_normal},
      {"abs", ops::abs, ref::abs, wide_normal},
      {"exp", ops::exp, ref::exp, wide_normal},
      {"exp_wide", ops::exp, ref::exp, very_wide},
      {"log", ops::log, ref::log, positive},
      {"sqrt", ops::sqrt, ref::sqrt, positive},
      {"rsqrt", ops::rsqrt, ref::rsqrt, positive},
      {"sin", ops::sin, ref::sin, wide_normal},
      {"cos", ops::cos, ref::cos, wide_normal},
      {"square", ops::square, ref::square, wide_normal},
      {"pow2", [](const Tensor& x) { return ops::pow(x, 2.0); },
       [](const Tensor& x) { return ref::pow(x, 2.0); }, wide_normal},
      {"pow0.5", [](const Tensor& x) { return ops::pow(x, 0.5); },
       [](const Tensor& x) { return ref::pow(x, 0.5); }, positive},
      {"pow-1.5", [](const Tensor& x) { return ops::pow(x, -1.5); },
       [](const Tensor& x) { return ref::pow(x, -1.5); }, positive},
      {"clamp", [](const Tensor& x) { return ops::clamp(x, -1.5, 0.7); },
       [](const Tensor& x) { return ref::clamp(x, -1.5, 0.7); }, wide_normal},
      {"clamp_lo", [](const Tensor& x) { return ops::clamp(x, -0.5, INFINITY); },
       [](const Tensor& x) { return ref::clamp(x, -0.5, INFINITY); }, wide_normal},
      {"silu", ops::silu, ref::silu, wide_normal},
      {"silu_wide", ops::silu, ref::silu, very_wide},
      {"gelu", [](const Tensor& x) { return ops::gelu(x); },
       [](const Tensor& x) { return ref::gelu(x); }, wide_normal},
      {"gelu_wide", [](const Tensor& x) { return ops::gelu(x); },
       [](const Tensor& x) { return ref::gelu(x); }, very_wide},
      {"gelu_tanh", [](const Tensor& x) { return ops::gelu(x, true); },
       [](const Tensor& x) { return ref::gelu(x, true); }, wide_normal},
      {"quick_gelu", ops::quick_gelu, ref::quick_gelu, wide_normal},
      {"sigmoid", ops::sigmoid, ref::sigmoid, very_wide},
      {"tanh", ops::tanh, ref::tanh, wide_normal},
      {"tanh_small", ops::tanh, ref::tanh,
       [](const Shape& s, DType dt, Layout la) { return normal(s, dt, 0.01, 0.0, la); }},
      {"relu", ops::relu, ref::relu, wide_normal},
  };
  return ops_list;
}

TEST(OpsKernels, UnaryAndActivations) {
  for_each_isa([](const std::string& isa) {
    for (const Unary& u : unary_ops()) {
      for (DType dt : all_float_dtypes()) {
        for (const Shape& shape : unary_shapes(isa)) {
          const bool big = shape.size() == 2 && shape[1] == 11000;
          if (big && (dt == DType::f64 || dt == DType::f16)) continue;
          const Layout la = shape.size() >= 2 ? Layout::transposed : Layout::strided;
          for (Layout layout : {Layout::contiguous, la}) {
            if (big && layout != Layout::contiguous) continue;
            OpCase c;
            c.name = tag(u.name, dt, isa) + " " + shape_str(shape);
            c.inputs = {u.spec(shape, dt, layout)};
            c.op = [&u](const Inputs& in) { return u.op(in[0]); };
            c.ref = [&u](const Inputs& in) { return u.ref(in[0]); };
            c.tol = Tolerance::for_dtype(dt);
            expect_case(c);
          }
        }
      }
    }
  });
}

// Infinities, NaN, zeros and values at the edges of exp's range, f32 on every SIMD level.
TEST(OpsKernels, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> v = {0.0f,  -0.0f, 1e-30f, -1e-30f, 1e-6f,   -1e-6f,  88.0f,
                                88.7f, 89.0f, -87.0f, -88.0f,  -104.0f, 1000.0f, -1000.0f,
                                inf,   -inf,  nan,    0.5f,    -0.5f,   3.0f,    -3.0f};
  const Tensor x = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  for_each_isa([&](const std::string& isa) {
    for (const char* name : {"exp", "sigmoid", "tanh", "relu", "neg", "abs", "clamp"}) {
      const Unary* u = nullptr;
      for (const Unary& cand : unary_ops()) {
        if (std::string(cand.name) == name) u = &cand;
      }
      ASSERT_NE(u, nullptr);
      const std::vector<float> got = u->op(x).to_vector<float>();
      const std::vector<float> want = u->ref(x).to_vector<float>();
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (std::isnan(want[i])) {
          EXPECT_TRUE(std::isnan(got[i])) << name << "(" << v[i] << ") " << isa;
        } else if (std::isinf(want[i])) {
          EXPECT_EQ(got[i], want[i]) << name << "(" << v[i] << ") " << isa;
        } else {
          EXPECT_NEAR(got[i], want[i], 1e-6 + 1e-6 * std::fabs(want[i]))
              << name << "(" << v[i] << ") " << isa;
        }
      }
    }
    // silu and the GELUs on finite values (their -inf limits are 0 * inf in PyTorch too).
    const Tensor finite = Tensor::from_vector(std::vector<float>(v.begin(), v.begin() + 14), {14});
    for (auto [op, rf] :
         std::vector<std::pair<Tensor (*)(const Tensor&), Tensor (*)(const Tensor&)>>{
             {ops::silu, ref::silu}, {ops::quick_gelu, ref::quick_gelu}}) {
      const std::vector<float> got = op(finite).to_vector<float>();
      const std::vector<float> want = rf(finite).to_vector<float>();
      for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_NEAR(got[i], want[i], 1e-6 + 1e-6 * std::fabs(want[i])) << v[i] << " " << isa;
      }
    }
    const std::vector<float> g = ops::gelu(finite).to_vector<float>();
    const std::vector<float> gw = ref::gelu(finite).to_vector<float>();
    for (std::size_t i = 0; i < g.size(); ++i) {
      EXPECT_NEAR(g[i], gw[i], 1e-6 + 1e-6 * std::fabs(gw[i])) << v[i] << " " << isa;
    }
  });
  // exp overflows to inf and underflows to 0 like PyTorch.
  const std::vector<float> e = ops::exp(x).to_vector<float>();
  EXPECT_EQ(e[8], inf);
  EXPECT_EQ(e[11], 0.0f);
  EXPECT_EQ(e[14], inf);
  EXPECT_EQ(e[15], 0.0f);
  EXPECT_TRUE(std::isnan(e[16]));
}

TEST(OpsKernels, Where) {
  for (DType dt :
       {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64, DType::i32, DType::u8}) {
    for (Layout la : all_layouts()) {
      const std::vector<std::array<Shape, 3>> shapes = {
          {Shape{2, 17, 33}, Shape{2, 17, 33}, Shape{2, 17, 33}},
          {Shape{17, 1}, Shape{2, 17, 33}, Shape{33}},
          {Shape{1}, Shape{5, 7000}, Shape{5, 1}}};
      for (const auto& s : shapes) {
        if (s[1][0] == 5 && la != Layout::contiguous) continue;
        OpCase c;
        c.name = tag("where", dt, "") + " " + shape_str(s[0]) + shape_str(s[1]) + shape_str(s[2]);
        c.inputs = {booleans(s[0], la), integers(s[1], dt, -50, 50, la), integers(s[2], dt, 0, 9)};
        c.op = [](const Inputs& in) { return ops::where(in[0], in[1], in[2]); };
        c.ref = [](const Inputs& in) { return ref::where(in[0], in[1], in[2]); };
        c.tol = Tolerance::exact();
        expect_case(c);
      }
    }
  }
}

TEST(OpsKernels, Geglu) {
  for_each_isa([](const std::string& isa) {
    for (DType dt : all_float_dtypes()) {
      for (const Shape& shape : {Shape{2, 2}, Shape{3, 34}, Shape{2, 7, 66}, Shape{2, 64, 1280}}) {
        if (shape[1] == 64 && !is_best(isa)) continue;
        for (Layout la : {Layout::contiguous, Layout::transposed, Layout::expanded}) {
          OpCase c;
          c.name = tag("geglu", dt, isa) + " " + shape_str(shape);
          c.inputs = {normal(shape, dt, 2.0, 0.0, la)};
          c.op = [](const Inputs& in) { return ops::geglu(in[0]); };
          c.ref = [](const Inputs& in) { return ref::geglu(in[0]); };
          c.tol = Tolerance::for_dtype(dt);
          expect_case(c);
        }
      }
    }
  });
}

TEST(OpsKernels, ActivationDispatch) {
  using ops::Activation;
  for (Activation kind : {Activation::none, Activation::silu, Activation::gelu,
                          Activation::gelu_tanh, Activation::quick_gelu, Activation::relu}) {
    for (DType dt : all_float_dtypes()) {
      OpCase c;
      c.name = tag("activation " + std::to_string(static_cast<int>(kind)), dt, "");
      c.inputs = {normal({3, 37}, dt, 3.0, 0.0, Layout::transposed)};
      c.op = [kind](const Inputs& in) { return ops::activation(in[0], kind); };
      c.ref = [kind](const Inputs& in) { return ref::activation(in[0], kind); };
      c.tol = Tolerance::for_dtype(dt);
      expect_case(c);
    }
  }
}

// --- Norms ---------------------------------------------------------------------------------------

TEST(OpsKernels, GroupNorm) {
  using ops::Activation;
  struct Config {
    Shape shape;
    int64_t groups;
  };
  const Config configs[] = {{{2, 64, 8, 8}, 32}, {{1, 6, 17}, 3},    {{2, 32, 5, 7}, 8},
                            {{3, 12}, 4},        {{1, 4, 33, 3}, 1}, {{2, 320, 16, 16}, 32}};
  for_each_isa([&](const std::string& isa) {
    for (DType dt : float_dtypes()) {
      for (const Config& cfg : configs) {
        for (Activation post : {Activation::none, Activation::silu}) {
          for (int affine = 0; affine < 3; ++affine) {  // none, weight only, weight + bias
            for (Layout la : {Layout::contiguous, Layout::permuted}) {
              const bool big = cfg.shape[1] == 320;
              if (big && (!is_best(isa) || affine != 2 || la != Layout::contiguous)) continue;
              const int64_t ch = cfg.shape[1];
              OpCase c;
              c.name = tag("group_norm", dt, isa) + " " + shape_str(cfg.shape) + " groups " +
                       std::to_string(cfg.groups) + " affine " + std::to_string(affine) +
                       (post == Activation::silu ? " +silu" : "");
              // Offset data (mean 5, std 0.5): a naive single-pass variance would cancel.
              c.inputs = {normal(cfg.shape, dt, 0.5, 5.0, la), normal({ch}, DType::f32, 1.0, 1.0),
                          normal({ch}, DType::f32, 1.0)};
              const int64_t g = cfg.groups;
              c.op = [g, affine, post](const Inputs& in) {
                return ops::group_norm(in[0], g, affine > 0 ? in[1] : Tensor(),
                                       affine > 1 ? in[2] : Tensor(), 1e-5, post);
              };
              c.ref = [g, affine, post](const Inputs& in) {
                return ref::group_norm(in[0], g, affine > 0 ? in[1] : Tensor(),
                                       affine > 1 ? in[2] : Tensor(), 1e-5, post);
              };
              c.tol = Tolerance::for_dtype(dt);
              expect_case(c);
            }
          }
        }
      }
    }
  });
}

TEST(OpsKernels, GroupNormLargeEps) {
  // A large eps makes its place (inside the square root) visible.
  for (DType dt : float_dtypes()) {
    OpCase c;
    c.name = tag("group_norm eps 0.5", dt, "");
    c.inputs = {normal({2, 8, 5, 5}, dt, 0.7, 1.0), normal({8}, DType::f32, 1.0)};
    c.op = [](const Inputs& in) { return ops::group_norm(in[0], 4, in[1], Tensor(), 0.5); };
    c.ref = [](const Inputs& in) { return ref::group_norm(in[0], 4, in[1], Tensor(), 0.5); };
    c.tol = Tolerance::for_dtype(dt);
    expect_case(c);
  }
}

TEST(OpsKernels, LayerNorm) {
  for_each_isa([](const std::string& isa) {
    for (DType dt : float_dtypes()) {
      for (const Shape& shape : {Shape{4, 17, 33}, Shape{2, 320}, Shape{1, 1}, Shape{3, 1025}}) {
        for (int64_t k : {int64_t{1}, int64_t{2}}) {
          for (bool affine : {false, true}) {
            for (Layout la : {Layout::contiguous, Layout::transposed}) {
              const Shape trailing(shape.end() - k, shape.end());
              OpCase c;
              c.name = tag("layer_norm", dt, isa) + " " + shape_str(shape) + " dims " +
                       std::to_string(k) + (affine ? " affine" : "");
              c.inputs = {normal(shape, dt, 2.0, -3.0, la), normal(trailing, DType::f32, 1.0, 1.0),
                          normal(trailing, DType::f32, 1.0)};
              c.op = [k, affine](const Inputs& in) {
                return ops::layer_norm(in[0], k, affine ? in[1] : Tensor(),
                                       affine ? in[2] : Tensor(), 1e-5);
              };
              c.ref = [k, affine](const Inputs& in) {
                return ref::layer_norm(in[0], k, affine ? in[1] : Tensor(),
                                       affine ? in[2] : Tensor(), 1e-5);
              };
              c.tol = Tolerance::for_dtype(dt);
              expect_case(c);
            }
          }
        }
      }
    }
  });
  // A large eps makes its place (inside the square root) visible.
  for (DType dt : float_dtypes()) {
    OpCase c;
    c.name = tag("layer_norm eps 0.5", dt, "");
    c.inputs = {normal({3, 40}, dt, 0.7, 1.0)};
    c.op = [](const Inputs& in) { return ops::layer_norm(in[0], 1, Tensor(), Tensor(), 0.5); };
    c.ref = [](const Inputs& in) { return ref::layer_norm(in[0], 1, Tensor(), Tensor(), 0.5); };
    c.tol = Tolerance::for_dtype(dt);
    expect_case(c);
  }
  // The Shape form is the same op.
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 4, 8, 3, 3}, {3, 2});
  EXPECT_EQ(ops::layer_norm(x, Shape{2}).to_vector<float>(),
            ops::layer_norm(x, 1).to_vector<float>());
}

TEST(OpsKernels, RmsNorm) {
  for_each_isa([](const std::string& isa) {
    for (DType dt : float_dtypes()) {
      for (const Shape& shape : {Shape{4, 17, 33}, Shape{2, 64}, Shape{5, 3072}}) {
        for (bool weighted : {false, true}) {
          OpCase c;
          c.name = tag("rms_norm", dt, isa) + " " + shape_str(shape) + (weighted ? " w" : "");
          c.inputs = {normal(shape, dt, 2.0, 0.5, Layout::strided),
                      normal({shape.back()}, DType::f32, 1.0, 1.0)};
          c.op = [weighted](const Inputs& in) {
            return ops::rms_norm(in[0], weighted ? in[1] : Tensor(), 1e-6);
          };
          c.ref = [weighted](const Inputs& in) {
            return ref::rms_norm(in[0], weighted ? in[1] : Tensor(), 1e-6);
          };
          c.tol = Tolerance::for_dtype(dt);
          expect_case(c);
        }
      }
    }
  });
}

TEST(OpsKernels, Softmax) {
  for_each_isa([](const std::string& isa) {
    for (DType dt : float_dtypes()) {
      for (const Shape& shape : {Shape{4, 17, 33}, Shape{2, 1}, Shape{3, 4097}}) {
        for (int64_t dim = -1; dim < static_cast<int64_t>(shape.size()); ++dim) {
          for (double scale : {1.0, 50.0}) {
            OpCase c;
            c.name = tag("softmax", dt, isa) + " " + shape_str(shape) + " dim " +
                     std::to_string(dim) + " scale " + std::to_string(scale);
            c.inputs = {normal(shape, dt, scale, 100.0, Layout::transposed)};
            c.op = [dim](const Inputs& in) { return ops::softmax(in[0], dim); };
            c.ref = [dim](const Inputs& in) { return ref::softmax(in[0], dim); };
            c.tol = Tolerance::for_dtype(dt);
            expect_case(c);
          }
        }
      }
    }
  });
  // -inf entries get probability 0; a row of -inf is NaN (PyTorch).
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x =
      Tensor::from_vector(std::vector<float>{-inf, 0.0f, 0.0f, -inf, -inf, -inf}, {2, 3});
  const std::vector<float> y = ops::softmax(x).to_vector<float>();
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_FLOAT_EQ(y[1], 0.5f);
  EXPECT_FLOAT_EQ(y[2], 0.5f);
  EXPECT_TRUE(std::isnan(y[3]) && std::isnan(y[4]) && std::isnan(y[5]));
}

// --- Reductions ----------------------------------------------------------------------------------

TEST(OpsKernels, Reductions) {
  struct Reduce {
    const char* name;
    std::function<Tensor(const Tensor&, int64_t, bool)> op, rf;
  };
  const Reduce reductions[] = {
      {"sum", [](const Tensor& x, int64_t d, bool k) { return ops::sum(x, d, k); },
       [](const Tensor& x, int64_t d, bool k) { return ref::sum(x, d, k); }},
      {"mean", [](const Tensor& x, int64_t d, bool k) { return ops::mean(x, d, k); },
       [](const Tensor& x, int64_t d, bool k) { return ref::mean(x, d, k); }},
      {"var", [](const Tensor& x, int64_t d, bool k) { return ops::var(x, d, 1, k); },
       [](const Tensor& x, int64_t d, bool k) { return ref::var(x, d, 1, k); }},
      {"var0", [](const Tensor& x, int64_t d, bool k) { return ops::var(x, d, 0, k); },
       [](const Tensor& x, int64_t d, bool k) { return ref::var(x, d, 0, k); }},
      {"max", [](const Tensor& x, int64_t d, bool k) { return ops::max(x, d, k); },
       [](const Tensor& x, int64_t d, bool k) { return ref::max(x, d, k); }},
  };
  for_each_isa([&](const std::string& isa) {
    for (const Reduce& r : reductions) {
      for (DType dt : all_float_dtypes()) {
        for (const Shape& shape : {Shape{4, 17, 33}, Shape{3, 20000}, Shape{1}}) {
          const bool big = shape.size() == 2 && shape[1] == 20000;
          if (big && (!is_best(isa) || dt == DType::f16 || dt == DType::f64)) continue;
          for (int64_t dim = -1; dim < static_cast<int64_t>(shape.size()); ++dim) {
            for (bool keepdim : {false, true}) {
              if (big && keepdim) continue;
              OpCase c;
              c.name = tag(r.name, dt, isa) + " " + shape_str(shape) + " dim " +
                       std::to_string(dim) + (keepdim ? " keepdim" : "");
              // Offset data: the variance must not cancel.
              c.inputs = {normal(shape, dt, 1.0, 10.0, Layout::transposed)};
              c.op = [&r, dim, keepdim](const Inputs& in) { return r.op(in[0], dim, keepdim); };
              c.ref = [&r, dim, keepdim](const Inputs& in) { return r.rf(in[0], dim, keepdim); };
              c.tol = Tolerance::for_dtype(dt);
              if (std::string(r.name) == "max") c.tol = Tolerance::exact();
              if (shape.size() == 1 && r.name[0] == 'v') continue;  // one element: NaN var
              expect_case(c);
            }
          }
        }
      }
    }
  });
}

// --- Shape ops -----------------------------------------------------------------------------------

TEST(OpsKernels, Concat) {
  for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64, DType::boolean}) {
    for (int64_t dim : {0, 1, 2, -1}) {
      for (Layout la : all_layouts()) {
        Shape a = {2, 3, 17}, b = {2, 3, 17}, c2 = {2, 3, 17};
        const int64_t d = dim < 0 ? dim + 3 : dim;
        b[d] = 5;
        c2[d] = 1;
        OpCase c;
        c.name = tag("concat", dt, "") + " dim " + std::to_string(dim);
        c.inputs = {integers(a, dt, 0, 2, la), integers(b, dt, 0, 2), integers(c2, dt, 0, 2, la)};
        if (dt != DType::boolean) {
          for (InputSpec& s : c.inputs) s = integers(s.shape, dt, -100, 100, s.layout);
        }
        c.op = [dim](const Inputs& in) { return ops::concat({in[0], in[1], in[2]}, dim); };
        c.ref = [dim](const Inputs& in) { return ref::concat({in[0], in[1], in[2]}, dim); };
        c.tol = Tolerance::exact();
        expect_case(c);
      }
    }
  }
  // The UNet skip concatenation, large enough for the parallel path.
  OpCase c;
  c.name = "concat unet skip";
  c.inputs = {input({2, 64, 24, 24}, DType::f32), input({2, 32, 24, 24}, DType::f32)};
  c.op = [](const Inputs& in) { return ops::concat({in[0], in[1]}, 1); };
  c.ref = [](const Inputs& in) { return ref::concat({in[0], in[1]}, 1); };
  c.tol = Tolerance::exact();
  expect_case(c);
}

TEST(OpsKernels, Pad) {
  using ops::PadMode;
  struct Config {
    PadMode mode;
    std::vector<int64_t> pads;
  };
  const Config configs[] = {
      {PadMode::constant, {1, 2}},         {PadMode::constant, {0, 1, 0, 1}},
      {PadMode::constant, {-1, 2, 3, -2}}, {PadMode::constant, {1, 1, 1, 1, 1, 0}},
      {PadMode::reflect, {1, 1, 1, 1}},    {PadMode::reflect, {4, 2}},
      {PadMode::replicate, {2, 3, 1, 0}},  {PadMode::replicate, {5, 5}},
  };
  for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::u8}) {
    for (const Config& cfg : configs) {
      for (Layout la : {Layout::contiguous, Layout::transposed, Layout::permuted}) {
        OpCase c;
        c.name = tag("pad", dt, "") + " mode " + std::to_string(static_cast<int>(cfg.mode)) + " " +
                 shape_str(cfg.pads);
        c.inputs = {integers({2, 3, 6, 7}, dt, 0, 100, la)};
        c.op = [&cfg](const Inputs& in) { return ops::pad(in[0], cfg.pads, cfg.mode, 7.0); };
        c.ref = [&cfg](const Inputs& in) { return ref::pad(in[0], cfg.pads, cfg.mode, 7.0); };
        c.tol = Tolerance::exact();
        expect_case(c);
      }
    }
  }
}

TEST(OpsKernels, UpsampleNearest) {
  for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::i64}) {
    for (Layout la : {Layout::contiguous, Layout::permuted, Layout::strided}) {
      // scale_factor 2 (diffusers Upsample2D) against the size form of the reference.
      OpCase c;
      c.name = tag("upsample_nearest x2", dt, "");
      c.inputs = {integers({2, 3, 5, 7}, dt, -50, 50, la)};
      c.op = [](const Inputs& in) { return ops::upsample_nearest(in[0], 2.0); };
      c.ref = [](const Inputs& in) { return ref::upsample_nearest(in[0], {10, 14}); };
      c.tol = Tolerance::exact();
      expect_case(c);
      for (const Shape& size : {Shape{12, 9}, Shape{3, 5}, Shape{5, 7}, Shape{17, 33}}) {
        OpCase s;
        s.name = tag("upsample_nearest size", dt, "") + " " + shape_str(size);
        s.inputs = {integers({2, 3, 5, 7}, dt, -50, 50, la)};
        s.op = [size](const Inputs& in) { return ops::upsample_nearest(in[0], size); };
        s.ref = [size](const Inputs& in) { return ref::upsample_nearest(in[0], size); };
        s.tol = Tolerance::exact();
        expect_case(s);
      }
    }
  }
  // PyTorch's index rule on a known case: 3 -> 5 picks floor(i * 0.6) = 0, 0, 1, 1, 2.
  const Tensor x = Tensor::from_vector(std::vector<float>{10, 20, 30}, {1, 1, 1, 3});
  EXPECT_EQ(ops::upsample_nearest(x, Shape{1, 5}).to_vector<float>(),
            (std::vector<float>{10, 10, 20, 20, 30}));
}

TEST(OpsKernels, AvgPool2d) {
  struct Config {
    int64_t kernel, stride, padding;
    bool include_pad, ceil;
  };
  const Config configs[] = {{2, 2, 0, true, false}, {3, 2, 1, true, false}, {3, 2, 1, false, false},
                            {3, 2, 1, true, true},  {3, 2, 1, false, true}, {2, 0, 1, true, true},
                            {3, 1, 0, true, false}, {1, 1, 0, true, false}};
  for (DType dt : all_float_dtypes()) {
    for (const Config& cfg : configs) {
      for (const Shape& shape : {Shape{2, 3, 8, 8}, Shape{1, 2, 7, 9}, Shape{3, 6, 5}}) {
        OpCase c;
        c.name = tag("avg_pool2d", dt, "") + " " + shape_str(shape) + " k" +
                 std::to_string(cfg.kernel) + " s" + std::to_string(cfg.stride) + " p" +
                 std::to_string(cfg.padding) + (cfg.include_pad ? " incl" : "") +
                 (cfg.ceil ? " ceil" : "");
        c.inputs = {input(shape, dt, Layout::transposed)};
        c.op = [cfg](const Inputs& in) {
          return ops::avg_pool2d(in[0], cfg.kernel, cfg.stride, cfg.padding, cfg.include_pad,
                                 cfg.ceil);
        };
        c.ref = [cfg](const Inputs& in) {
          return ref::avg_pool2d(in[0], cfg.kernel, cfg.stride, cfg.padding, cfg.include_pad,
                                 cfg.ceil);
        };
        c.tol = Tolerance::for_dtype(dt);
        if (dt == DType::f64) c.tol = Tolerance::for_dtype(DType::f32);  // f32 accumulation
        expect_case(c);
      }
    }
  }
  // PyTorch: avg_pool2d(arange(16).view(1, 1, 4, 4), 3, 2, 1, ceil_mode=True) is 3x3; the
  // corner windows are clipped to the padded input (divisor 9 first, 4 last).
  std::vector<float> v(16);
  for (int i = 0; i < 16; ++i) v[i] = static_cast<float>(i);
  const Tensor x = Tensor::from_vector(v, {1, 1, 4, 4});
  const Tensor y = ops::avg_pool2d(x, 3, 2, 1, true, true);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 3, 3}));
  EXPECT_FLOAT_EQ(y.to_vector<float>()[0], (0 + 1 + 4 + 5) / 9.0f);
  EXPECT_FLOAT_EQ(y.to_vector<float>()[8], 15 / 4.0f);
  EXPECT_EQ(ops::avg_pool2d(x, 3, 2, 1, true, false).shape(), (Shape{1, 1, 2, 2}));
}

TEST(OpsKernels, Embedding) {
  for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::i64}) {
    for (DType id_dt : {DType::i32, DType::i64}) {
      for (Layout la : {Layout::contiguous, Layout::transposed}) {
        OpCase c;
        c.name = tag("embedding", dt, "") + " ids " + std::string(dtype_name(id_dt));
        c.inputs = {integers({50, 17}, dt, -100, 100, la), integers({3, 5}, id_dt, 0, 50, la)};
        c.op = [](const Inputs& in) { return ops::embedding(in[0], in[1]); };
        c.ref = [](const Inputs& in) { return ref::embedding(in[0], in[1]); };
        c.tol = Tolerance::exact();
        expect_case(c);
      }
    }
  }
}

// --- Timestep embedding ------------------------------------------------------------------------

TEST(OpsKernels, TimestepEmbedding) {
  struct Config {
    int64_t dim;
    bool flip;
    double shift, scale;
  };
  const Config configs[] = {{320, true, 0.0, 1.0},    {320, false, 1.0, 1.0}, {33, true, 1.0, 1.0},
                            {256, true, 0.0, 1000.0}, {8, false, 1.0, 2.5},   {1, false, 1.0, 1.0}};
  for (const Config& cfg : configs) {
    for (DType dt : {DType::f32, DType::i64}) {
      OpCase c;
      c.name = tag("timestep_embedding", dt, "") + " dim " + std::to_string(cfg.dim);
      c.inputs = {integers({6}, dt, 0, 1000)};
      c.op = [cfg](const Inputs& in) {
        return ops::timestep_embedding(in[0], cfg.dim, cfg.flip, cfg.shift, cfg.scale);
      };
      c.ref = [cfg](const Inputs& in) {
        return ref::timestep_embedding(in[0], cfg.dim, cfg.flip, cfg.shift, cfg.scale);
      };
      c.tol = Tolerance{1e-12, 2e-6, 0.0};
      expect_case(c);
    }
  }
  // Against the exact sinusoid in double: only float32 rounding of the argument separates them.
  const Tensor t = Tensor::from_vector(std::vector<float>{0.0f, 1.0f, 999.0f}, {3});
  const std::vector<float> y = ops::timestep_embedding(t, 4, false, 1.0).to_vector<float>();
  // half = 2, freq = [1, 1e-4]: emb(t) = [sin t, sin 1e-4 t, cos t, cos 1e-4 t].
  for (int r = 0; r < 3; ++r) {
    const double tv = r == 0 ? 0.0 : (r == 1 ? 1.0 : 999.0);
    EXPECT_NEAR(y[r * 4 + 0], std::sin(tv), 1e-4);
    EXPECT_NEAR(y[r * 4 + 1], std::sin(tv * 1e-4), 1e-6);
    EXPECT_NEAR(y[r * 4 + 2], std::cos(tv), 1e-4);
    EXPECT_NEAR(y[r * 4 + 3], std::cos(tv * 1e-4), 1e-6);
  }
}

// --- Error paths ----------------------------------------------------------------------------

TEST(OpsKernels, ErrorsNameTheOpShapesAndDtypes) {
  const Tensor a = Tensor::zeros({2, 3});
  const Tensor h = Tensor::zeros({2, 3}, DType::f16);
  const Tensor b4 = Tensor::zeros({4});
  const Tensor ints = Tensor::zeros({2, 3}, DType::i32);
  expect_error([&] { ops::add(a, h); }, {"add", "f32", "f16"});
  expect_error([&] { ops::mul(a, b4); }, {"mul", "[2, 3]", "[4]"});
  expect_error([&] { ops::exp(ints); }, {"exp", "i32"});
  expect_error([&] { ops::add(ints, ints); }, {"add", "i32"});
  expect_error([&] { ops::div(Tensor(), a); }, {"div", "undefined"});
  expect_error([&] { ops::clamp(a, 1.0, 0.0); }, {"clamp", "lo <= hi"});
  expect_error([&] { ops::where(a, a, a); }, {"where", "boolean"});
  expect_error(
      [&] {
        ops::where(Tensor::zeros({2, 3}, DType::boolean), a, h);
      },
      {"where", "f32", "f16"});
  expect_error([&] { ops::geglu(Tensor::zeros({2, 5})); }, {"geglu", "[2, 5]"});
  expect_error(
      [&] {
        ops::group_norm(Tensor::zeros({2, 6, 4}), 4);
      },
      {"group_norm", "6", "4 groups", "[2, 6, 4]"});
  expect_error([&] { ops::group_norm(Tensor::zeros({6}), 2); }, {"group_norm", "[6]"});
  expect_error(
      [&] {
        ops::group_norm(Tensor::zeros({2, 6, 4}), 2, Tensor::zeros({5}));
      },
      {"group_norm", "weight", "[6]", "[5]"});
  expect_error(
      [&] {
        ops::group_norm(Tensor::zeros({2, 6}, DType::f64), 2);
      },
      {"group_norm", "f64"});
  expect_error([&] { ops::layer_norm(a, Shape{2}); }, {"layer_norm", "[2]", "[2, 3]"});
  expect_error([&] { ops::layer_norm(a, 3); }, {"layer_norm", "normalized_dims", "[2, 3]"});
  expect_error([&] { ops::layer_norm(a, 1, Tensor::zeros({2})); }, {"layer_norm", "weight"});
  expect_error([&] { ops::rms_norm(a, Tensor::zeros({2})); }, {"rms_norm", "weight", "[3]"});
  expect_error([&] { ops::softmax(a, 2); }, {"softmax", "dim 2", "[2, 3]"});
  expect_error([&] { ops::sum(a, -3); }, {"sum", "dim -3", "[2, 3]"});
  expect_error([&] { ops::max(Tensor::zeros({2, 0}), 1); }, {"max", "empty"});
  expect_error([&] { ops::concat({}, 0); }, {"concat"});
  expect_error([&] { ops::concat({a, Tensor::zeros({3, 3})}, 1); }, {"concat", "[3, 3]", "[2, 3]"});
  expect_error([&] { ops::concat({a, h}, 0); }, {"concat", "f16", "f32"});
  expect_error([&] { ops::concat({a, a}, 2); }, {"concat", "dim 2"});
  expect_error([&] { ops::pad(a, {1}); }, {"pad", "pairs"});
  expect_error([&] { ops::pad(a, {3, 0}, ops::PadMode::reflect); }, {"pad", "reflect", "3"});
  expect_error([&] { ops::pad(a, {-2, -2}); }, {"pad", "negative"});
  expect_error([&] { ops::upsample_nearest(a, 2.0); }, {"upsample_nearest", "[2, 3]"});
  expect_error(
      [&] {
        ops::upsample_nearest(Tensor::zeros({1, 1, 2, 2}), -1.0);
      },
      {"upsample_nearest", "scale"});
  expect_error(
      [&] {
        ops::avg_pool2d(Tensor::zeros({1, 1, 4, 4}), 2, 2, 2);
      },
      {"avg_pool2d", "padding"});
  expect_error([&] { ops::avg_pool2d(Tensor::zeros({4, 4}), 2); }, {"avg_pool2d", "[4, 4]"});
  const Tensor w = Tensor::zeros({10, 4});
  expect_error(
      [&] {
        ops::embedding(w, Tensor::from_vector(std::vector<int64_t>{1, 10}, {2}));
      },
      {"embedding", "id 10", "10)"});
  expect_error([&] { ops::embedding(w, Tensor::from_vector(std::vector<int64_t>{-1}, {1})); },
               {"embedding", "id -1"});
  expect_error([&] { ops::embedding(w, a); }, {"embedding", "i32 or i64", "f32"});
  expect_error([&] { ops::timestep_embedding(a, 8); }, {"timestep_embedding", "[2, 3]"});
  expect_error([&] { ops::timestep_embedding(Tensor::zeros({2}), 2, false, 1.0); },
               {"timestep_embedding", "downscale_freq_shift"});
}

}  // namespace
}  // namespace diffuse::test
