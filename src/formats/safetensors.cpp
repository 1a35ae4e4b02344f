#include "diffuse/formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "json_util.h"

namespace diffuse {
namespace {

// Largest header accepted: the reference library's limit (100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

DType dtype_from_safetensors(const std::string& s, const std::string& where,
                             const std::string& name) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const DTypeInfo& info = dtype_info(static_cast<DType>(i));
    if (info.safetensors_name == s) return info.dtype;
  }
  DIFFUSE_FAIL(where, ": tensor '", name, "' has unsupported dtype '", s,
               "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2)");
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f = from_storage(Storage::map_file(path), path.string());
  f.path_ = path;
  return f;
}

SafetensorsFile SafetensorsFile::from_storage(std::shared_ptr<Storage> storage,
                                              const std::string& where) {
  SafetensorsFile f;
  f.path_ = where;
  f.mapping_ = std::move(storage);
  const uint64_t file_size = f.mapping_->nbytes();
  DIFFUSE_CHECK(file_size >= 8, where, ": not a safetensors file (", file_size,
                " bytes, shorter than the 8-byte header length)");
  const auto* bytes = static_cast<const unsigned char*>(f.mapping_->data());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  DIFFUSE_CHECK(n <= kMaxHeaderBytes, where, ": header length ", n, " exceeds the limit of ",
                kMaxHeaderBytes, " bytes (not a safetensors file?)");
  DIFFUSE_CHECK(n <= file_size - 8, where, ": header length ", n,
                " runs past the end of the file (", file_size, " bytes)");
  DIFFUSE_CHECK(n >= 2 && bytes[8] == '{', where,
                ": the header at byte 8 does not start with '{' (not a safetensors file?)");
  f.data_start_ = 8 + n;
  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  detail::check_json_depth(text, where);
  // ordered_json keeps the header order for entries().
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    DIFFUSE_FAIL(where, ": header (bytes 8 to ", 8 + n, ") is not valid JSON: ", e.what());
  }
  DIFFUSE_CHECK(header.is_object(), where, ": header is not a JSON object");
  const uint64_t data_size = file_size - f.data_start_;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::ordered_json& v = it.value();
    if (name == "__metadata__") {
      DIFFUSE_CHECK(v.is_object(), where, ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        DIFFUSE_CHECK(m.value().is_string(), where, ": __metadata__ value for '", m.key(),
                      "' is not a string");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    DIFFUSE_CHECK(
        v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
        where, ": tensor '", name, "' needs dtype, shape and data_offsets");
    DIFFUSE_CHECK(v["dtype"].is_string(), where, ": tensor '", name, "': dtype is not a string");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = dtype_from_safetensors(v["dtype"].get<std::string>(), where, name);
    const auto& shape = v["shape"];
    DIFFUSE_CHECK(shape.is_array() && shape.size() <= 64, where, ": tensor '", name,
                  "': shape is not an array of at most 64 extents");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      DIFFUSE_CHECK(d.is_number_unsigned(), where, ": tensor '", name,
                    "': shape holds a non-integer or negative extent");
      const uint64_t x = d.get<uint64_t>();
      DIFFUSE_CHECK(x <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where,
                    ": tensor '", name, "': extent ", x, " is too large");
      e.shape.push_back(static_cast<int64_t>(x));
    }
    // Multiply in a second pass: a zero extent anywhere makes the tensor empty, whatever the
    // other extents are; overflow is only an error for non-empty tensors.
    bool empty = false;
    for (const int64_t x : e.shape) empty = empty || x == 0;
    if (empty) {
      numel = 0;
    } else {
      for (const int64_t x : e.shape)
        DIFFUSE_CHECK(
            !__builtin_mul_overflow(numel, static_cast<uint64_t>(x), &numel) && numel <= data_size,
            where, ": tensor '", name, "': shape ", shape_str(e.shape),
            " has more elements than the file has bytes");
    }
    const auto& off = v["data_offsets"];
    DIFFUSE_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                      off[1].is_number_unsigned(),
                  where, ": tensor '", name, "': data_offsets must be two unsigned integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    DIFFUSE_CHECK(e.begin <= e.end && e.end <= data_size, where, ": tensor '", name,
                  "': data_offsets [", e.begin, ", ", e.end, ") fall outside the data section of ",
                  data_size, " bytes (file offset ", f.data_start_, ")");
    uint64_t expected = 0;
    const bool overflow = __builtin_mul_overflow(numel, dtype_size(e.dtype), &expected);
    DIFFUSE_CHECK(!overflow && expected == e.end - e.begin, where, ": tensor '", name, "': shape ",
                  shape_str(e.shape), " of ", dtype_name(e.dtype), " needs ", expected,
                  " bytes but data_offsets span ", e.end - e.begin);
    f.index_[name] = f.entries_.size();
    f.entries_.push_back(std::move(e));
  }
  // No two tensors may share bytes.
  std::vector<const SafetensorsEntry*> sorted;
  for (const auto& e : f.entries_) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    const auto* prev = sorted[i - 1];
    const auto* cur = sorted[i];
    DIFFUSE_CHECK(cur->begin >= prev->end || prev->begin == prev->end || cur->begin == cur->end,
                  where, ": tensors '", prev->name, "' [", prev->begin, ", ", prev->end, ") and '",
                  cur->name, "' [", cur->begin, ", ", cur->end, ") overlap");
  }
  return f;
}

bool SafetensorsFile::contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

const SafetensorsEntry& SafetensorsFile::entry(std::string_view name) const {
  const auto it = index_.find(name);
  DIFFUSE_CHECK(it != index_.end(), path_.string(), ": no tensor named '", name, "'");
  return entries_[it->second];
}

Tensor SafetensorsFile::get(std::string_view name) const {
  const SafetensorsEntry& e = entry(name);
  auto bytes = mapping_->subrange(data_start_ + e.begin, e.end - e.begin);
  if (reinterpret_cast<uintptr_t>(bytes->data()) % dtype_size(e.dtype) != 0) {
    auto aligned = Storage::allocate(bytes->nbytes());
    if (bytes->nbytes() > 0) std::memcpy(aligned->data(), bytes->data(), bytes->nbytes());
    bytes = Storage::borrow(aligned->data(), aligned->nbytes(), true, aligned);
  }
  return Tensor::wrap(std::move(bytes), e.shape, e.dtype);
}

void save_safetensors_streaming(const std::filesystem::path& path,
                                const std::vector<SafetensorsTensorSpec>& specs,
                                const std::function<Tensor(const SafetensorsTensorSpec&)>& produce,
                                const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsTensorSpec*> order;
  std::set<std::string_view> names;
  for (const auto& t : specs) {
    DIFFUSE_CHECK(t.name != "__metadata__", "save_safetensors: '__metadata__' is reserved");
    DIFFUSE_CHECK(names.insert(t.name).second, "save_safetensors: duplicate tensor name '", t.name,
                  "'");
    order.push_back(&t);
  }
  // The reference writer orders by alignment (dtype size, largest first), then by name.
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const auto sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    if (sa != sb) return sa > sb;
    return a->name < b->name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* t : order) {
    const uint64_t nb = static_cast<uint64_t>(shape_numel(t->shape)) * dtype_size(t->dtype);
    header[t->name] = {{"dtype", std::string(dtype_info(t->dtype).safetensors_name)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + nb}}};
    offset += nb;
  }
  std::string h;
  try {
    h = header.dump();
  } catch (const nlohmann::json::exception& e) {
    DIFFUSE_FAIL("save_safetensors: cannot encode the header of '", path.string(),
                 "' (a tensor name or metadata value is not valid UTF-8?): ", e.what());
  }
  h.append((8 - h.size() % 8) % 8, ' ');
  std::filesystem::path tmp = path;
  tmp += ".partial";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  DIFFUSE_CHECK(out.good(), "save_safetensors: cannot open '", tmp.string(), "' for writing");
  try {
    unsigned char len[8];
    const uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto* t : order) {
      const Tensor c = produce(*t).contiguous();
      DIFFUSE_CHECK(c.defined() && c.dtype() == t->dtype && c.shape() == t->shape,
                    "save_safetensors: tensor '", t->name, "' was declared as ",
                    dtype_name(t->dtype), " ", shape_str(t->shape), " but ",
                    c.defined() ? c.str() : std::string("an undefined tensor"), " was given");
      out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
      DIFFUSE_CHECK(out.good(), "save_safetensors: write to '", tmp.string(), "' failed");
    }
    out.close();
    DIFFUSE_CHECK(out.good(), "save_safetensors: write to '", tmp.string(), "' failed");
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    DIFFUSE_CHECK(!ec, "save_safetensors: cannot rename '", tmp.string(), "' to '", path.string(),
                  "': ", ec.message());
  } catch (...) {
    out.close();
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsTensorSpec> specs;
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : tensors) {
    DIFFUSE_CHECK(t.defined(), "save_safetensors: tensor '", name, "' is undefined");
    specs.push_back({name, t.dtype(), t.shape()});
    by_name[name] = &t;
  }
  save_safetensors_streaming(
      path, specs, [&](const SafetensorsTensorSpec& s) { return *by_name.at(s.name); }, metadata);
}

}  // namespace diffuse
