#include "tests/ops/harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "diffuse/core/error.h"

namespace diffuse::test {
namespace {

// splitmix64: a small deterministic generator (the values must not depend on the standard
// library's distributions, which differ between implementations).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {
    // Box-Muller; 1 - u keeps the logarithm finite.
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

// The shape of the buffer a layout views, and the view itself.
Shape base_shape(const InputSpec& s) {
  Shape b = s.shape;
  const std::size_t r = b.size();
  switch (s.layout) {
    case Layout::contiguous:
      break;
    case Layout::transposed:
      if (r >= 2) {
        std::swap(b[r - 1], b[r - 2]);
      } else if (r == 1) {
        b[0] = 2 * b[0] + 1;
      }
      break;
    case Layout::strided:
      if (r >= 1) b[r - 1] = 2 * b[r - 1] + 1;
      break;
    case Layout::expanded:
      for (std::size_t d = 0; d < r; ++d) {
        if (b[d] > 1) {
          b[d] = 1;
          break;
        }
      }
      break;
    case Layout::permuted:
      if (r >= 3) {
        b.erase(b.begin() + 1);
        b.push_back(s.shape[1]);
      } else if (r == 2) {
        std::swap(b[0], b[1]);
      } else if (r == 1) {
        b[0] = 2 * b[0] + 1;
      }
      break;
  }
  return b;
}

Tensor apply_layout(const Tensor& base, const InputSpec& s) {
  const int64_t r = static_cast<int64_t>(s.shape.size());
  switch (s.layout) {
    case Layout::contiguous:
      return base;
    case Layout::transposed:
      if (r >= 2) return base.transpose(-1, -2);
      if (r == 1) return base.slice(0, 1, 1 + 2 * s.shape[0], 2);
      return base;
    case Layout::strided:
      if (r >= 1) return base.slice(-1, 1, 1 + 2 * s.shape[r - 1], 2);
      return base;
    case Layout::expanded:
      return base.expand(s.shape);
    case Layout::permuted:
      if (r >= 3) {
        std::vector<int64_t> dims = {0, r - 1};
        for (int64_t d = 1; d < r - 1; ++d) dims.push_back(d);
        return base.permute(dims);
      }
      if (r == 2) return base.transpose(0, 1);
      if (r == 1) return base.slice(0, 1, 1 + 2 * s.shape[0], 2);
      return base;
  }
  return base;
}

Tensor make_base(const InputSpec& s, Rng& rng) {
  const Shape shape = base_shape(s);
  std::vector<double> v(static_cast<std::size_t>(shape_numel(shape)));
  for (double& e : v) {
    switch (s.dist) {
      case Dist::normal:
        e = rng.normal() * s.scale + s.offset;
        break;
      case Dist::uniform:
        e = s.lo + (s.hi - s.lo) * rng.uniform();
        break;
      case Dist::integer: {
        const double span = std::floor(s.hi) - std::ceil(s.lo);
        e = std::ceil(s.lo) + std::floor(rng.uniform() * span);
        break;
      }
      case Dist::boolean:
        e = rng.uniform() < 0.5 ? 1.0 : 0.0;
        break;
    }
  }
  return Tensor::from_vector(v, shape, s.dtype);
}

std::vector<Tensor> make_bases(const OpCase& c) {
  Rng rng{c.seed};
  std::vector<Tensor> bases;
  for (const InputSpec& s : c.inputs) bases.push_back(make_base(s, rng));
  return bases;
}

std::string describe(const OpCase& c, const Backend& backend) {
  std::ostringstream os;
  os << "case '" << c.name << "' on backend " << backend.name << " (seed " << c.seed << ")\n";
  for (std::size_t i = 0; i < c.inputs.size(); ++i) {
    const InputSpec& s = c.inputs[i];
    os << "  input " << i << ": " << dtype_name(s.dtype) << " " << shape_str(s.shape) << " "
       << layout_name(s.layout) << "\n";
  }
  return os.str();
}

std::string index_str(int64_t i, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    idx[k] = i % shape[k];
    i /= shape[k];
  }
  return shape_str(idx);
}

}  // namespace

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::contiguous:
      return "contiguous";
    case Layout::transposed:
      return "transposed";
    case Layout::strided:
      return "strided";
    case Layout::expanded:
      return "expanded";
    case Layout::permuted:
      return "permuted";
  }
  return "?";
}

const std::vector<Layout>& all_layouts() {
  static const std::vector<Layout> layouts = {Layout::contiguous, Layout::transposed,
                                              Layout::strided, Layout::expanded, Layout::permuted};
  return layouts;
}

const std::vector<DType>& float_dtypes() {
  static const std::vector<DType> dtypes = {DType::f32, DType::f16, DType::bf16};
  return dtypes;
}

InputSpec input(Shape shape, DType dtype, Layout layout) {
  InputSpec s;
  s.shape = std::move(shape);
  s.dtype = dtype;
  s.layout = layout;
  return s;
}

InputSpec normal(Shape shape, DType dtype, double scale, double offset, Layout layout) {
  InputSpec s = input(std::move(shape), dtype, layout);
  s.scale = scale;
  s.offset = offset;
  return s;
}

InputSpec uniform(Shape shape, DType dtype, double lo, double hi, Layout layout) {
  InputSpec s = input(std::move(shape), dtype, layout);
  s.dist = Dist::uniform;
  s.lo = lo;
  s.hi = hi;
  return s;
}

InputSpec integers(Shape shape, DType dtype, int64_t lo, int64_t hi, Layout layout) {
  InputSpec s = input(std::move(shape), dtype, layout);
  s.dist = Dist::integer;
  s.lo = static_cast<double>(lo);
  s.hi = static_cast<double>(hi);
  return s;
}

InputSpec booleans(Shape shape, Layout layout) {
  InputSpec s = input(std::move(shape), DType::boolean, layout);
  s.dist = Dist::boolean;
  return s;
}

Tolerance Tolerance::for_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return {1e-11, 1e-5, 1e-5};
    case DType::f16:
      return {1e-6, 1e-3, 2e-3};
    case DType::bf16:
      return {5e-5, 8e-3, 1.6e-2};
    case DType::f64:
      return {1e-24, 1e-12, 1e-12};
    default:
      return exact();
  }
}

Tolerance Tolerance::exact() {
  return {0.0, 0.0, 0.0};
}

namespace {

std::vector<Backend>& backend_list() {
  static std::vector<Backend> list = {Backend{"cpu", Device::cpu(),
                                              [](const Tensor& t) { return t.clone(); },
                                              [](const Tensor& t) { return t.contiguous(); }}};
  return list;
}

}  // namespace

const std::vector<Backend>& backends() {
  return backend_list();
}
void add_backend(Backend backend) {
  backend_list().push_back(std::move(backend));
}

Inputs make_inputs(const OpCase& c) {
  const std::vector<Tensor> bases = make_bases(c);
  Inputs in;
  for (std::size_t i = 0; i < bases.size(); ++i) in.push_back(apply_layout(bases[i], c.inputs[i]));
  return in;
}

CaseResult run_case(const OpCase& c, const Backend& backend) {
  CaseResult result;
  std::ostringstream msg;
  msg << describe(c, backend);
  const std::vector<Tensor> bases = make_bases(c);
  Inputs cpu_in, dev_in;
  for (std::size_t i = 0; i < bases.size(); ++i) {
    cpu_in.push_back(apply_layout(bases[i], c.inputs[i]));
    dev_in.push_back(apply_layout(backend.upload(bases[i]), c.inputs[i]));
  }
  Tensor expected, actual;
  try {
    expected = c.ref(cpu_in);
  } catch (const std::exception& e) {
    result.message = msg.str() + "  the reference threw: " + e.what();
    return result;
  }
  try {
    actual = backend.download(c.op(dev_in));
  } catch (const std::exception& e) {
    result.message = msg.str() + "  the op threw: " + e.what();
    return result;
  }
  msg << "  output: expected " << expected.str() << ", got " << actual.str() << "\n";
  if (actual.shape() != expected.shape() || actual.dtype() != expected.dtype()) {
    result.message = msg.str() + "  shape or dtype mismatch";
    return result;
  }
  const std::vector<double> out = actual.to_vector<double>();
  const std::vector<double> ref = expected.to_vector<double>();
  double err2 = 0.0, ref2 = 0.0, worst_ratio = -1.0;
  int64_t worst = -1, violations = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double o = out[i], r = ref[i];
    double err;
    if (std::isnan(r) || std::isnan(o)) {
      err = std::isnan(r) && std::isnan(o) ? 0.0 : std::numeric_limits<double>::infinity();
    } else if (std::isinf(r) || std::isinf(o)) {
      err = o == r ? 0.0 : std::numeric_limits<double>::infinity();
    } else {
      err = std::fabs(o - r);
      err2 += err * err;
      ref2 += r * r;
    }
    result.max_abs_err = std::max(result.max_abs_err, err);
    const double bound = c.tol.atol + c.tol.rtol * (std::isfinite(r) ? std::fabs(r) : 0.0);
    const bool bad = std::isinf(err) || (c.tol.atol >= 0.0 && err > bound);
    if (bad) ++violations;
    const double ratio = bound > 0.0 ? err / bound : (err > 0.0 ? err * 1e300 : 0.0);
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst = static_cast<int64_t>(i);
    }
  }
  result.nmse = ref2 > 0.0 ? err2 / ref2 : err2;
  const bool nmse_ok = c.tol.nmse < 0.0 || result.nmse <= c.tol.nmse;
  result.passed = nmse_ok && violations == 0;
  if (!result.passed) {
    msg << "  NMSE " << result.nmse << " (tolerance " << c.tol.nmse << "), " << violations << " of "
        << out.size() << " elements outside atol " << c.tol.atol << " + rtol " << c.tol.rtol
        << " * |ref|\n";
    if (worst >= 0) {
      msg.precision(9);
      msg << "  worst element " << index_str(worst, expected.shape()) << ": got " << out[worst]
          << ", expected " << ref[worst] << " (abs err " << std::fabs(out[worst] - ref[worst])
          << ")";
    }
    result.message = msg.str();
  }
  return result;
}

bool expect_case(const OpCase& c) {
  bool all = true;
  for (const Backend& backend : backends()) {
    const CaseResult r = run_case(c, backend);
    if (!r.passed) {
      ADD_FAILURE() << r.message;
      all = false;
    }
  }
  return all;
}

bool expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const std::string& f : fragments) {
      if (what.find(f) == std::string::npos) {
        ADD_FAILURE() << "diffuse::Error message lacks '" << f << "': " << what;
        return false;
      }
    }
    return true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected diffuse::Error, got another exception: " << e.what();
    return false;
  }
  ADD_FAILURE() << "expected diffuse::Error mentioning";
  for (const std::string& f : fragments) ADD_FAILURE() << "  '" << f << "'";
  return false;
}

}  // namespace diffuse::test
