#include "diffuse/formats/image.h"

#include <png.h>
#include <stb_image.h>
#include <stb_image_resize.h>

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <memory>

namespace diffuse {

Tensor load_image(const std::filesystem::path& path, int channels) {
  DIFFUSE_CHECK(channels == 1 || channels == 3, "load_image: channels must be 1 or 3, got ",
                channels);
  int w = 0, h = 0, n = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> pixels(
      stbi_load(path.c_str(), &w, &h, &n, channels), stbi_image_free);
  DIFFUSE_CHECK(pixels != nullptr, "cannot read image '", path.string(),
                "': ", stbi_failure_reason());
  const std::size_t count = static_cast<std::size_t>(w) * h * channels;
  Tensor out = Tensor::empty({1, h, w, channels});
  float* dst = out.data<float>();
  for (std::size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(pixels.get()[i]) / 255.0f;
  return out;
}

namespace {

// The libpng calls, in a function without C++ objects: libpng reports errors by longjmp, which
// must not cross destructors. Returns false on failure.
bool write_png_rows(std::FILE* file, const unsigned char* pixels, png_uint_32 width,
                    png_uint_32 height, int channels, png_text* chunks, int num_chunks) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info != nullptr ? &info : nullptr);
    return false;
  }
  png_init_io(png, file);
  const int color = channels == 1   ? PNG_COLOR_TYPE_GRAY
                    : channels == 3 ? PNG_COLOR_TYPE_RGB
                                    : PNG_COLOR_TYPE_RGBA;
  png_set_IHDR(png, info, width, height, 8, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (num_chunks > 0) png_set_text(png, info, chunks, num_chunks);
  png_write_info(png, info);
  for (png_uint_32 y = 0; y < height; ++y)
    png_write_row(png, pixels + static_cast<std::size_t>(y) * width * channels);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

void save_png(const std::filesystem::path& path, const Tensor& image,
              const std::vector<std::pair<std::string, std::string>>& text) {
  Tensor img = image.dim() == 4 ? image : image.unsqueeze(0);
  DIFFUSE_CHECK(img.dim() == 4 && img.size(0) == 1 &&
                    (img.size(3) == 1 || img.size(3) == 3 || img.size(3) == 4),
                "save_png: expected a [1, H, W, C] image with C in {1, 3, 4}, got ",
                shape_str(image.shape()));
  const int64_t h = img.size(1), w = img.size(2), c = img.size(3);
  const std::vector<float> values = img.to_vector<float>();
  std::vector<unsigned char> bytes(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    // diffusers numpy_to_pil: (images * 255).round().astype("uint8") after clamping to [0, 1].
    const float v = std::fmin(std::fmax(values[i], 0.0f), 1.0f) * 255.0f;
    bytes[i] = static_cast<unsigned char>(std::nearbyint(v));
  }
  std::vector<png_text> chunks(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    chunks[i] = {};
    chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(text[i].first.c_str());
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
    chunks[i].text_length = text[i].second.size();
  }
  std::FILE* file = std::fopen(path.c_str(), "wb");
  DIFFUSE_CHECK(file != nullptr, "cannot open '", path.string(), "' for writing");
  const bool ok =
      write_png_rows(file, bytes.data(), static_cast<png_uint_32>(w), static_cast<png_uint_32>(h),
                     static_cast<int>(c), chunks.data(), static_cast<int>(chunks.size()));
  const bool closed = std::fclose(file) == 0;
  DIFFUSE_CHECK(ok && closed, "save_png: writing '", path.string(), "' failed");
}

namespace {

// Reads the text chunks through libpng (no C++ objects across its longjmp); calls `add` for each.
bool read_png_chunks(std::FILE* file, void (*add)(void*, const char*, const char*, std::size_t),
                     void* ctx) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
    return false;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  png_textp texts = nullptr;
  const int n = png_get_text(png, info, &texts, nullptr);
  for (int i = 0; i < n; ++i) add(ctx, texts[i].key, texts[i].text, texts[i].text_length);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> read_png_text(const std::filesystem::path& path) {
  std::vector<std::pair<std::string, std::string>> out;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  DIFFUSE_CHECK(file != nullptr, "cannot open '", path.string(), "'");
  const bool ok = read_png_chunks(
      file,
      [](void* ctx, const char* key, const char* text, std::size_t len) {
        static_cast<std::vector<std::pair<std::string, std::string>>*>(ctx)->emplace_back(
            key, std::string(text, len));
      },
      &out);
  std::fclose(file);
  DIFFUSE_CHECK(ok, "'", path.string(), "' is not a readable PNG file");
  return out;
}

Tensor resize_image(const Tensor& image, int64_t height, int64_t width) {
  DIFFUSE_CHECK(image.dim() == 4 && image.size(0) == 1, "resize_image: expected [1, H, W, C], got ",
                shape_str(image.shape()));
  DIFFUSE_CHECK(height > 0 && width > 0, "resize_image: invalid size ", width, "x", height);
  if (image.size(1) == height && image.size(2) == width) return image;
  const Tensor src = image.to(DType::f32);
  const int c = static_cast<int>(image.size(3));
  Tensor out = Tensor::empty({1, height, width, c});
  const int ok = stbir_resize_float(src.data<float>(), static_cast<int>(image.size(2)),
                                    static_cast<int>(image.size(1)), 0, out.data<float>(),
                                    static_cast<int>(width), static_cast<int>(height), 0, c);
  DIFFUSE_CHECK(ok != 0, "resize_image: resizing failed");
  return out;
}

}  // namespace diffuse
