// Naive references of the elementwise ops: every element in double, rounded once to the dtype.
#include <cmath>
#include <functional>

#include "src/ops/ref/ref.h"
#include "src/ops/ref/ref_kernels_common.h"

namespace diffuse::ops::ref {

namespace detail {

Shape broadcast(const Shape& a, const Shape& b, const char* op) {
  const std::size_t n = a.size() > b.size() ? a.size() : b.size();
  Shape out(n, 1);
  for (std::size_t i = 0; i < n; ++i) {
    // Align from the right.
    const int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    const int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    DIFFUSE_CHECK(da == db || da == 1 || db == 1, "ref::", op, ": cannot broadcast ", shape_str(a),
                  " with ", shape_str(b));
    out[n - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> unravel(int64_t i, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    idx[k] = i % shape[k];
    i /= shape[k];
  }
  return idx;
}

int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape) {
  int64_t i = 0;
  for (std::size_t k = 0; k < shape.size(); ++k) i = i * shape[k] + idx[k];
  return i;
}

double as_compute(double v, DType dtype) {
  return dtype == DType::f64 ? v : static_cast<double>(static_cast<float>(v));
}

}  // namespace detail

namespace {

Tensor map1(const Tensor& x, const std::function<double(double)>& f) {
  std::vector<double> v = to_double(x);
  for (double& e : v) e = f(e);
  return from_double(v, x.shape(), x.dtype());
}

Tensor map2(const Tensor& a, const Tensor& b, const char* op,
            const std::function<double(double, double)>& f) {
  DIFFUSE_CHECK(a.dtype() == b.dtype(), "ref::", op, ": dtypes differ");
  const Shape shape = detail::broadcast(a.shape(), b.shape(), op);
  const std::vector<double> va = to_double(a.expand(shape));
  const std::vector<double> vb = to_double(b.expand(shape));
  std::vector<double> out(va.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = f(va[i], vb[i]);
  return from_double(out, shape, a.dtype());
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return map2(a, b, "add", [](double x, double y) { return x + y; });
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return map2(a, b, "sub", [](double x, double y) { return x - y; });
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return map2(a, b, "mul", [](double x, double y) { return x * y; });
}
Tensor div(const Tensor& a, const Tensor& b) {
  return map2(a, b, "div", [](double x, double y) { return x / y; });
}

Tensor add(const Tensor& a, double b) {
  const double s = detail::as_compute(b, a.dtype());
  return map1(a, [s](double x) { return x + s; });
}
Tensor sub(const Tensor& a, double b) {
  const double s = detail::as_compute(b, a.dtype());
  return map1(a, [s](double x) { return x - s; });
}
Tensor mul(const Tensor& a, double b) {
  const double s = detail::as_compute(b, a.dtype());
  return map1(a, [s](double x) { return x * s; });
}
Tensor div(const Tensor& a, double b) {
  const double s = detail::as_compute(b, a.dtype());
  return map1(a, [s](double x) { return x / s; });
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  const double l = detail::as_compute(lo, x.dtype()), h = detail::as_compute(hi, x.dtype());
  return map1(x, [l, h](double v) {
    if (std::isnan(v)) return v;
    return std::min(std::max(v, l), h);
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  const Shape shape =
      detail::broadcast(cond.shape(), detail::broadcast(a.shape(), b.shape(), "where"), "where");
  const std::vector<double> c = to_double(cond.expand(shape));
  const std::vector<double> va = to_double(a.expand(shape));
  const std::vector<double> vb = to_double(b.expand(shape));
  std::vector<double> out(c.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = c[i] != 0.0 ? va[i] : vb[i];
  return from_double(out, shape, a.dtype());
}

Tensor neg(const Tensor& x) {
  return map1(x, [](double v) { return -v; });
}
Tensor abs(const Tensor& x) {
  return map1(x, [](double v) { return std::fabs(v); });
}
Tensor exp(const Tensor& x) {
  return map1(x, [](double v) { return std::exp(v); });
}
Tensor log(const Tensor& x) {
  return map1(x, [](double v) { return std::log(v); });
}
Tensor sqrt(const Tensor& x) {
  return map1(x, [](double v) { return std::sqrt(v); });
}
Tensor rsqrt(const Tensor& x) {
  return map1(x, [](double v) { return 1.0 / std::sqrt(v); });
}
Tensor sin(const Tensor& x) {
  return map1(x, [](double v) { return std::sin(v); });
}
Tensor cos(const Tensor& x) {
  return map1(x, [](double v) { return std::cos(v); });
}
Tensor square(const Tensor& x) {
  return map1(x, [](double v) { return v * v; });
}
Tensor pow(const Tensor& x, double exponent) {
  const double p = detail::as_compute(exponent, x.dtype());
  return map1(x, [p](double v) { return std::pow(v, p); });
}

}  // namespace diffuse::ops::ref
