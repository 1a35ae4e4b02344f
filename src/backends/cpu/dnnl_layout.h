// Fast NCHW <-> NHWC conversions for the convolution path (oneDNN's brgemm convolutions want
// NHWC; diffuse's activations are NCHW). One pass each, cache-blocked, converting to bf16 on
// the way in when the convolution computes in bf16.
#pragma once

#include <cstdint>

namespace diffuse::cpu {

// True when the AVX-512 versions below may be used on this CPU (otherwise use oneDNN reorders).
bool fast_layout_available();

// src: f32 [n][c][hw] with batch stride sn, channel stride sc and contiguous planes of hw;
// dst: contiguous [n][hw][c], f32 (to_bf16 == false) or bf16 bits (to_bf16 == true).
void nchw_to_nhwc(const float* src, int64_t n, int64_t c, int64_t hw, int64_t sn, int64_t sc,
                  void* dst, bool to_bf16) noexcept;

// The same for the nearest 2x upsampling of src (F.interpolate(scale_factor=2), mode nearest),
// restricted to the upsampled rows [row0, row0 + rows): src f32 [n][c][h][w] with batch stride
// sn, channel stride sc and contiguous rows of w; dst contiguous [n][rows][2w][c]. Output pixel
// (y, x) is src pixel (y / 2, x / 2), as upsample_nearest computes it.
void nchw_to_nhwc_up2(const float* src, int64_t n, int64_t c, int64_t w, int64_t sn, int64_t sc,
                      int64_t row0, int64_t rows, void* dst, bool to_bf16) noexcept;

// src: contiguous f32 [n][hw][c]; dst: f32 [n][c][hw] with batch stride dn, channel stride dc and
// contiguous planes of hw (a band of rows of a larger NCHW tensor, say).
void nhwc_to_nchw(const float* src, int64_t n, int64_t c, int64_t hw, float* dst, int64_t dn,
                  int64_t dc) noexcept;

}  // namespace diffuse::cpu
