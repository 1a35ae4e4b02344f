#include "diffuse/formats/gguf.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

namespace diffuse {
namespace {

constexpr int kMaxDims = 8;  // ggml uses 4; a little slack for future files
constexpr int kMaxArrayDepth = 4;

struct TypeRow {
  uint32_t id;
  GGMLTypeInfo info;
};

// Block sizes and bytes per block: ggml/src/ggml.c type_traits (public format constants).
constexpr std::array<TypeRow, 31> kTypes{{
    {0, {"F32", 1, 4, true}},          {1, {"F16", 1, 2, true}},
    {2, {"Q4_0", 32, 18, true}},       {3, {"Q4_1", 32, 20, true}},
    {6, {"Q5_0", 32, 22, true}},       {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},       {9, {"Q8_1", 32, 36, false}},
    {10, {"Q2_K", 256, 84, true}},     {11, {"Q3_K", 256, 110, true}},
    {12, {"Q4_K", 256, 144, true}},    {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}},    {15, {"Q8_K", 256, 292, false}},
    {16, {"IQ2_XXS", 256, 66, false}}, {17, {"IQ2_XS", 256, 74, false}},
    {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},   {21, {"IQ3_S", 256, 110, false}},
    {22, {"IQ2_S", 256, 82, false}},   {23, {"IQ4_XS", 256, 136, false}},
    {24, {"I8", 1, 1, true}},          {25, {"I16", 1, 2, true}},
    {26, {"I32", 1, 4, true}},         {27, {"I64", 1, 8, true}},
    {28, {"F64", 1, 8, true}},         {29, {"IQ1_M", 256, 56, false}},
    {30, {"BF16", 1, 2, true}},        {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},
}};

// Plain (non-block) ggml types and the DType that views them.
bool plain_dtype(uint32_t type, DType* out) {
  switch (static_cast<GGMLType>(type)) {
    case GGMLType::F32:
      *out = DType::f32;
      return true;
    case GGMLType::F16:
      *out = DType::f16;
      return true;
    case GGMLType::BF16:
      *out = DType::bf16;
      return true;
    case GGMLType::F64:
      *out = DType::f64;
      return true;
    case GGMLType::I8:
      *out = DType::i8;
      return true;
    case GGMLType::I16:
      *out = DType::i16;
      return true;
    case GGMLType::I32:
      *out = DType::i32;
      return true;
    case GGMLType::I64:
      *out = DType::i64;
      return true;
    default:
      return false;
  }
}

inline float h2f(const uint8_t* p) {
  return f16_bits_to_float(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// Q4_K / Q5_K: eight 6-bit (scale, min) pairs packed in 12 bytes. Pairs 0-3 sit in the low
// six bits of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 take their low four bits from the
// nibbles of bytes 8-11 and their top two bits from the top bits of bytes 0-7.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Block layouts, one block each (y receives block_size floats):
//   Q4_0 (18 B): f16 d, u8 qs[16]; y[j] = (lo4(qs[j]) - 8) d, y[j+16] = (hi4(qs[j]) - 8) d
//   Q4_1 (20 B): f16 d, f16 m, qs[16]; y = q d + m
//   Q5_0 (22 B): f16 d, u32 qh, qs[16]; 5th bit of y[j] is bit j of qh; y = (q - 16) d
//   Q5_1 (24 B): f16 d, f16 m, u32 qh, qs[16]; y = q d + m
//   Q8_0 (34 B): f16 d, i8 qs[32]; y = q d
void block_q4_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((b[2 + j] & 0xF) - 8) * d;
    y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
  }
}
void block_q4_1(const uint8_t* b, float* y) {
  const float d = h2f(b), m = h2f(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(b[4 + j] & 0xF) * d + m;
    y[j + 16] = static_cast<float>(b[4 + j] >> 4) * d + m;
  }
}
void block_q5_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>(((b[6 + j] & 0xF) | h0) - 16) * d;
    y[j + 16] = static_cast<float>(((b[6 + j] >> 4) | h1) - 16) * d;
  }
}
void block_q5_1(const uint8_t* b, float* y) {
  const float d = h2f(b), m = h2f(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>((b[8 + j] & 0xF) | h0) * d + m;
    y[j + 16] = static_cast<float>((b[8 + j] >> 4) | h1) * d + m;
  }
}
void block_q8_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// K-quants (QK_K = 256):
//   Q2_K (84 B): u8 scales[16] (lo4 scale, hi4 min), u8 qs[64] (2 bits), f16 d, f16 dmin.
//     Each 128-element half uses 32 bytes of qs; element 32 s + l of the half (s = 0..3 the
//     bit pair, l < 32) is (qs[l] >> 2 s) & 3, with sub-block scale index 2 s + (l >= 16).
//   Q3_K (110 B): u8 hmask[32], u8 qs[64], u8 scales[12] (16 6-bit scales, bias 32), f16 d.
//     Low two bits as in Q2_K; the third bit of element e is bit e / 32 of hmask[e % 32];
//     value = d (scale - 32) (q - (high bit clear ? 4 : 0)).
//   Q4_K (144 B): f16 d, f16 dmin, u8 scales[12] (8 6-bit pairs), u8 qs[128]; 64-element
//     chunks: 32 low nibbles then 32 high nibbles; value = d sc q - dmin m.
//   Q5_K (176 B): f16 d, f16 dmin, scales[12], u8 qh[32], u8 qs[128]; as Q4_K with a fifth
//     bit for element 32 c + l (c = 0..7 the 32-element group) in bit c of qh[l].
//   Q6_K (210 B): u8 ql[128], u8 qh[64], i8 scales[16], f16 d; per 128-element half, element
//     l + 32 k (k = 0..3, l < 32) takes its low 4 bits from ql[l + 32 (k & 1)] (low nibble for
//     k < 2, high for k >= 2) and its top 2 bits from (qh[l] >> 2 k) & 3;
//     value = d scales[2 k + l / 16] (q - 32).
void block_q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* q = b + 16;
  const float d = h2f(b + 80), dmin = h2f(b + 82);
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * static_cast<float>(sc[is] & 0xF);
        const float ml = dmin * static_cast<float>(sc[is] >> 4);
        ++is;
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
    }
    q += 32;
  }
}
void block_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* s = b + 96;
  const float d = h2f(b + 108);
  int8_t scales[16];
  for (int j = 0; j < 16; ++j) {
    // Bytes 0-7 hold the low four bits of scales 0-7 (low nibbles) and 8-15 (high nibbles);
    // byte 8 + j % 4 holds the top two bits of scale j at bit 2 (j / 4).
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    const int hi = (s[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    scales[j] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * static_cast<float>(scales[is++]);
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * half;
          const int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      m = static_cast<uint8_t>(m << 1);
    }
    q += 32;
  }
}
void block_q4_k(const uint8_t* b, float* y) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* q = b + 16;
  for (int c = 0; c < 4; ++c) {
    uint8_t s1, m1, s2, m2;
    scale_min_k4(2 * c, sc, &s1, &m1);
    scale_min_k4(2 * c + 1, sc, &s2, &m2);
    const float d1 = d * s1, mm1 = dmin * m1, d2 = d * s2, mm2 = dmin * m2;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - mm1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - mm2;
    q += 32;
  }
}
void block_q5_k(const uint8_t* b, float* y) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int c = 0; c < 4; ++c) {
    uint8_t s1, m1, s2, m2;
    scale_min_k4(2 * c, sc, &s1, &m1);
    scale_min_k4(2 * c + 1, sc, &s2, &m2);
    const float d1 = d * s1, mm1 = dmin * m1, d2 = d * s2, mm2 = dmin * m2;
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>((q[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - mm1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * static_cast<float>((q[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - mm2;
    q += 32;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}
void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = h2f(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t size, const std::string& where)
      : p_(p), size_(size), where_(where) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const uint8_t* take(uint64_t n, const char* what) {
    DIFFUSE_CHECK(n <= left(), where_, ": ", what, " of ", n, " bytes at byte ", pos_,
                  " runs past the end of the file (", size_, " bytes)");
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  uint64_t u(int n, const char* what) {
    const uint8_t* b = take(static_cast<uint64_t>(n), what);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string str(const char* what) {
    const uint64_t at = pos_;
    const uint64_t n = u(8, what);
    DIFFUSE_CHECK(n <= left(), where_, ": ", what, " at byte ", at, " claims ", n,
                  " bytes but only ", left(), " remain");
    const uint8_t* b = take(n, what);
    return {reinterpret_cast<const char*>(b), n};
  }
  const std::string& where() const { return where_; }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& where_;
};

uint64_t scalar_bytes(GGUFValueType t) {
  switch (t) {
    case GGUFValueType::u8:
    case GGUFValueType::i8:
    case GGUFValueType::boolean:
      return 1;
    case GGUFValueType::u16:
    case GGUFValueType::i16:
      return 2;
    case GGUFValueType::u32:
    case GGUFValueType::i32:
    case GGUFValueType::f32:
      return 4;
    case GGUFValueType::u64:
    case GGUFValueType::i64:
    case GGUFValueType::f64:
      return 8;
    default:
      return 0;
  }
}

double decode_number(GGUFValueType t, const uint8_t* b) {
  uint64_t v = 0;
  const uint64_t n = scalar_bytes(t);
  for (uint64_t i = n; i-- > 0;) v = (v << 8) | b[i];
  switch (t) {
    case GGUFValueType::i8:
      return static_cast<int8_t>(v);
    case GGUFValueType::i16:
      return static_cast<int16_t>(v);
    case GGUFValueType::i32:
      return static_cast<int32_t>(v);
    case GGUFValueType::i64:
      return static_cast<double>(static_cast<int64_t>(v));
    case GGUFValueType::f32: {
      float f;
      const auto w = static_cast<uint32_t>(v);
      std::memcpy(&f, &w, 4);
      return f;
    }
    case GGUFValueType::f64: {
      double f;
      std::memcpy(&f, &v, 8);
      return f;
    }
    default:
      return static_cast<double>(v);
  }
}

GGUFValue read_value(Cursor& c, GGUFValueType type, int depth) {
  GGUFValue v;
  v.type = type;
  const uint64_t at = c.pos();
  if (type == GGUFValueType::string) {
    v.s = c.str("string value");
    return v;
  }
  if (type == GGUFValueType::array) {
    DIFFUSE_CHECK(depth < kMaxArrayDepth, c.where(), ": arrays nested deeper than ", kMaxArrayDepth,
                  " at byte ", at);
    const auto et = static_cast<uint32_t>(c.u(4, "array type"));
    DIFFUSE_CHECK(et <= 12, c.where(), ": unknown array element type ", et, " at byte ", at);
    v.array_type = static_cast<GGUFValueType>(et);
    v.count = c.u(8, "array length");
    const uint64_t min_bytes = et == 8 ? 8 : et == 9 ? 12 : scalar_bytes(v.array_type);
    DIFFUSE_CHECK(v.count <= c.left() / min_bytes, c.where(), ": array at byte ", at, " claims ",
                  v.count, " elements, more than the ", c.left(), " remaining bytes can hold");
    if (v.array_type == GGUFValueType::string) {
      v.strings.reserve(v.count);
      for (uint64_t k = 0; k < v.count; ++k) v.strings.push_back(c.str("array string"));
    } else if (v.array_type == GGUFValueType::array) {
      for (uint64_t k = 0; k < v.count; ++k)
        v.arrays.push_back(read_value(c, GGUFValueType::array, depth + 1));
    } else {
      const uint8_t* b = c.take(v.count * min_bytes, "array data");
      v.raw.assign(reinterpret_cast<const char*>(b), v.count * min_bytes);
    }
    return v;
  }
  const uint64_t n = scalar_bytes(type);
  DIFFUSE_CHECK(n > 0, c.where(), ": unknown value type ", static_cast<uint32_t>(type), " at byte ",
                at);
  const uint8_t* b = c.take(n, "value");
  for (uint64_t i = n; i-- > 0;) v.u = (v.u << 8) | b[i];
  v.f = decode_number(type, b);
  if (type == GGUFValueType::f32 || type == GGUFValueType::f64) {
    v.i = static_cast<int64_t>(0);
  } else if (type == GGUFValueType::i8 || type == GGUFValueType::i16 ||
             type == GGUFValueType::i32 || type == GGUFValueType::i64) {
    v.i = type == GGUFValueType::i64 ? static_cast<int64_t>(v.u) : static_cast<int64_t>(v.f);
  } else {
    v.i = static_cast<int64_t>(v.u);
  }
  return v;
}

const char* value_type_name(GGUFValueType t) {
  static const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i <= 12 ? names[i] : "?";
}

}  // namespace

const GGMLTypeInfo* ggml_type_info(uint32_t type) {
  for (const auto& r : kTypes)
    if (r.id == type) return &r.info;
  return nullptr;
}

void dequantize_ggml(GGMLType type, const void* src, float* dst, int64_t n) {
  const GGMLTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
  DIFFUSE_CHECK(info != nullptr && info->dequantizable, "dequantize_ggml: type ",
                info ? info->name : "unknown", " (", static_cast<uint32_t>(type),
                ") cannot be dequantized");
  DIFFUSE_CHECK(n >= 0 && n % info->block_size == 0, "dequantize_ggml: ", n,
                " elements are not a multiple of the ", info->name, " block size ",
                info->block_size);
  const auto* b = static_cast<const uint8_t*>(src);
  DType plain;
  if (plain_dtype(static_cast<uint32_t>(type), &plain)) {
    convert(src, plain, dst, DType::f32, static_cast<std::size_t>(n));
    return;
  }
  void (*fn)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case GGMLType::Q4_0:
      fn = block_q4_0;
      break;
    case GGMLType::Q4_1:
      fn = block_q4_1;
      break;
    case GGMLType::Q5_0:
      fn = block_q5_0;
      break;
    case GGMLType::Q5_1:
      fn = block_q5_1;
      break;
    case GGMLType::Q8_0:
      fn = block_q8_0;
      break;
    case GGMLType::Q2_K:
      fn = block_q2_k;
      break;
    case GGMLType::Q3_K:
      fn = block_q3_k;
      break;
    case GGMLType::Q4_K:
      fn = block_q4_k;
      break;
    case GGMLType::Q5_K:
      fn = block_q5_k;
      break;
    case GGMLType::Q6_K:
      fn = block_q6_k;
      break;
    default:
      DIFFUSE_FAIL("dequantize_ggml: no decoder for ", info->name);
  }
  const int64_t blocks = n / info->block_size;
  for (int64_t i = 0; i < blocks; ++i) fn(b + i * info->block_bytes, dst + i * info->block_size);
}

double GGUFValue::number_at(uint64_t k) const {
  const uint64_t n = scalar_bytes(array_type);
  DIFFUSE_CHECK(type == GGUFValueType::array && n > 0 && k < count, "GGUFValue::number_at: index ",
                k, " outside a numeric array of ", count);
  return decode_number(array_type, reinterpret_cast<const uint8_t*>(raw.data()) + k * n);
}

std::string GGUFValue::summary() const {
  switch (type) {
    case GGUFValueType::string:
      return "\"" + s + "\"";
    case GGUFValueType::boolean:
      return u ? "true" : "false";
    case GGUFValueType::f32:
    case GGUFValueType::f64:
      return std::to_string(f);
    case GGUFValueType::u64:
      return std::to_string(u);
    case GGUFValueType::array:
      return "[" + std::to_string(count) + " x " + value_type_name(array_type) + "]";
    default:
      return std::to_string(i);
  }
}

GGUFFile GGUFFile::open(const std::filesystem::path& path) {
  return from_storage(Storage::map_file(path), path.string());
}

GGUFFile GGUFFile::from_storage(std::shared_ptr<Storage> bytes, const std::string& name) {
  GGUFFile f;
  f.path_ = name;
  f.mapping_ = std::move(bytes);
  const std::string& where = f.path_;
  const uint64_t size = f.mapping_->nbytes();
  const auto* p = static_cast<const uint8_t*>(f.mapping_->data());
  Cursor c(p, size, where);
  DIFFUSE_CHECK(size >= 24 && std::memcmp(p, "GGUF", 4) == 0, where,
                ": not a GGUF file (expected the magic \"GGUF\" and a 24-byte header)");
  c.take(4, "magic");
  f.version_ = static_cast<uint32_t>(c.u(4, "version"));
  DIFFUSE_CHECK(f.version_ == 2 || f.version_ == 3, where, ": GGUF version ", f.version_,
                " is not supported (2 or 3; a big-endian file reads as a huge version)");
  const uint64_t n_tensors = c.u(8, "tensor count");
  const uint64_t n_kv = c.u(8, "key/value count");
  // Smallest encodings: a key/value is 8 (key length) + 4 (type) + 1 bytes; a tensor info is
  // 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
  DIFFUSE_CHECK(n_kv <= c.left() / 13, where, ": ", n_kv,
                " key/values cannot fit in the file (byte 16)");
  DIFFUSE_CHECK(n_tensors <= c.left() / 24, where, ": ", n_tensors,
                " tensors cannot fit in the file (byte 8)");
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.str("key");
    const uint64_t at = c.pos();
    const auto type = static_cast<uint32_t>(c.u(4, "value type"));
    DIFFUSE_CHECK(type <= 12, where, ": key '", key, "' has unknown value type ", type, " at byte ",
                  at);
    GGUFValue v = read_value(c, static_cast<GGUFValueType>(type), 0);
    if (key == "general.alignment") {
      DIFFUSE_CHECK(
          v.type == GGUFValueType::u32 && v.u > 0 && (v.u & (v.u - 1)) == 0 && v.u <= (1u << 20),
          where, ": general.alignment must be a u32 power of two, got ", v.summary());
      f.alignment_ = v.u;
    }
    f.kv_.emplace_back(std::move(key), std::move(v));
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GGUFTensor t;
    t.name = c.str("tensor name");
    const uint64_t at = c.pos();
    const uint64_t n_dims = c.u(4, "tensor dimension count");
    DIFFUSE_CHECK(n_dims <= kMaxDims, where, ": tensor '", t.name, "' has ", n_dims,
                  " dimensions (at most ", kMaxDims, ") at byte ", at);
    uint64_t numel = 1;
    for (uint64_t d = 0; d < n_dims; ++d) {
      const uint64_t e = c.u(8, "tensor extent");
      DIFFUSE_CHECK(e <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                        !__builtin_mul_overflow(numel, e, &numel),
                    where, ": tensor '", t.name, "' has absurd extents at byte ", at);
      t.ne.push_back(e);
    }
    for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it)
      t.shape.push_back(static_cast<int64_t>(*it));
    t.type = static_cast<uint32_t>(c.u(4, "tensor type"));
    const GGMLTypeInfo* ti = ggml_type_info(t.type);
    DIFFUSE_CHECK(ti != nullptr, where, ": tensor '", t.name, "' has unknown ggml type ", t.type);
    const uint64_t row = t.ne.empty() ? 1 : t.ne[0];
    DIFFUSE_CHECK(row % static_cast<uint64_t>(ti->block_size) == 0, where, ": tensor '", t.name,
                  "' rows of ", row, " elements are not a multiple of the ", ti->name,
                  " block size ", ti->block_size);
    t.nbytes = numel / static_cast<uint64_t>(ti->block_size);
    DIFFUSE_CHECK(
        !__builtin_mul_overflow(t.nbytes, static_cast<uint64_t>(ti->block_bytes), &t.nbytes), where,
        ": tensor '", t.name, "' is too large");
    t.offset = c.u(8, "tensor offset");
    f.tensors_.push_back(std::move(t));
  }
  // 2. The data section starts at the next multiple of the alignment.
  const uint64_t a = f.alignment_;
  f.data_offset_ = (c.pos() + a - 1) / a * a;
  DIFFUSE_CHECK(f.data_offset_ <= size || f.tensors_.empty(), where,
                ": the data section would start at byte ", f.data_offset_, ", past the end (", size,
                " bytes)");
  const uint64_t data_size = size > f.data_offset_ ? size - f.data_offset_ : 0;
  std::vector<const GGUFTensor*> sorted;
  for (const GGUFTensor& t : f.tensors_) {
    DIFFUSE_CHECK(t.offset % a == 0, where, ": tensor '", t.name, "' offset ", t.offset,
                  " is not a multiple of the alignment ", a);
    DIFFUSE_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset, where, ": tensor '",
                  t.name, "' bytes [", t.offset, ", +", t.nbytes,
                  ") fall outside the data section of ", data_size, " bytes (file offset ",
                  f.data_offset_, ")");
    sorted.push_back(&t);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* x, const auto* y) { return x->offset < y->offset; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    DIFFUSE_CHECK(sorted[i]->offset >= sorted[i - 1]->offset + sorted[i - 1]->nbytes ||
                      sorted[i - 1]->nbytes == 0,
                  where, ": tensors '", sorted[i - 1]->name, "' and '", sorted[i]->name,
                  "' overlap");
  }
  std::vector<const GGUFTensor*> by_name;
  for (const GGUFTensor& t : f.tensors_) by_name.push_back(&t);
  std::sort(by_name.begin(), by_name.end(),
            [](const auto* x, const auto* y) { return x->name < y->name; });
  for (std::size_t i = 1; i < by_name.size(); ++i)
    DIFFUSE_CHECK(by_name[i]->name != by_name[i - 1]->name, where, ": tensor '", by_name[i]->name,
                  "' appears twice");
  return f;
}

const GGUFValue* GGUFFile::find(std::string_view key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

const GGUFTensor& GGUFFile::tensor(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  DIFFUSE_FAIL(path_, ": no tensor named '", name, "'");
}

Tensor GGUFFile::raw(std::string_view name) const {
  const GGUFTensor& t = tensor(name);
  auto bytes = mapping_->subrange(data_offset_ + t.offset, t.nbytes);
  DType plain;
  if (plain_dtype(t.type, &plain)) return Tensor::wrap(std::move(bytes), t.shape, plain);
  return Tensor::wrap(std::move(bytes), {static_cast<int64_t>(t.nbytes)}, DType::u8);
}

Tensor GGUFFile::dequantize(std::string_view name, DType dtype) const {
  DIFFUSE_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16,
                "GGUFFile::dequantize: target dtype must be f32, f16 or bf16, got ",
                dtype_name(dtype));
  const GGUFTensor& t = tensor(name);
  DType plain;
  if (plain_dtype(t.type, &plain)) return raw(name).to(dtype);
  const GGMLTypeInfo* ti = ggml_type_info(t.type);
  DIFFUSE_CHECK(ti->dequantizable, path_, ": tensor '", name, "' has type ", ti->name,
                ", which diffuse cannot dequantize (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 "
                "Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K)");
  Tensor out = Tensor::empty(t.shape, dtype);
  const auto* src = static_cast<const uint8_t*>(mapping_->data()) + data_offset_ + t.offset;
  const int64_t numel = out.numel();
  if (dtype == DType::f32) {
    dequantize_ggml(static_cast<GGMLType>(t.type), src, out.data<float>(), numel);
    return out;
  }
  // Decode a slice of blocks at a time to f32, then narrow: no full-size f32 temporary.
  const int64_t chunk_blocks = std::max<int64_t>(1, 16384 / ti->block_size);
  std::vector<float> tmp(static_cast<std::size_t>(chunk_blocks * ti->block_size));
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  for (int64_t e = 0; e < numel; e += chunk_blocks * ti->block_size) {
    const int64_t m = std::min<int64_t>(numel - e, chunk_blocks * ti->block_size);
    dequantize_ggml(static_cast<GGMLType>(t.type), src + e / ti->block_size * ti->block_bytes,
                    tmp.data(), m);
    convert(tmp.data(), DType::f32, dst + e * static_cast<int64_t>(dtype_size(dtype)), dtype,
            static_cast<std::size_t>(m));
  }
  return out;
}

namespace {

class GGUFSource final : public TensorSource {
 public:
  explicit GGUFSource(GGUFFile f) : TensorSource(f.path()), file_(std::move(f)) {
    for (const auto& [k, v] : file_.metadata()) {
      if (v.type == GGUFValueType::array) {
        metadata_[k] = v.summary();
      } else {
        metadata_[k] = v.type == GGUFValueType::string ? v.s : v.summary();
      }
    }
    for (const GGUFTensor& t : file_.tensors()) {
      TensorInfo i;
      i.name = t.name;
      i.shape = t.shape;
      DType plain;
      i.dtype = plain_dtype(t.type, &plain) ? plain : DType::f32;
      i.stored_type = std::string(ggml_type_info(t.type)->name);
      i.stored_bytes = t.nbytes;
      i.file = path_;
      add(std::move(i));
    }
  }
  std::string_view format() const override { return "gguf"; }

 protected:
  Tensor load(const TensorInfo& info) const override {
    DType plain;
    if (plain_dtype(file_.tensor(info.name).type, &plain)) return file_.raw(info.name);
    return file_.dequantize(info.name, DType::f32);
  }
  Tensor load_as(const TensorInfo& info, DType dtype) const override {
    DType plain;
    if (plain_dtype(file_.tensor(info.name).type, &plain) ||
        (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16))
      return load(info).to(dtype);
    return file_.dequantize(info.name, dtype);
  }

 private:
  GGUFFile file_;
};

}  // namespace

std::shared_ptr<TensorSource> open_gguf_source(const std::filesystem::path& path) {
  return std::make_shared<GGUFSource>(GGUFFile::open(path));
}

}  // namespace diffuse
