// Test-side writers for the formats under test: a pickle writer that emits what torch.save
// emits, a zip writer (libzip) for torch checkpoints, and a GGUF builder. Written from the
// format descriptions, independently of the readers in src/formats.
#pragma once

#include <unistd.h>
#include <zip.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse::testing {

// --- pickle -----------------------------------------------------------------------------------

class PickleWriter {
 public:
  PickleWriter& proto(int v = 2) { return op(0x80).byte(static_cast<uint8_t>(v)); }
  PickleWriter& op(uint8_t o) {
    out_.push_back(static_cast<char>(o));
    return *this;
  }
  PickleWriter& byte(uint8_t b) { return op(b); }
  PickleWriter& le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  PickleWriter& raw(const std::string& s) {
    out_ += s;
    return *this;
  }
  // BINUNICODE
  PickleWriter& str(const std::string& s) { return op('X').le(s.size(), 4).raw(s); }
  // BININT / BININT1 / BININT2 / LONG1 as pickle chooses.
  PickleWriter& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').byte(static_cast<uint8_t>(v));
    if (v >= 0 && v < 65536) return op('M').le(static_cast<uint64_t>(v), 2);
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J').le(static_cast<uint32_t>(v), 4);
    return op(0x8a).byte(8).le(static_cast<uint64_t>(v), 8);
  }
  // GLOBAL 'module\nname\n'
  PickleWriter& global(const std::string& module, const std::string& name) {
    return op('c').raw(module + "\n" + name + "\n");
  }
  PickleWriter& mark() { return op('('); }
  PickleWriter& tuple() { return op('t'); }
  PickleWriter& reduce() { return op('R'); }
  PickleWriter& stop() { return op('.'); }
  PickleWriter& binput(uint8_t k) { return op('q').byte(k); }
  PickleWriter& binget(uint8_t k) { return op('h').byte(k); }
  PickleWriter& int_tuple(const std::vector<int64_t>& v) {
    mark();
    for (int64_t x : v) integer(x);
    return tuple();
  }
  // torch._utils._rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size,
  // stride, False, OrderedDict()) as torch.save writes it.
  PickleWriter& tensor(const std::string& storage_type, const std::string& key, int64_t numel,
                       int64_t offset, const std::vector<int64_t>& size,
                       const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    mark();
    mark();
    str("storage");
    global("torch", storage_type);
    str(key);
    str("cpu");
    integer(numel);
    tuple();
    op('Q');  // BINPERSID
    integer(offset);
    int_tuple(size);
    int_tuple(stride);
    op(0x89);  // NEWFALSE
    global("collections", "OrderedDict");
    op(')');  // EMPTY_TUPLE
    reduce();
    tuple();
    return reduce();
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

struct ZipEntry {
  std::string name;
  std::string data;
  bool deflate = false;
};

// Writes a zip with libzip; entries stored unless `deflate`.
inline void write_zip(const std::filesystem::path& path, const std::vector<ZipEntry>& entries) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (z == nullptr) throw std::runtime_error("zip_open failed");
  for (const ZipEntry& e : entries) {
    zip_source_t* s = zip_source_buffer(z, e.data.data(), e.data.size(), 0);
    const zip_int64_t i = zip_file_add(z, e.name.c_str(), s, ZIP_FL_OVERWRITE);
    if (i < 0) throw std::runtime_error("zip_file_add failed");
    zip_set_file_compression(z, static_cast<zip_uint64_t>(i),
                             e.deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
  }
  if (zip_close(z) != 0) throw std::runtime_error("zip_close failed");
}

inline std::string tensor_bytes(const Tensor& t) {
  const Tensor c = t.contiguous();
  return {static_cast<const char*>(c.data_ptr()), c.nbytes()};
}

// --- GGUF ---------------------------------------------------------------------------------------

class GGUFBuilder {
 public:
  struct Tensor_ {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string data;
  };
  explicit GGUFBuilder(uint32_t version = 3) : version_(version) {}
  GGUFBuilder& kv_u32(const std::string& k, uint32_t v) {
    key(k, 4);
    le(kv_, v, 4);
    ++n_kv_;
    return *this;
  }
  GGUFBuilder& kv_str(const std::string& k, const std::string& v) {
    key(k, 8);
    s(kv_, v);
    ++n_kv_;
    return *this;
  }
  GGUFBuilder& kv_f32(const std::string& k, float v) {
    key(k, 6);
    uint32_t b;
    std::memcpy(&b, &v, 4);
    le(kv_, b, 4);
    ++n_kv_;
    return *this;
  }
  GGUFBuilder& kv_str_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    le(kv_, 8, 4);
    le(kv_, v.size(), 8);
    for (const auto& x : v) s(kv_, x);
    ++n_kv_;
    return *this;
  }
  GGUFBuilder& kv_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    key(k, 9);
    le(kv_, 5, 4);
    le(kv_, v.size(), 8);
    for (int32_t x : v) le(kv_, static_cast<uint32_t>(x), 4);
    ++n_kv_;
    return *this;
  }
  GGUFBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                      std::string data) {
    tensors_.push_back({name, std::move(ne), type, std::move(data)});
    return *this;
  }
  GGUFBuilder& alignment(uint64_t a) {
    align_ = a;
    return kv_u32("general.alignment", static_cast<uint32_t>(a));
  }
  std::string build() const {
    std::string out = "GGUF";
    le(out, version_, 4);
    le(out, tensors_.size(), 8);
    le(out, n_kv_, 8);
    out += kv_;
    uint64_t off = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      s(out, t.name);
      le(out, t.ne.size(), 4);
      for (uint64_t e : t.ne) le(out, e, 8);
      le(out, t.type, 4);
      le(out, off, 8);
      offsets.push_back(off);
      off += (t.data.size() + align_ - 1) / align_ * align_;
    }
    out.append((align_ - out.size() % align_) % align_, '\0');
    for (const auto& t : tensors_) {
      out += t.data;
      out.append((align_ - t.data.size() % align_) % align_, '\0');
    }
    return out;
  }

 private:
  static void le(std::string& o, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) o.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  static void s(std::string& o, const std::string& v) {
    le(o, v.size(), 8);
    o += v;
  }
  void key(const std::string& k, uint32_t type) {
    s(kv_, k);
    le(kv_, type, 4);
  }
  uint32_t version_;
  uint64_t n_kv_ = 0;
  uint64_t align_ = 32;
  std::string kv_;
  std::vector<Tensor_> tensors_;
};

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  FILE* f = std::fopen(p.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot write " + p.string());
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

inline std::filesystem::path temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("diffuse_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

}  // namespace diffuse::testing
