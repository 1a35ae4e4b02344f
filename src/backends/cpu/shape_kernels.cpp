// Copying shape kernels: concat, pad, nearest upsampling (one index-map gather engine), average
// pooling, embedding lookup and sinusoidal timestep embeddings.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "src/backends/cpu/kernels.h"
#include "src/backends/cpu/strided.h"

namespace diffuse::cpu {
namespace {

using IndexMaps = std::vector<std::vector<int64_t>>;

// out[o_0, ..., o_k] = x[maps[0][o_0], ..., maps[k][o_k]], or `fill` where any map holds -1.
// T is an unsigned integer of the element size (elements are moved as raw bits).
template <class T>
void gather_t(const Tensor& x, const IndexMaps& maps, const void* fill_bytes, const Tensor& out) {
  const int nd = static_cast<int>(x.dim());
  T fill;
  std::memcpy(&fill, fill_bytes, sizeof(T));
  const T* src = static_cast<const T*>(x.data_ptr());
  T* dst = static_cast<T*>(out.data_ptr());
  const int64_t w = out.size(-1);
  if (w == 0 || out.numel() == 0) return;
  const int64_t rows = out.numel() / w;
  const int64_t last_stride = x.stride(nd - 1);
  std::vector<int64_t> col(static_cast<std::size_t>(w));
  for (int64_t o = 0; o < w; ++o) {
    const int64_t m = maps[nd - 1][o];
    col[o] = m < 0 ? -1 : m * last_stride;
  }
#pragma omp parallel for schedule(static) if (out.numel() >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, off = 0;
    bool valid = true;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % out.size(d);
      rem /= out.size(d);
      const int64_t m = maps[d][i];
      valid = valid && m >= 0;
      off += m * x.stride(d);
    }
    T* y = dst + r * w;
    if (!valid) {
      std::fill(y, y + w, fill);
      continue;
    }
    const T* s = src + off;
    for (int64_t o = 0; o < w; ++o) y[o] = col[o] < 0 ? fill : s[col[o]];
  }
}

void gather(const Tensor& x, const IndexMaps& maps, const void* fill_bytes, const Tensor& out) {
  switch (x.itemsize()) {
    case 1:
      gather_t<uint8_t>(x, maps, fill_bytes, out);
      return;
    case 2:
      gather_t<uint16_t>(x, maps, fill_bytes, out);
      return;
    case 4:
      gather_t<uint32_t>(x, maps, fill_bytes, out);
      return;
    default:
      gather_t<uint64_t>(x, maps, fill_bytes, out);
      return;
  }
}

// PyTorch's legacy 'nearest' source index (UpSample.h nearest_idx), float arithmetic included.
std::vector<int64_t> nearest_map(int64_t in, int64_t out, float scale) {
  std::vector<int64_t> map(static_cast<std::size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    if (out == in) {
      map[o] = o;
    } else if (out == 2 * in) {
      map[o] = o >> 1;
    } else {
      const float src = std::floor(static_cast<float>(o) * scale);
      map[o] = std::min(static_cast<int64_t>(src), in - 1);
    }
  }
  return map;
}

}  // namespace

void concat(const std::vector<Tensor>& tensors, int64_t dim, const Tensor& out) noexcept {
  const Shape& shape = out.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
  for (int64_t d = dim + 1; d < out.dim(); ++d) inner *= shape[d];
  const int64_t size = static_cast<int64_t>(out.itemsize());
  const int64_t out_row = shape[dim] * inner * size;  // bytes per outer index in out
  char* dst = static_cast<char*>(out.data_ptr());
  int64_t col = 0;  // byte offset of the current input inside an output row
  for (const Tensor& t : tensors) {
    const int64_t row = t.size(dim) * inner * size;
    if (row == 0) continue;
    if (t.is_contiguous()) {
      const char* src = static_cast<const char*>(t.data_ptr());
#pragma omp parallel for schedule(static) if (outer * row >= kParallelMin * 4)
      for (int64_t o = 0; o < outer; ++o) {
        std::memcpy(dst + o * out_row + col, src + o * row, static_cast<std::size_t>(row));
      }
    } else {
      // General path: coalesced strided reads of the whole input, row by row.
      const auto views = coalesce(t.shape(), {&t});
      const int64_t per_row = t.size(dim) * inner;
#pragma omp parallel for schedule(static) if (outer * row >= kParallelMin * 4)
      for (int64_t o = 0; o < outer; ++o) {
        load_bytes(views[0], o * per_row, per_row, dst + o * out_row + col);
      }
    }
    col += row;
  }
}

void pad(const Tensor& x, const std::vector<int64_t>& pads, ops::PadMode mode, double value,
         const Tensor& out) noexcept {
  const int64_t nd = x.dim();
  IndexMaps maps(static_cast<std::size_t>(nd));
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t k = nd - 1 - d;  // pair index counted from the last dim
    const int64_t left = 2 * k < static_cast<int64_t>(pads.size()) ? pads[2 * k] : 0;
    const int64_t in = x.size(d);
    std::vector<int64_t>& map = maps[d];
    map.resize(static_cast<std::size_t>(out.size(d)));
    for (int64_t o = 0; o < out.size(d); ++o) {
      int64_t i = o - left;
      switch (mode) {
        case ops::PadMode::constant:
          i = (i >= 0 && i < in) ? i : -1;
          break;
        case ops::PadMode::reflect:
          if (i < 0) i = -i;
          if (i >= in) i = 2 * (in - 1) - i;
          break;
        case ops::PadMode::replicate:
          i = std::clamp<int64_t>(i, 0, in - 1);
          break;
      }
      map[o] = i;
    }
  }
  char fill[8] = {};
  convert(&value, DType::f64, fill, x.dtype(), 1);
  gather(x, maps, fill, out);
}

void upsample_nearest(const Tensor& x, const Tensor& out, float scale_h, float scale_w) noexcept {
  const int64_t nd = x.dim();
  IndexMaps maps(static_cast<std::size_t>(nd));
  for (int64_t d = 0; d < nd - 2; ++d) {
    maps[d].resize(static_cast<std::size_t>(x.size(d)));
    for (int64_t i = 0; i < x.size(d); ++i) maps[d][i] = i;
  }
  maps[nd - 2] = nearest_map(x.size(-2), out.size(-2), scale_h);
  maps[nd - 1] = nearest_map(x.size(-1), out.size(-1), scale_w);
  const char fill[8] = {};
  gather(x, maps, fill, out);
}

void avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                bool count_include_pad, const Tensor& out) noexcept {
  const int64_t h = x.size(-2), w = x.size(-1);
  const int64_t oh = out.size(-2), ow = out.size(-1);
  const int64_t planes = h * w == 0 ? 0 : x.numel() / (h * w);
  const DType dtype = x.dtype();
  const int64_t size = static_cast<int64_t>(x.itemsize());
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
#pragma omp parallel if (x.numel() >= kParallelMin)
  {
    std::vector<float> in(static_cast<std::size_t>(h * w));
    std::vector<float> res(static_cast<std::size_t>(oh * ow));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      to_f32(src + p * h * w * size, dtype, in.data(), h * w);
      for (int64_t y = 0; y < oh; ++y) {
        int64_t h0 = y * stride - padding;
        int64_t h1 = std::min(h0 + kernel, h + padding);
        const int64_t pool_h = h1 - h0;
        h0 = std::max<int64_t>(h0, 0);
        h1 = std::min(h1, h);
        for (int64_t xo = 0; xo < ow; ++xo) {
          int64_t w0 = xo * stride - padding;
          int64_t w1 = std::min(w0 + kernel, w + padding);
          const int64_t pool_w = w1 - w0;
          w0 = std::max<int64_t>(w0, 0);
          w1 = std::min(w1, w);
          float s = 0.0f;
          for (int64_t i = h0; i < h1; ++i) {
            for (int64_t j = w0; j < w1; ++j) s += in[i * w + j];
          }
          const int64_t divisor = count_include_pad ? pool_h * pool_w : (h1 - h0) * (w1 - w0);
          res[y * ow + xo] = divisor > 0 ? s / static_cast<float>(divisor) : 0.0f;
        }
      }
      store_f32(res.data(), dtype, dst + p * oh * ow * size, oh * ow);
    }
  }
}

void embedding(const Tensor& weight, const Tensor& ids, const Tensor& out) noexcept {
  const std::vector<int64_t> idx = ids.to_vector<int64_t>();
  const int64_t d = weight.size(1);
  const int64_t size = static_cast<int64_t>(weight.itemsize());
  const char* src = static_cast<const char*>(weight.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t s0 = weight.stride(0), s1 = weight.stride(1);
  const int64_t n = static_cast<int64_t>(idx.size());
#pragma omp parallel for schedule(static) if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const char* row = src + idx[i] * s0 * size;
    char* y = dst + i * d * size;
    if (s1 == 1) {
      std::memcpy(y, row, static_cast<std::size_t>(d * size));
    } else {
      for (int64_t j = 0; j < d; ++j) {
        std::memcpy(y + j * size, row + j * s1 * size, static_cast<std::size_t>(size));
      }
    }
  }
}

void timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                        double downscale_freq_shift, double scale, int64_t max_period,
                        const Tensor& out) noexcept {
  // diffusers get_timestep_embedding; every tensor operation there is float32, Python scalars
  // are rounded to float32 when they meet the tensor.
  const std::vector<float> t = timesteps.to_vector<float>();
  const int64_t half = dim / 2;
  const float neg_log = static_cast<float>(-std::log(static_cast<double>(max_period)));
  const float denom = static_cast<float>(static_cast<double>(half) - downscale_freq_shift);
  const float fscale = static_cast<float>(scale);
  std::vector<float> freq(static_cast<std::size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = neg_log * static_cast<float>(i);  // -log(max_period) * arange
    freq[i] = std::exp(exponent / denom);
  }
  float* y = out.data<float>();
  const int64_t n = static_cast<int64_t>(t.size());
  for (int64_t r = 0; r < n; ++r) {
    float* row = y + r * dim;
    float* sin_part = row + (flip_sin_to_cos ? half : 0);
    float* cos_part = row + (flip_sin_to_cos ? 0 : half);
    for (int64_t i = 0; i < half; ++i) {
      const float arg = fscale * (t[r] * freq[i]);
      sin_part[i] = std::sin(arg);
      cos_part[i] = std::cos(arg);
    }
    if (dim % 2 == 1) row[dim - 1] = 0.0f;
  }
}

}  // namespace diffuse::cpu
