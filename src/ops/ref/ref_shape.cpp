// Naive references of the copying shape ops: one output element at a time by index arithmetic.
#include <cmath>

#include "src/ops/ref/ref.h"
#include "src/ops/ref/ref_kernels_common.h"

namespace diffuse::ops::ref {

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  const int64_t d = tensors.at(0).wrap_dim(dim);
  Shape shape = tensors[0].shape();
  shape[d] = 0;
  for (const Tensor& t : tensors) shape[d] += t.size(d);
  std::vector<double> out(static_cast<std::size_t>(shape_numel(shape)));
  // Walk the output; find the input that holds each position along d.
  std::vector<std::vector<double>> values;
  for (const Tensor& t : tensors) values.push_back(to_double(t));
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::vector<int64_t> idx = detail::unravel(static_cast<int64_t>(i), shape);
    std::size_t k = 0;
    while (idx[d] >= tensors[k].size(d)) idx[d] -= tensors[k++].size(d);
    out[i] = values[k][detail::ravel(idx, tensors[k].shape())];
  }
  return from_double(out, shape, tensors[0].dtype());
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, PadMode mode, double value) {
  const int64_t nd = x.dim();
  Shape shape = x.shape();
  std::vector<int64_t> left(static_cast<std::size_t>(nd), 0);
  for (std::size_t k = 0; k < pads.size() / 2; ++k) {
    const int64_t d = nd - 1 - static_cast<int64_t>(k);
    left[d] = pads[2 * k];
    shape[d] += pads[2 * k] + pads[2 * k + 1];
  }
  const std::vector<double> v = to_double(x);
  std::vector<double> out(static_cast<std::size_t>(shape_numel(shape)));
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::vector<int64_t> idx = detail::unravel(static_cast<int64_t>(i), shape);
    bool inside = true;
    for (int64_t d = 0; d < nd; ++d) {
      int64_t j = idx[d] - left[d];
      const int64_t n = x.size(d);
      if (mode == PadMode::reflect) {
        // Mirror around the edge elements until inside (one bounce suffices for pad < n).
        while (j < 0 || j >= n) j = j < 0 ? -j : 2 * (n - 1) - j;
      } else if (mode == PadMode::replicate) {
        j = j < 0 ? 0 : (j >= n ? n - 1 : j);
      } else if (j < 0 || j >= n) {
        inside = false;
      }
      idx[d] = j;
    }
    out[i] = inside ? v[detail::ravel(idx, x.shape())] : value;
  }
  return from_double(out, shape, x.dtype());
}

Tensor upsample_nearest(const Tensor& x, const Shape& size) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = size[0], ow = size[1];
  // PyTorch 'nearest': src = min(floor(dst * (float)(in / out)), in - 1), in float.
  const float sh = static_cast<float>(h) / static_cast<float>(oh);
  const float sw = static_cast<float>(w) / static_cast<float>(ow);
  const std::vector<double> v = to_double(x);
  std::vector<double> out(static_cast<std::size_t>(n * c * oh * ow));
  for (int64_t p = 0; p < n * c; ++p) {
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t si =
          std::min<int64_t>(static_cast<int64_t>(std::floor(static_cast<float>(i) * sh)), h - 1);
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t sj =
            std::min<int64_t>(static_cast<int64_t>(std::floor(static_cast<float>(j) * sw)), w - 1);
        out[(p * oh + i) * ow + j] = v[(p * h + si) * w + sj];
      }
    }
  }
  return from_double(out, {n, c, oh, ow}, x.dtype());
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                  bool count_include_pad, bool ceil_mode) {
  if (stride <= 0) stride = kernel;
  const int64_t h = x.size(-2), w = x.size(-1);
  auto extent = [&](int64_t in) {
    // Window starts s' = j * stride in padded coordinates (padded length in + 2 padding).
    // Floor mode: the window fits. Ceil mode: a partial last window is allowed as long as it
    // starts inside the input or the left padding (s' < in + padding).
    const int64_t padded = in + 2 * padding;
    int64_t count = 0;
    for (int64_t s = 0;; s += stride) {
      const bool ok =
          ceil_mode ? (s < padded - kernel + stride && s < in + padding) : (s + kernel <= padded);
      if (!ok) break;
      ++count;
    }
    return count;
  };
  const int64_t oh = extent(h), ow = extent(w);
  const int64_t planes = x.numel() / (h * w);
  const std::vector<double> v = to_double(x);
  std::vector<double> out(static_cast<std::size_t>(planes * oh * ow));
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < oh; ++i) {
      for (int64_t j = 0; j < ow; ++j) {
        double sum = 0.0;
        int64_t inside = 0, window = 0;
        for (int64_t a = i * stride - padding; a < i * stride - padding + kernel; ++a) {
          for (int64_t b = j * stride - padding; b < j * stride - padding + kernel; ++b) {
            // The window counts padding cells but not cells beyond the padding (ceil mode).
            if (a < h + padding && b < w + padding) ++window;
            if (a >= 0 && a < h && b >= 0 && b < w) {
              sum += v[(p * h + a) * w + b];
              ++inside;
            }
          }
        }
        out[(p * oh + i) * ow + j] = sum / static_cast<double>(count_include_pad ? window : inside);
      }
    }
  }
  Shape shape = x.shape();
  shape[shape.size() - 2] = oh;
  shape[shape.size() - 1] = ow;
  return from_double(out, shape, x.dtype());
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const std::vector<double> w = to_double(weight);
  const std::vector<int64_t> id = ids.to_vector<int64_t>();
  const int64_t v = weight.size(0), d = weight.size(1);
  std::vector<double> out;
  for (int64_t i : id) {
    DIFFUSE_CHECK(i >= 0 && i < v, "ref::embedding: id ", i, " out of range");
    for (int64_t j = 0; j < d; ++j) out.push_back(w[i * d + j]);
  }
  Shape shape = ids.shape();
  shape.push_back(d);
  return from_double(out, shape, weight.dtype());
}

}  // namespace diffuse::ops::ref
