#include "pickle.h"

#include <array>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "diffuse/core/error.h"

namespace diffuse::pickle {
namespace {

enum Op : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kBinFloat = 'G',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinString = 'T',
  kShortBinString = 'U',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kGet = 'g',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kProto = 0x80,
  kNewObj = 0x81,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
  kByteArray8 = 0x96,
};

// What a global may be used for.
enum class Use { refused, name_only, callable };

struct StorageType {
  std::string_view name;
  DType dtype;
};
constexpr std::array<StorageType, 12> kStorageTypes{{
    {"FloatStorage", DType::f32},
    {"HalfStorage", DType::f16},
    {"BFloat16Storage", DType::bf16},
    {"DoubleStorage", DType::f64},
    {"LongStorage", DType::i64},
    {"IntStorage", DType::i32},
    {"ShortStorage", DType::i16},
    {"CharStorage", DType::i8},
    {"ByteStorage", DType::u8},
    {"BoolStorage", DType::boolean},
    {"Float8_e4m3fnStorage", DType::f8_e4m3},
    {"Float8_e5m2Storage", DType::f8_e5m2},
}};

constexpr std::array<std::string_view, 14> kTorchDTypes{
    "float16", "float32", "float64", "bfloat16", "half",  "float", "double",
    "int64",   "int32",   "int16",   "int8",     "uint8", "bool",  "long"};

constexpr std::array<std::string_view, 11> kCallables{
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Size",
    "_codecs.encode",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
};

Use classify(const std::string& module, const std::string& name) {
  const std::string full = module + "." + name;
  for (auto c : kCallables)
    if (full == c) return Use::callable;
  if (module == "torch") {
    for (const auto& s : kStorageTypes)
      if (name == s.name) return Use::name_only;
    for (auto d : kTorchDTypes)
      if (name == d) return Use::name_only;
    if (name == "Tensor") return Use::name_only;
  }
  if (full == "torch.nn.parameter.Parameter") return Use::name_only;
  return Use::refused;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

class Unpickler {
 public:
  Unpickler(std::span<const uint8_t> bytes, const std::string& where)
      : bytes_(bytes), where_(where) {}

  Pickle run() {
    for (;;) {
      DIFFUSE_CHECK(pos_ < bytes_.size(), where_, ": pickle ends at byte ", pos_,
                    " without a STOP opcode (truncated?)");
      op_pos_ = pos_;
      const uint8_t op = bytes_[pos_++];
      if (op == kStop) {
        DIFFUSE_CHECK(stack_.size() == 1 && marks_.empty(), where_, ": STOP at byte ", op_pos_,
                      " leaves ", stack_.size(), " values and ", marks_.size(),
                      " marks (expected exactly one value)");
        out_.root = stack_.back();
        return std::move(out_);
      }
      step(op);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    DIFFUSE_FAIL(where_, ": ", what, " (opcode 0x", hex(bytes_[op_pos_]), " at byte ", op_pos_,
                 ")");
  }
  static std::string hex(uint8_t b) {
    const char* d = "0123456789abcdef";
    return {d[b >> 4], d[b & 15]};
  }

  const uint8_t* take(uint64_t n) {
    if (n > bytes_.size() - pos_)
      fail("argument of " + std::to_string(n) + " bytes runs past the end of the pickle (" +
           std::to_string(bytes_.size() - pos_) + " bytes left)");
    const uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint64_t le(int n) {
    const uint8_t* p = take(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  std::string line() {
    const std::size_t start = pos_;
    while (pos_ < bytes_.size() && bytes_[pos_] != '\n') {
      if (pos_ - start > 4096) fail("text argument longer than 4096 bytes");
      ++pos_;
    }
    if (pos_ >= bytes_.size()) fail("text argument without a terminating newline");
    std::string s(reinterpret_cast<const char*>(bytes_.data() + start), pos_ - start);
    ++pos_;
    return s;
  }

  uint32_t push_node(Node n) {
    out_.nodes.push_back(std::move(n));
    const auto idx = static_cast<uint32_t>(out_.nodes.size() - 1);
    stack_.push_back(idx);
    return idx;
  }
  static Node of(Kind k) {
    Node n;
    n.kind = k;
    return n;
  }
  uint32_t new_node(Kind k) {
    Node n;
    n.kind = k;
    out_.nodes.push_back(std::move(n));
    return static_cast<uint32_t>(out_.nodes.size() - 1);
  }
  uint32_t pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail("stack underflow");
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail("stack underflow");
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Node& node(uint32_t i) { return out_.nodes[i]; }

  void push_string(uint64_t n, Kind kind, bool check_utf8) {
    const uint8_t* p = take(n);
    Node s;
    s.kind = kind;
    s.str.assign(reinterpret_cast<const char*>(p), n);
    if (check_utf8 && !valid_utf8(s.str)) fail("string is not valid UTF-8");
    push_node(std::move(s));
  }
  void push_int(int64_t v) {
    Node n;
    n.kind = Kind::integer;
    n.integer = v;
    push_node(std::move(n));
  }
  void push_long(uint64_t n) {
    if (n > 8) fail("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
    const uint8_t* p = take(n);
    uint64_t v = 0;
    for (uint64_t i = n; i-- > 0;) v = (v << 8) | p[i];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    push_int(static_cast<int64_t>(v));
  }
  void memo_put(uint64_t key) {
    if (key > UINT32_MAX) fail("memo key too large");
    memo_[static_cast<uint32_t>(key)] = top();
  }
  void memo_get(uint64_t key) {
    const auto it = key > UINT32_MAX ? memo_.end() : memo_.find(static_cast<uint32_t>(key));
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
    stack_.push_back(it->second);
  }
  uint64_t decimal(const std::string& s) {
    if (s.empty() || s.size() > 10) fail("bad decimal memo key '" + s + "'");
    uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') fail("bad decimal memo key '" + s + "'");
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    return v;
  }

  void push_global(std::string module, std::string name) {
    if (classify(module, name) == Use::refused)
      fail("refusing to load: the pickle calls " + module + "." + name +
           ", which a state dict never needs (allowed: collections.OrderedDict, "
           "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.*Storage, "
           "torch dtypes, numpy scalars); nothing was executed");
    Node g;
    g.kind = Kind::global;
    g.str = std::move(module);
    g.str2 = std::move(name);
    push_node(std::move(g));
  }

  bool is_int(uint32_t i) { return node(i).kind == Kind::integer; }
  std::vector<int64_t> int_tuple(uint32_t i, const char* what) {
    const Node& n = node(i);
    if (n.kind != Kind::tuple && n.kind != Kind::list) fail(std::string(what) + " is not a tuple");
    if (n.items.size() > 64) fail(std::string(what) + " has more than 64 dimensions");
    std::vector<int64_t> out;
    for (uint32_t it : n.items) {
      if (!is_int(it) || node(it).integer < 0)
        fail(std::string(what) + " holds a non-integer or negative value");
      out.push_back(node(it).integer);
    }
    return out;
  }

  // Applies an allowed callable to an argument tuple; returns the resulting node.
  uint32_t call(uint32_t fn, uint32_t args, bool nested) {
    const Node& f = node(fn);
    if (f.kind != Kind::global) fail("REDUCE on something that is not an allowed global");
    const std::string full = f.str + "." + f.str2;
    if (classify(f.str, f.str2) != Use::callable) fail("refusing to call " + full);
    if (node(args).kind != Kind::tuple) fail("arguments of " + full + " are not a tuple");
    const std::vector<uint32_t> a = node(args).items;
    if (full == "collections.OrderedDict") return new_node(Kind::dict);
    if (full == "torch._utils._rebuild_tensor_v2" || full == "torch._utils._rebuild_tensor") {
      if (a.size() < 4) fail(full + " expects at least 4 arguments");
      if (node(a[0]).kind != Kind::storage) fail(full + ": first argument is not a storage");
      if (!is_int(a[1]) || node(a[1]).integer < 0) fail(full + ": bad storage offset");
      Node t;
      t.kind = Kind::tensor;
      t.items = {a[0]};
      t.integer = node(a[1]).integer;
      t.dtype = node(a[0]).dtype;
      t.shape = int_tuple(a[2], "tensor size");
      t.strides = int_tuple(a[3], "tensor stride");
      if (t.shape.size() != t.strides.size()) fail(full + ": size and stride differ in length");
      out_.nodes.push_back(std::move(t));
      return static_cast<uint32_t>(out_.nodes.size() - 1);
    }
    if (full == "torch._utils._rebuild_parameter" ||
        full == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || node(a[0]).kind != Kind::tensor)
        fail(full + ": first argument is not a tensor");
      return a[0];
    }
    if (full == "torch._tensor._rebuild_from_type_v2") {
      if (nested) fail(full + " nested in itself");
      if (a.size() < 3) fail(full + " expects 4 arguments");
      return call(a[0], a[2], true);
    }
    if (full == "torch.Size") {
      if (a.size() != 1) fail("torch.Size expects one argument");
      int_tuple(a[0], "torch.Size argument");
      return a[0];
    }
    if (full == "_codecs.encode") {
      if (a.size() != 2 || node(a[0]).kind != Kind::string || node(a[1]).kind != Kind::string)
        fail("_codecs.encode expects (str, encoding)");
      if (node(a[1]).str != "latin1" && node(a[1]).str != "latin-1")
        fail("_codecs.encode: unsupported encoding '" + node(a[1]).str + "'");
      Node b;
      b.kind = Kind::bytes;
      const std::string& s = node(a[0]).str;
      for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
          b.str.push_back(static_cast<char>(c));
        } else if ((c & 0xe0) == 0xc0 && i + 1 < s.size() && c <= 0xc3) {
          b.str.push_back(static_cast<char>(((c & 0x1f) << 6) | (s[i + 1] & 0x3f)));
          ++i;
        } else {
          fail("_codecs.encode: character outside latin-1");
        }
      }
      out_.nodes.push_back(std::move(b));
      return static_cast<uint32_t>(out_.nodes.size() - 1);
    }
    if (full == "numpy.dtype") {
      Node o;
      o.kind = Kind::object;
      o.str = full;
      if (!a.empty() && node(a[0]).kind == Kind::string) o.str2 = node(a[0]).str;
      out_.nodes.push_back(std::move(o));
      return static_cast<uint32_t>(out_.nodes.size() - 1);
    }
    // numpy scalar(dtype, bytes): decode the common 8/4-byte numbers (global_step, epoch).
    Node o;
    o.kind = Kind::object;
    o.str = full;
    if (a.size() == 2 && node(a[0]).kind == Kind::object && node(a[1]).kind == Kind::bytes) {
      const std::string& code = node(a[0]).str2;
      const std::string& raw = node(a[1]).str;
      if ((code == "i8" || code == "u8") && raw.size() == 8) {
        o.kind = Kind::integer;
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(raw[i]);
        o.integer = static_cast<int64_t>(v);
      } else if ((code == "i4") && raw.size() == 4) {
        o.kind = Kind::integer;
        int32_t v;
        std::memcpy(&v, raw.data(), 4);
        o.integer = v;
      } else if (code == "f8" && raw.size() == 8) {
        o.kind = Kind::floating;
        std::memcpy(&o.floating, raw.data(), 8);
      } else if (code == "f4" && raw.size() == 4) {
        o.kind = Kind::floating;
        float v;
        std::memcpy(&v, raw.data(), 4);
        o.floating = v;
      }
    }
    out_.nodes.push_back(std::move(o));
    return static_cast<uint32_t>(out_.nodes.size() - 1);
  }

  void persistent_load(uint32_t pid) {
    const Node& p = node(pid);
    if (p.kind != Kind::tuple || p.items.size() < 5 || node(p.items[0]).kind != Kind::string ||
        node(p.items[0]).str != "storage")
      fail("persistent id is not ('storage', type, key, location, numel)");
    const Node& type = node(p.items[1]);
    const Node& key = node(p.items[2]);
    const Node& numel = node(p.items[4]);
    if (type.kind != Kind::global || type.str != "torch")
      fail("persistent id: storage type is not a torch storage class");
    Node s;
    s.kind = Kind::storage;
    bool known = false;
    for (const auto& st : kStorageTypes) {
      if (type.str2 == st.name) {
        s.dtype = st.dtype;
        known = true;
      }
    }
    if (!known) fail("persistent id: unsupported storage type torch." + type.str2);
    if (key.kind != Kind::string || key.str.empty() || key.str.size() > 64)
      fail("persistent id: storage key is not a short string");
    for (char c : key.str)
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
        fail("persistent id: storage key '" + key.str + "' is not alphanumeric");
    if (numel.kind != Kind::integer || numel.integer < 0) fail("persistent id: bad storage size");
    s.str = key.str;
    s.integer = numel.integer;
    push_node(std::move(s));
  }

  void step(uint8_t op) {
    switch (op) {
      case kProto: {
        const uint64_t v = le(1);
        if (v < 2 || v > 5) fail("unsupported pickle protocol " + std::to_string(v) + " (2-5)");
        break;
      }
      case kFrame:
        le(8);  // frame length: a hint for buffering, the opcodes follow inline
        break;
      case kMark:
        marks_.push_back(stack_.size());
        break;
      case kPop:
        if (!stack_.empty() && (marks_.empty() || stack_.size() > marks_.back()))
          stack_.pop_back();
        else if (!marks_.empty() && stack_.size() == marks_.back())
          marks_.pop_back();  // POP of a mark, as CPython allows
        else
          fail("stack underflow");
        break;
      case kPopMark:
        pop_mark();
        break;
      case kDup:
        stack_.push_back(top());
        break;
      case kNone:
        push_node(Node{});
        break;
      case kNewTrue:
      case kNewFalse: {
        Node b;
        b.kind = Kind::boolean;
        b.flag = op == kNewTrue;
        push_node(std::move(b));
        break;
      }
      case kBinInt:
        push_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))));
        break;
      case kBinInt1:
        push_int(static_cast<int64_t>(le(1)));
        break;
      case kBinInt2:
        push_int(static_cast<int64_t>(le(2)));
        break;
      case kLong1:
        push_long(le(1));
        break;
      case kLong4: {
        const auto n = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
        if (n < 0) fail("negative LONG4 length");
        push_long(static_cast<uint64_t>(n));
        break;
      }
      case kBinFloat: {
        const uint8_t* p = take(8);
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];  // big-endian
        Node f;
        f.kind = Kind::floating;
        std::memcpy(&f.floating, &v, 8);
        push_node(std::move(f));
        break;
      }
      case kBinUnicode:
        push_string(le(4), Kind::string, true);
        break;
      case kShortBinUnicode:
        push_string(le(1), Kind::string, true);
        break;
      case kBinUnicode8:
        push_string(le(8), Kind::string, true);
        break;
      case kBinString: {
        const auto n = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
        if (n < 0) fail("negative BINSTRING length");
        push_string(static_cast<uint64_t>(n), Kind::bytes, false);
        break;
      }
      case kShortBinString:
        push_string(le(1), Kind::bytes, false);
        break;
      case kBinBytes:
        push_string(le(4), Kind::bytes, false);
        break;
      case kShortBinBytes:
        push_string(le(1), Kind::bytes, false);
        break;
      case kBinBytes8:
      case kByteArray8:
        push_string(le(8), Kind::bytes, false);
        break;
      case kEmptyTuple:
        push_node(of(Kind::tuple));
        break;
      case kTuple: {
        Node t;
        t.kind = Kind::tuple;
        t.items = pop_mark();
        push_node(std::move(t));
        break;
      }
      case kTuple1:
      case kTuple2:
      case kTuple3: {
        const int n = op - kTuple1 + 1;
        Node t;
        t.kind = Kind::tuple;
        t.items.resize(static_cast<std::size_t>(n));
        for (int i = n - 1; i >= 0; --i) t.items[static_cast<std::size_t>(i)] = pop();
        push_node(std::move(t));
        break;
      }
      case kEmptyList:
        push_node(of(Kind::list));
        break;
      case kList: {
        Node l;
        l.kind = Kind::list;
        l.items = pop_mark();
        push_node(std::move(l));
        break;
      }
      case kAppend: {
        const uint32_t v = pop();
        const uint32_t l = top();
        if (node(l).kind != Kind::list) fail("APPEND to something that is not a list");
        node(l).items.push_back(v);
        break;
      }
      case kAppends: {
        auto items = pop_mark();
        const uint32_t l = top();
        if (node(l).kind != Kind::list) fail("APPENDS to something that is not a list");
        node(l).items.insert(node(l).items.end(), items.begin(), items.end());
        break;
      }
      case kEmptyDict:
        push_node(of(Kind::dict));
        break;
      case kDict: {
        Node d;
        d.kind = Kind::dict;
        d.items = pop_mark();
        if (d.items.size() % 2) fail("DICT with an odd number of items");
        push_node(std::move(d));
        break;
      }
      case kSetItem: {
        const uint32_t v = pop();
        const uint32_t k = pop();
        const uint32_t d = top();
        if (node(d).kind != Kind::dict) fail("SETITEM on something that is not a dict");
        node(d).items.push_back(k);
        node(d).items.push_back(v);
        break;
      }
      case kSetItems: {
        auto items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        const uint32_t d = top();
        if (node(d).kind != Kind::dict) fail("SETITEMS on something that is not a dict");
        node(d).items.insert(node(d).items.end(), items.begin(), items.end());
        break;
      }
      case kEmptySet:
        push_node(of(Kind::set));
        break;
      case kAddItems: {
        auto items = pop_mark();
        const uint32_t s = top();
        if (node(s).kind != Kind::set) fail("ADDITEMS on something that is not a set");
        node(s).items.insert(node(s).items.end(), items.begin(), items.end());
        break;
      }
      case kFrozenSet: {
        Node s;
        s.kind = Kind::set;
        s.items = pop_mark();
        push_node(std::move(s));
        break;
      }
      case kGlobal: {
        std::string module = line();
        std::string name = line();
        push_global(std::move(module), std::move(name));
        break;
      }
      case kStackGlobal: {
        const uint32_t name = pop();
        const uint32_t module = pop();
        if (node(name).kind != Kind::string || node(module).kind != Kind::string)
          fail("STACK_GLOBAL needs two strings");
        push_global(node(module).str, node(name).str);
        break;
      }
      case kReduce:
      case kNewObj: {
        const uint32_t args = pop();
        const uint32_t fn = pop();
        stack_.push_back(call(fn, args, false));
        break;
      }
      case kBuild: {
        pop();  // state: attributes of OrderedDicts (_metadata) and numpy dtypes; not needed
        const Kind k = node(top()).kind;
        if (k != Kind::dict && k != Kind::object && k != Kind::tensor)
          fail("BUILD on something that is not a dict, tensor or numpy object");
        break;
      }
      case kBinPersId:
        persistent_load(pop());
        break;
      case kPut:
        memo_put(decimal(line()));
        break;
      case kBinPut:
        memo_put(le(1));
        break;
      case kLongBinPut:
        memo_put(le(4));
        break;
      case kMemoize:
        memo_put(memo_.size());
        break;
      case kGet:
        memo_get(decimal(line()));
        break;
      case kBinGet:
        memo_get(le(1));
        break;
      case kLongBinGet:
        memo_get(le(4));
        break;
      default:
        fail("unsupported pickle opcode (not used by state dicts)");
    }
  }

  std::span<const uint8_t> bytes_;
  const std::string& where_;
  std::size_t pos_ = 0;
  std::size_t op_pos_ = 0;
  Pickle out_;
  std::vector<uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
};

}  // namespace

Pickle parse(std::span<const uint8_t> bytes, const std::string& where) {
  return Unpickler(bytes, where).run();
}

}  // namespace diffuse::pickle
