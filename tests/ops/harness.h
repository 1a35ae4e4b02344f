// The op test harness: every op case runs the public op (which dispatches on the device of its
// inputs) and the naive reference of src/ops/ref on the same random inputs, and compares.
// In the spirit of llama.cpp's tests/test-backend-ops.cpp.
//
// Usage:
//
//   #include "tests/ops/harness.h"
//   using namespace diffuse::test;
//
//   TEST(OpsKernels, Add) {
//     for (DType dt : float_dtypes()) {
//       for (Layout layout : all_layouts()) {
//         OpCase c;
//         c.name = "add";
//         c.inputs = {input({2, 17, 33}, dt, layout), input({17, 1}, dt)};  // broadcasting
//         c.op = [](const Inputs& in) { return diffuse::ops::add(in[0], in[1]); };
//         c.ref = [](const Inputs& in) { return diffuse::ops::ref::add(in[0], in[1]); };
//         c.tol = Tolerance::for_dtype(dt);  // or Tolerance{nmse, atol, rtol}
//         expect_case(c);  // runs on every backend of backends(), GTest failure with details
//       }
//     }
//   }
//
// Inputs are generated on the CPU from `seed` (same values for the op and the reference), then
// the base tensor is uploaded to the backend's device and the layout's view is taken there, so a
// non-contiguous case stays non-contiguous on every backend. The reference always runs on the
// CPU. A case passes when the output has the reference's shape and dtype, NMSE <= tol.nmse and
// every element satisfies |out - ref| <= tol.atol + tol.rtol * |ref| (NaN must match NaN, inf
// must match inf of the same sign). Failures print the case, every input's dtype/shape/layout
// and the worst element with its index. Error paths are tested with expect_error().
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse::test {

using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;

// How an input tensor is laid out in memory. Every layout holds the same logical values for a
// given seed only within a layout; the op and the reference see the same tensor.
enum class Layout {
  contiguous,
  transposed,  // stored with the last two dims swapped (rank >= 2; rank 1 falls back to strided)
  strided,     // every other element of a larger buffer along the last dim, non-zero offset
  expanded,    // the first dim of extent > 1 is a stride-0 broadcast of one slice (read-only use)
  permuted,    // rank >= 3: stored channels-last ([N, H, W, C] for NCHW), then permuted back
};

const char* layout_name(Layout layout);
// All layouts, contiguous first.
const std::vector<Layout>& all_layouts();
// f32, f16, bf16.
const std::vector<DType>& float_dtypes();

// How the values are drawn.
enum class Dist {
  normal,   // N(0, 1) * scale + offset
  uniform,  // U[lo, hi)
  integer,  // uniform integers in [lo, hi) (i32/i64 ids, also in floating dtypes)
  boolean,  // true with probability 1/2
};

struct InputSpec {
  Shape shape;
  DType dtype = DType::f32;
  Layout layout = Layout::contiguous;
  Dist dist = Dist::normal;
  double lo = 0.0, hi = 1.0;         // uniform / integer range
  double scale = 1.0, offset = 0.0;  // normal
};

// Shorthands for the InputSpec of each distribution.
InputSpec input(Shape shape, DType dtype = DType::f32, Layout layout = Layout::contiguous);
InputSpec normal(Shape shape, DType dtype, double scale, double offset = 0.0,
                 Layout layout = Layout::contiguous);
InputSpec uniform(Shape shape, DType dtype, double lo, double hi,
                  Layout layout = Layout::contiguous);
InputSpec integers(Shape shape, DType dtype, int64_t lo, int64_t hi,
                   Layout layout = Layout::contiguous);
InputSpec booleans(Shape shape, Layout layout = Layout::contiguous);

struct Tolerance {
  double nmse = 1e-12;  // sum((out - ref)^2) / sum(ref^2); negative disables
  double atol = 1e-6;   // elementwise bound atol + rtol * |ref|; negative atol disables
  double rtol = 1e-5;
  // Defaults for an op whose result is rounded once to `dtype` from an accurate f32 value:
  // f32 (nmse 1e-11, 1e-5 + 1e-5|ref|), f16 (1e-6, 2e-3 + 2e-3|ref|), bf16 (1e-4,
  // 1.6e-2 + 1.6e-2|ref|), f64 (1e-20, 1e-12 + 1e-12|ref|), exact for integers/bool.
  static Tolerance for_dtype(DType dtype);
  // Bit-exact comparison (copies, gathers, max).
  static Tolerance exact();
};

struct OpCase {
  std::string name;  // printed on failure together with the inputs
  std::vector<InputSpec> inputs;
  OpFn op;   // calls the public op
  OpFn ref;  // calls diffuse::ops::ref
  Tolerance tol;
  uint64_t seed = 42;
};

// A device on which op cases run. upload() copies a contiguous CPU tensor to the device,
// download() copies a device tensor back to a contiguous CPU tensor.
struct Backend {
  std::string name;
  Device device;
  std::function<Tensor(const Tensor&)> upload;
  std::function<Tensor(const Tensor&)> download;
};

// The backends every case runs on: "cpu" always; further ones (CUDA) register themselves with
// add_backend() before the tests run.
const std::vector<Backend>& backends();
void add_backend(Backend backend);

struct CaseResult {
  bool passed = false;
  std::string message;  // the whole report on failure (case, inputs, worst element)
  double nmse = 0.0;
  double max_abs_err = 0.0;
};

// Builds the inputs (on the CPU) of `c` exactly as run_case does.
Inputs make_inputs(const OpCase& c);
// Runs one case on one backend. An exception from the op or the reference is a failure whose
// message includes the exception text.
CaseResult run_case(const OpCase& c, const Backend& backend);
// Runs `c` on every backend and reports each failure as a GoogleTest non-fatal failure.
// Returns true when all passed.
bool expect_case(const OpCase& c);
// Expects `fn` to throw diffuse::Error whose message contains every string of `fragments`
// (e.g. the op name and a shape). Reports a GoogleTest failure otherwise.
bool expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments);

}  // namespace diffuse::test
