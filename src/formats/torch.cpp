#include "diffuse/formats/torch.h"

#include <zip.h>

#include <cstring>
#include <set>
#include <span>

#include "pickle.h"

namespace diffuse {
namespace {

// Largest data.pkl accepted: SD checkpoints carry ~1-5 MB of pickle; 1 GB is far beyond any
// real file and keeps a lying header from allocating without bound.
constexpr uint64_t kMaxPickleBytes = 1ull << 30;
// Deflate cannot expand by more than 1032:1 (RFC 1951: 258-byte matches from 2-bit codes);
// an entry that claims more is a zip bomb or a lie.
constexpr uint64_t kMaxDeflateRatio = 1032;
// Nesting deeper than this is not a state dict.
constexpr int kMaxDepth = 32;

uint64_t rd(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Where the bytes of each stored entry start, from the zip central directory (APPNOTE.TXT
// 4.3.12-4.3.16, zip64 4.3.14/4.5.3). libzip validates the archive but does not expose these
// offsets; the result is only used for entries libzip reports as stored, and every offset is
// checked against the file size. Entries that cannot be located are read through libzip.
std::map<std::string, uint64_t> stored_data_offsets(const uint8_t* p, uint64_t size) {
  std::map<std::string, uint64_t> out;
  if (size < 22) return out;
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  for (uint64_t i = size - 22 + 1; i-- > lowest;) {
    if (rd(p + i, 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd == UINT64_MAX) return out;
  uint64_t count = rd(p + eocd + 10, 2);
  uint64_t cd_offset = rd(p + eocd + 16, 4);
  if ((count == 0xffff || cd_offset == 0xffffffff) && eocd >= 20 &&
      rd(p + eocd - 20, 4) == 0x07064b50) {
    const uint64_t z64 = rd(p + eocd - 20 + 8, 8);
    if (z64 > size || size - z64 < 56 || rd(p + z64, 4) != 0x06064b50) return out;
    count = rd(p + z64 + 32, 8);
    cd_offset = rd(p + z64 + 48, 8);
  }
  uint64_t pos = cd_offset;
  for (uint64_t e = 0; e < count; ++e) {
    if (pos > size || size - pos < 46 || rd(p + pos, 4) != 0x02014b50) return out;
    const uint64_t name_len = rd(p + pos + 28, 2);
    const uint64_t extra_len = rd(p + pos + 30, 2);
    const uint64_t comment_len = rd(p + pos + 32, 2);
    const uint64_t usize32 = rd(p + pos + 24, 4);
    const uint64_t csize32 = rd(p + pos + 20, 4);
    uint64_t local = rd(p + pos + 42, 4);
    if (size - pos - 46 < name_len + extra_len + comment_len) return out;
    const std::string name(reinterpret_cast<const char*>(p + pos + 46), name_len);
    if (local == 0xffffffff) {
      // zip64 extended information: the 8-byte fields present are those whose 32-bit fields
      // hold 0xffffffff, in the order uncompressed size, compressed size, local offset.
      const uint8_t* x = p + pos + 46 + name_len;
      uint64_t xp = 0;
      bool found = false;
      while (xp + 4 <= extra_len) {
        const uint64_t id = rd(x + xp, 2), len = rd(x + xp + 2, 2);
        if (xp + 4 + len > extra_len) break;
        if (id == 1) {
          uint64_t f = xp + 4;
          if (usize32 == 0xffffffff) f += 8;
          if (csize32 == 0xffffffff) f += 8;
          if (f + 8 <= xp + 4 + len) {
            local = rd(x + f, 8);
            found = true;
          }
        }
        xp += 4 + len;
      }
      if (!found) return out;
    }
    if (local <= size && size - local >= 30 && rd(p + local, 4) == 0x04034b50) {
      const uint64_t data = local + 30 + rd(p + local + 26, 2) + rd(p + local + 28, 2);
      if (data <= size) out[name] = data;
    }
    pos += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

std::string zip_message(zip_error_t* e) {
  return zip_error_strerror(e);
}

struct Flattener {
  const pickle::Pickle& pk;
  const std::string& where;
  std::map<std::string, uint32_t>& tensors;
  std::vector<std::string>& order;
  std::map<std::string, std::string>& metadata;
  std::set<uint32_t> on_path;
  uint64_t budget;

  std::string key_name(uint32_t k) const {
    const pickle::Node& n = pk.at(k);
    if (n.kind == pickle::Kind::string) return n.str;
    if (n.kind == pickle::Kind::integer) return std::to_string(n.integer);
    DIFFUSE_FAIL(where, ": a dict key is neither a string nor an integer");
  }

  void scalar(const std::string& name, const pickle::Node& n) {
    switch (n.kind) {
      case pickle::Kind::integer:
        metadata[name] = std::to_string(n.integer);
        break;
      case pickle::Kind::floating:
        metadata[name] = std::to_string(n.floating);
        break;
      case pickle::Kind::string:
        metadata[name] = n.str;
        break;
      case pickle::Kind::boolean:
        metadata[name] = n.flag ? "True" : "False";
        break;
      default:
        break;
    }
  }

  void visit(uint32_t idx, const std::string& name, int depth, bool tensors_only) {
    DIFFUSE_CHECK(budget-- > 0, where, ": pickle structure too large to walk (shared containers)");
    const pickle::Node& n = pk.at(idx);
    if (n.kind == pickle::Kind::tensor) {
      DIFFUSE_CHECK(!name.empty(), where, ": the pickle is a single tensor without a name");
      if (tensors.find(name) == tensors.end()) order.push_back(name);
      tensors[name] = idx;  // a repeated dict key replaces the earlier value, as in Python
      return;
    }
    const bool dict = n.kind == pickle::Kind::dict;
    if (!dict && n.kind != pickle::Kind::list && n.kind != pickle::Kind::tuple) {
      if (!tensors_only && !name.empty()) scalar(name, n);
      return;
    }
    DIFFUSE_CHECK(depth < kMaxDepth, where, ": pickle nested deeper than ", kMaxDepth,
                  " levels at '", name, "'");
    DIFFUSE_CHECK(on_path.insert(idx).second, where, ": cyclic pickle structure at '", name, "'");
    const std::size_t step = dict ? 2 : 1;
    for (std::size_t i = 0; i + step <= n.items.size(); i += step) {
      const std::string k = dict ? key_name(n.items[i]) : std::to_string(i);
      visit(n.items[i + step - 1], name.empty() ? k : name + "." + k, depth + 1, tensors_only);
    }
    on_path.erase(idx);
  }
};

}  // namespace

TorchCheckpoint::~TorchCheckpoint() {
  if (zip_ != nullptr) zip_discard(static_cast<zip_t*>(zip_));
}

std::shared_ptr<TorchCheckpoint> TorchCheckpoint::open(const std::filesystem::path& path) {
  return from_storage(Storage::map_file(path), path.string());
}

std::shared_ptr<TorchCheckpoint> TorchCheckpoint::from_storage(std::shared_ptr<Storage> bytes,
                                                               const std::string& name) {
  auto ck = std::make_shared<TorchCheckpoint>(name);
  const std::string& where = ck->path_;
  ck->file_ = std::move(bytes);
  const uint64_t size = ck->file_->nbytes();
  const auto* data = static_cast<const uint8_t*>(ck->file_->data());
  DIFFUSE_CHECK(size >= 22, where, ": not a zip archive (", size, " bytes)");

  // 1. The zip directory, checked by libzip.
  zip_error_t zerr;
  zip_error_init(&zerr);
  zip_source_t* src = zip_source_buffer_create(data, size, 0, &zerr);
  DIFFUSE_CHECK(src != nullptr, where, ": cannot read the zip: ", zip_message(&zerr));
  zip_t* za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
  if (za == nullptr) {
    zip_source_free(src);
    const std::string msg = zip_message(&zerr);
    zip_error_fini(&zerr);
    DIFFUSE_FAIL(where, ": not a valid zip archive: ", msg);
  }
  zip_error_fini(&zerr);
  ck->zip_ = za;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  std::string prefix;
  int64_t pkl = -1;
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    DIFFUSE_CHECK(zip_stat_index(za, static_cast<zip_uint64_t>(i), 0, &st) == 0, where,
                  ": cannot read zip entry ", i, ": ", zip_strerror(za));
    DIFFUSE_CHECK((st.valid & ZIP_STAT_NAME) && (st.valid & ZIP_STAT_SIZE) &&
                      (st.valid & ZIP_STAT_COMP_SIZE) && (st.valid & ZIP_STAT_COMP_METHOD),
                  where, ": zip entry ", i, " lacks its name or sizes");
    DIFFUSE_CHECK(!(st.valid & ZIP_STAT_ENCRYPTION_METHOD) || st.encryption_method == ZIP_EM_NONE,
                  where, ": zip entry '", st.name, "' is encrypted");
    const std::string ename = st.name;
    Entry e;
    e.index = static_cast<uint64_t>(i);
    e.size = st.size;
    if (st.comp_method != ZIP_CM_STORE) {
      DIFFUSE_CHECK(st.size / kMaxDeflateRatio <= st.comp_size, where, ": zip entry '", ename,
                    "' claims ", st.size, " bytes from ", st.comp_size,
                    " compressed bytes (more than deflate can produce: a zip bomb?)");
    } else {
      DIFFUSE_CHECK(st.size == st.comp_size, where, ": stored zip entry '", ename,
                    "' has different sizes (", st.size, " vs ", st.comp_size, ")");
    }
    const auto slash = ename.find('/');
    if (slash != std::string::npos && ename.substr(slash) == "/data.pkl") {
      DIFFUSE_CHECK(pkl < 0, where, ": the zip holds two data.pkl entries");
      pkl = i;
      prefix = ename.substr(0, slash + 1);
    }
    ck->entries_[ename] = e;
  }
  DIFFUSE_CHECK(pkl >= 0, where,
                ": a zip archive without <archive>/data.pkl: not a PyTorch checkpoint");
  const auto offsets = stored_data_offsets(data, size);
  for (auto& [ename, e] : ck->entries_) {
    zip_stat_t st;
    zip_stat_index(za, e.index, 0, &st);
    const auto it = offsets.find(ename);
    if (st.comp_method == ZIP_CM_STORE && it != offsets.end() && it->second <= size &&
        size - it->second >= e.size)
      e.data_offset = static_cast<int64_t>(it->second);
  }
  if (const auto bo = ck->entries_.find(prefix + "byteorder"); bo != ck->entries_.end()) {
    DIFFUSE_CHECK(bo->second.size <= 16, where, ": byteorder entry is too long");
    auto s = ck->entry_storage(prefix + "byteorder");
    const std::string order(static_cast<const char*>(s->data()), s->nbytes());
    DIFFUSE_CHECK(order == "little", where, ": byte order '", order,
                  "' is not supported (only little-endian checkpoints)");
  }

  // 2. The pickle, restricted.
  const std::string pkl_name = prefix + "data.pkl";
  DIFFUSE_CHECK(ck->entries_[pkl_name].size <= kMaxPickleBytes, where, ": ", pkl_name, " is ",
                ck->entries_[pkl_name].size, " bytes (limit ", kMaxPickleBytes, ")");
  const auto pkl_bytes = ck->entry_storage(pkl_name);
  const pickle::Pickle pk = pickle::parse(
      std::span<const uint8_t>(static_cast<const uint8_t*>(pkl_bytes->data()), pkl_bytes->nbytes()),
      where + ": " + pkl_name);

  // 3. Tensors: unwrap a nested state dict, name nested tensors by their dotted path.
  std::map<std::string, uint32_t> found;
  std::vector<std::string> order;
  Flattener fl{pk, where, found, order, ck->metadata_, {}, pk.nodes.size() * 4 + 1024};
  uint32_t root = pk.root;
  const pickle::Node& r = pk.at(root);
  if (r.kind == pickle::Kind::dict) {
    for (const char* holder : {"state_dict", "model", "module", "params_ema"}) {
      for (std::size_t i = 0; i + 1 < r.items.size(); i += 2) {
        const auto& k = pk.at(r.items[i]);
        const auto& v = pk.at(r.items[i + 1]);
        if (k.kind == pickle::Kind::string && k.str == holder && v.kind == pickle::Kind::dict) {
          root = r.items[i + 1];
          break;
        }
      }
      if (root != pk.root) break;
    }
    if (root != pk.root) {
      // Scalars beside the state dict (epoch, global_step, versions) become metadata.
      for (std::size_t i = 0; i + 1 < r.items.size(); i += 2)
        if (r.items[i + 1] != root) fl.scalar(fl.key_name(r.items[i]), pk.at(r.items[i + 1]));
    }
  }
  fl.visit(root, "", 0, false);
  for (const std::string& tname : order) {
    const pickle::Node& t = pk.at(found[tname]);
    const pickle::Node& s = pk.at(t.items[0]);
    TensorRecord rec;
    rec.entry = prefix + "data/" + s.str;
    rec.dtype = s.dtype;
    rec.storage_numel = s.integer;
    rec.offset = t.integer;
    rec.shape = t.shape;
    rec.strides = t.strides;
    const auto e = ck->entries_.find(rec.entry);
    DIFFUSE_CHECK(e != ck->entries_.end(), where, ": tensor '", tname, "' refers to storage ",
                  rec.entry, ", which the zip does not hold");
    const uint64_t item = dtype_size(rec.dtype);
    uint64_t storage_bytes = 0;
    DIFFUSE_CHECK(
        !__builtin_mul_overflow(static_cast<uint64_t>(rec.storage_numel), item, &storage_bytes) &&
            storage_bytes == e->second.size,
        where, ": storage ", rec.entry, " of tensor '", tname, "' should hold ", rec.storage_numel,
        " x ", item, " bytes but the entry has ", e->second.size);
    // The furthest element the view reaches must lie inside the storage.
    uint64_t numel = 1, last = static_cast<uint64_t>(rec.offset);
    for (std::size_t d = 0; d < rec.shape.size(); ++d) {
      const auto ext = static_cast<uint64_t>(rec.shape[d]);
      uint64_t reach = 0;
      DIFFUSE_CHECK(!__builtin_mul_overflow(numel, ext, &numel) &&
                        (ext == 0 || !__builtin_mul_overflow(
                                         ext - 1, static_cast<uint64_t>(rec.strides[d]), &reach)) &&
                        !__builtin_add_overflow(last, reach, &last),
                    where, ": tensor '", tname, "': size/stride overflow");
    }
    DIFFUSE_CHECK(numel == 0 || last < static_cast<uint64_t>(rec.storage_numel), where,
                  ": tensor '", tname, "' (offset ", rec.offset, ", size ", shape_str(rec.shape),
                  ", stride ", shape_str(rec.strides), ") reaches past its storage of ",
                  rec.storage_numel, " elements");
    TensorInfo info;
    info.name = tname;
    info.dtype = rec.dtype;
    info.shape = rec.shape;
    info.stored_type = std::string(dtype_name(rec.dtype));
    info.stored_bytes = numel * item;
    info.file = where;
    ck->add(std::move(info));
    ck->records_.emplace(tname, std::move(rec));
  }
  return ck;
}

std::shared_ptr<Storage> TorchCheckpoint::entry_storage(const std::string& name) const {
  const auto it = entries_.find(name);
  DIFFUSE_CHECK(it != entries_.end(), path_, ": the zip has no entry ", name);
  const Entry& e = it->second;
  if (e.data_offset >= 0) return file_->subrange(static_cast<std::size_t>(e.data_offset), e.size);
  std::lock_guard<std::mutex> lock(mutex_);
  if (const auto c = decompressed_.find(name); c != decompressed_.end()) return c->second;
  auto* za = static_cast<zip_t*>(zip_);
  zip_file_t* zf = zip_fopen_index(za, e.index, 0);
  DIFFUSE_CHECK(zf != nullptr, path_, ": cannot open zip entry ", name, ": ", zip_strerror(za));
  auto out = Storage::allocate(e.size);
  uint64_t done = 0;
  while (done < e.size) {
    const zip_int64_t got = zip_fread(zf, static_cast<char*>(out->data()) + done, e.size - done);
    if (got <= 0) {
      const std::string msg = zip_file_strerror(zf);
      zip_fclose(zf);
      DIFFUSE_FAIL(path_, ": zip entry ", name, " ends after ", done, " of ", e.size,
                   " bytes: ", msg);
    }
    done += static_cast<uint64_t>(got);
  }
  char extra;
  const zip_int64_t more = zip_fread(zf, &extra, 1);  // reaches EOF: libzip checks the CRC
  const std::string msg = more < 0 ? zip_file_strerror(zf) : "";
  zip_fclose(zf);
  DIFFUSE_CHECK(more == 0, path_, ": zip entry ", name,
                " is corrupt: ", more > 0 ? "longer than declared" : msg);
  decompressed_[name] = out;
  return out;
}

bool TorchCheckpoint::zero_copy(std::string_view name) const {
  const auto r = records_.find(name);
  DIFFUSE_CHECK(r != records_.end(), path_, ": no tensor named '", name, "'");
  return entries_.find(r->second.entry)->second.data_offset >= 0;
}

Tensor TorchCheckpoint::load(const TensorInfo& info) const {
  const TensorRecord& r = records_.find(info.name)->second;
  auto storage = entry_storage(r.entry);
  if (!storage->read_only()) {
    // Decompressed entries live on the heap and are shared by every tensor of the storage:
    // hand out a read-only view so that no caller can change another tensor's values.
    storage = Storage::borrow(storage->data(), storage->nbytes(), true, storage);
  }
  return Tensor::wrap(std::move(storage), r.shape, r.dtype, r.offset, r.strides);
}

}  // namespace diffuse
