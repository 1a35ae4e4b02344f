// Image files in and out: PNG, JPEG, BMP, TGA, ... read through stb_image; PNG written through
// libpng with text chunks (A1111's "parameters" and others); resizing through stb_image_resize.
// Images are float32 NHWC tensors [1, H, W, C] in [0, 1], the pipelines' layout.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse {

// Reads an image file as [1, H, W, channels] f32 in [0, 1]; channels 3 (RGB) or 1 (grayscale),
// alpha dropped. Throws diffuse::Error naming the file when it cannot be decoded.
Tensor load_image(const std::filesystem::path& path, int channels = 3);

// Writes a [1, H, W, C] or [H, W, C] image in [0, 1] (C = 1, 3 or 4) as an 8-bit PNG, rounding
// like PIL (x * 255, round half to even after clamping), with tEXt chunks `text` (key, value).
// Throws diffuse::Error on I/O failure.
void save_png(const std::filesystem::path& path, const Tensor& image,
              const std::vector<std::pair<std::string, std::string>>& text = {});

// Reads the tEXt/iTXt/zTXt chunks of a PNG (key, value), e.g. A1111's "parameters".
std::vector<std::pair<std::string, std::string>> read_png_text(const std::filesystem::path& path);

// Resizes a [1, H, W, C] image to height x width (Mitchell filter when shrinking, Catmull-Rom
// when enlarging, as stb_image_resize's defaults).
Tensor resize_image(const Tensor& image, int64_t height, int64_t width);

}  // namespace diffuse
