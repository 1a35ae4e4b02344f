// Naive references of linear, matmul, conv2d and attention: plain loops, double accumulation.
#include <cmath>
#include <limits>

#include "diffuse/ops/broadcast.h"
#include "src/ops/ref/ref.h"

namespace diffuse::ops::ref {
namespace {

double round_to(double v, DType compute) {
  if (compute != DType::bf16) return v;
  return bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(v)));
}

// The operand as doubles, rounded to what the compute dtype sees. f32 compute of an f16/bf16
// tensor sees its exact value; bf16 compute rounds once (f16 -> bf16 via the exact f32 value).
std::vector<double> operand(const Tensor& t, DType compute) {
  std::vector<double> v = to_double(t);
  for (double& e : v) e = round_to(static_cast<float>(e), compute);
  return v;
}

double activate(double x, Activation post) {
  switch (post) {
    case Activation::none:
      return x;
    case Activation::silu:
      return x / (1.0 + std::exp(-x));
    case Activation::gelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::gelu_tanh: {
      const double k = std::sqrt(2.0 / M_PI);
      return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
    }
    case Activation::quick_gelu:
      return x / (1.0 + std::exp(-1.702 * x));
    case Activation::relu:
      return x > 0 ? x : 0.0;
  }
  return x;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, DType compute,
              Activation post) {
  const int64_t k = x.size(-1), n = weight.size(0);
  const int64_t m = k == 0 ? x.numel() : x.numel() / k;
  const std::vector<double> xs = operand(x, compute);
  const std::vector<double> ws = operand(weight, compute);
  const std::vector<double> bs = bias.defined() ? to_double(bias) : std::vector<double>();
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = bs.empty() ? 0.0 : bs[j];
      for (int64_t l = 0; l < k; ++l) acc += xs[i * k + l] * ws[j * k + l];
      out[i * n + j] = activate(acc, post);
    }
  }
  Shape shape = x.shape();
  shape.back() = n;
  return from_double(out, shape, DType::f32);
}

Tensor matmul(const Tensor& a, const Tensor& b, DType compute) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  const Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                       Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
  Shape sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {m, k});
  sb.insert(sb.end(), {k, n});
  so.insert(so.end(), {m, n});
  const std::vector<double> av = operand(a.expand(sa), compute);
  const std::vector<double> bv = operand(b.expand(sb), compute);
  const int64_t nb = shape_numel(batch);
  std::vector<double> out(static_cast<std::size_t>(nb * m * n));
  for (int64_t p = 0; p < nb; ++p) {
    const double* ap = av.data() + p * m * k;
    const double* bp = bv.data() + p * k * n;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0.0;
        for (int64_t l = 0; l < k; ++l) acc += ap[i * k + l] * bp[l * n + j];
        out[(p * m + i) * n + j] = acc;
      }
    }
  }
  return from_double(out, so, DType::f32);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
              DType compute) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t o = weight.size(0), cg = weight.size(1), kh = weight.size(2), kw = weight.size(3);
  const int64_t og = o / p.groups;
  const int64_t ho = (h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0] + 1;
  const int64_t wo = (w + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1] + 1;
  const std::vector<double> xs = operand(x, compute);
  const std::vector<double> ws = operand(weight, compute);
  const std::vector<double> bs = bias.defined() ? to_double(bias) : std::vector<double>();
  std::vector<double> out(static_cast<std::size_t>(n * o * ho * wo));
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oc = 0; oc < o; ++oc) {
      const int64_t g = oc / og;
      for (int64_t y = 0; y < ho; ++y) {
        for (int64_t xo = 0; xo < wo; ++xo) {
          double acc = bs.empty() ? 0.0 : bs[oc];
          for (int64_t ic = 0; ic < cg; ++ic) {
            for (int64_t ky = 0; ky < kh; ++ky) {
              const int64_t iy = y * p.stride[0] - p.padding[0] + ky * p.dilation[0];
              if (iy < 0 || iy >= h) continue;
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = xo * p.stride[1] - p.padding[1] + kx * p.dilation[1];
                if (ix < 0 || ix >= w) continue;
                acc += xs[((b * c + g * cg + ic) * h + iy) * w + ix] *
                       ws[((oc * cg + ic) * kh + ky) * kw + kx];
              }
            }
          }
          out[((b * o + oc) * ho + y) * wo + xo] = activate(acc, p.post);
        }
      }
    }
  }
  return from_double(out, {n, o, ho, wo}, DType::f32);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o,
                 DType compute) {
  const int64_t bsz = q.size(0), heads = q.size(1), lq = q.size(2), d = q.size(3);
  const int64_t lk = k.size(2), dv = v.size(3);
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const std::vector<double> qs = operand(q, compute);
  const std::vector<double> ks = operand(k, compute);
  const std::vector<double> vs = operand(v, compute);
  std::vector<double> mask;
  const bool bool_mask = o.mask.defined() && o.mask.dtype() == DType::boolean;
  if (o.mask.defined()) mask = to_double(o.mask.expand({bsz, heads, lq, lk}));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  std::vector<double> out(static_cast<std::size_t>(bsz * heads * lq * dv));
  std::vector<double> s(static_cast<std::size_t>(lk));
  for (int64_t bh = 0; bh < bsz * heads; ++bh) {
    for (int64_t i = 0; i < lq; ++i) {
      double mx = neg_inf;
      for (int64_t j = 0; j < lk; ++j) {
        double acc = 0.0;
        for (int64_t l = 0; l < d; ++l)
          acc += qs[(bh * lq + i) * d + l] * ks[(bh * lk + j) * d + l];
        acc *= scale;
        if (o.is_causal && j > i) acc = neg_inf;
        if (!mask.empty()) {
          const double mv = mask[(bh * lq + i) * lk + j];
          if (bool_mask) {
            if (mv == 0.0) acc = neg_inf;
          } else {
            acc += mv;
          }
        }
        s[j] = acc;
        mx = std::max(mx, acc);
      }
      // A row with every key masked out: exp(-inf - -inf) is NaN, like torch's math path.
      double sum = 0.0;
      for (int64_t j = 0; j < lk; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      for (int64_t l = 0; l < dv; ++l) {
        double acc = 0.0;
        for (int64_t j = 0; j < lk; ++j) acc += s[j] * vs[(bh * lk + j) * dv + l];
        out[(bh * lq + i) * dv + l] = acc / sum;
      }
    }
  }
  return from_double(out, {bsz, heads, lq, dv}, DType::f32);
}

}  // namespace diffuse::ops::ref
