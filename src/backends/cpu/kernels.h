// The CPU backend's kernels behind the ops of include/diffuse/ops/{elementwise, activation, norm,
// shape, reduce, embedding}.h. src/ops validates arguments (shapes, dtypes, device) and allocates
// the contiguous output; these functions only compute and never throw (noexcept).
// They parallelize with OpenMP and pick the widest instruction set the CPU has (AVX-512, AVX2,
// or the x86-64 baseline), unless a narrower one is forced with set_isa() (tests, benchmarks).
#pragma once

#include <cstdint>

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"
#include "diffuse/ops/shape.h"

namespace diffuse::cpu {

// --- Instruction-set selection ----------------------------------------------------------------

enum class Isa { baseline, avx2, avx512 };
const char* isa_name(Isa isa);
// The best level this CPU supports.
Isa best_isa();
// The level kernels use now.
Isa active_isa();
// Uses `isa`, clamped to best_isa(). Not thread-safe: call between ops (tests, benchmarks).
void set_isa(Isa isa);

// --- f32 vector kernels (one instance per Isa) -------------------------------------------------

enum class UnaryOp {
  identity,
  neg,
  abs,
  exp,
  log,
  sqrt,
  rsqrt,
  sin,
  cos,
  square,
  pow,  // pow: x ** p0
  add_scalar,
  sub_scalar,
  mul_scalar,
  div_scalar,  // x op p0
  clamp,       // min(max(x, p0), p1)
  silu,
  gelu,
  gelu_tanh,
  quick_gelu,
  sigmoid,
  tanh,
  relu,
};
enum class BinaryOp { add, sub, mul, div, geglu /* a * gelu(b) */ };

// Activation codes for the fused kernels (Activation as int, usable in templates).
inline constexpr int kActNone = 0, kActSilu = 1, kActGelu = 2, kActGeluTanh = 3, kActQuickGelu = 4,
                     kActRelu = 5;
int activation_code(ops::Activation activation);

struct SimdKernels {
  const char* name;
  void (*unary)(UnaryOp op, const float* x, float* y, int64_t n, float p0, float p1);
  void (*binary)(BinaryOp op, const float* a, const float* b, float* y, int64_t n);
  void (*sum_sumsq)(const float* x, int64_t n, float shift, double* sum, double* sumsq);
  double (*sum_sq_dev)(const float* x, int64_t n, float shift);
  void (*affine_act)(const float* x, float* y, int64_t n, float a, float b, int activation);
  void (*normalize_row)(const float* x, float* y, int64_t n, float mean, float rstd, const float* w,
                        const float* b);
  void (*softmax_row)(const float* x, float* y, int64_t n);
};
// The kernels of active_isa().
const SimdKernels& simd();

// --- Tensor-level kernels ------------------------------------------------------------------------
// `out` is always a contiguous tensor of the result shape and dtype; inputs are any view of the
// documented shape (already expanded to `out`'s shape for elementwise kernels).

// Floating dtypes (f32/f16/bf16 through f32 buffers, f64 in double).
void unary(UnaryOp op, const Tensor& x, const Tensor& out, double p0 = 0.0,
           double p1 = 0.0) noexcept;
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) noexcept;
// Any dtype for a and b (byte copies); cond boolean.
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) noexcept;

// Norms and softmax: x contiguous f32, f16 or bf16.
// x [N, C, S] viewed as N * num_groups groups of (C / num_groups) * S elements.
void group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                double eps, ops::Activation post, const Tensor& out) noexcept;
// group_norm's per (batch, channel) coefficients for a contiguous f32 x [N, C, *]: its output is
// act(x * scale[n * C + c] + shift[n * C + c]), computed by SimdKernels::affine_act, with these
// (bit for bit the values group_norm uses). scale and shift hold N * C floats.
void group_norm_coefficients(const Tensor& x, int64_t num_groups, const Tensor& weight,
                             const Tensor& bias, double eps, float* scale, float* shift) noexcept;
// Rows of the last `d` elements (x.numel() / d rows).
void layer_norm(const Tensor& x, int64_t d, const Tensor& weight, const Tensor& bias, double eps,
                const Tensor& out) noexcept;
void rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& out) noexcept;
// Softmax over the last dim.
void softmax_lastdim(const Tensor& x, const Tensor& out) noexcept;

enum class ReduceOp { sum, mean, var, max };
// Reduces `dim` of x (any view, floating dtype) into out (x's shape without dim, contiguous).
void reduce(ReduceOp op, const Tensor& x, int64_t dim, int64_t correction,
            const Tensor& out) noexcept;

// Shape kernels (byte copies, any dtype unless noted).
void concat(const std::vector<Tensor>& tensors, int64_t dim, const Tensor& out) noexcept;
void pad(const Tensor& x, const std::vector<int64_t>& pads, ops::PadMode mode, double value,
         const Tensor& out) noexcept;
// x [..., H, W] -> out [..., H_out, W_out]; scale_h/w: PyTorch's float source-index scale.
void upsample_nearest(const Tensor& x, const Tensor& out, float scale_h, float scale_w) noexcept;
// Floating dtypes; x contiguous [..., H, W], out [..., H_out, W_out].
void avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                bool count_include_pad, const Tensor& out) noexcept;
// ids already validated in range.
void embedding(const Tensor& weight, const Tensor& ids, const Tensor& out) noexcept;
void timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                        double downscale_freq_shift, double scale, int64_t max_period,
                        const Tensor& out) noexcept;

}  // namespace diffuse::cpu
