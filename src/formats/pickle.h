// A restricted unpickler: reads Python pickles (protocols 2-5) into plain data, never code.
//
// Byte layout (CPython Lib/pickletools.py): a stream of one-byte opcodes with inline arguments
// (little-endian integers, length-prefixed strings) driving a stack machine with a mark stack
// and a memo; STOP ends it and the top of the stack is the result. Supported opcodes are the
// ones torch.save state dicts use: PROTO FRAME STOP MARK POP POP_MARK DUP, NONE NEWTRUE
// NEWFALSE, BININT BININT1 BININT2 LONG1 LONG4 BINFLOAT, BINUNICODE SHORT_BINUNICODE
// BINUNICODE8 BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8, EMPTY_TUPLE
// TUPLE TUPLE1-3 EMPTY_LIST APPEND APPENDS LIST EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET
// ADDITEMS FROZENSET, GLOBAL STACK_GLOBAL REDUCE NEWOBJ BUILD BINPERSID, PUT BINPUT LONG_BINPUT
// MEMOIZE GET BINGET LONG_BINGET. Anything else is an error naming the opcode and its offset.
//
// Globals are checked against an allow-list when they are named (GLOBAL / STACK_GLOBAL); the
// few that may be called (REDUCE / NEWOBJ) are interpreted here as data constructors:
//   collections.OrderedDict()              -> empty dict
//   torch._utils._rebuild_tensor_v2(...)   -> tensor node (also _rebuild_tensor)
//   torch._utils._rebuild_parameter(t,...) -> t (also _rebuild_parameter_with_state)
//   torch._tensor._rebuild_from_type_v2(f, type, args, state) -> f(*args)
//   torch.Size(tuple)                      -> tuple
//   _codecs.encode(str, "latin1")          -> bytes
//   numpy.core.multiarray.scalar(...), numpy.dtype(...) -> opaque object
// Storage types (torch.FloatStorage, ...) and dtypes (torch.float16, ...) may only be named.
// Memory is bounded by the input size (each opcode adds at most one node or stack slot);
// nothing recurses while parsing. Nodes live in an arena, so cyclic structures are harmless.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "diffuse/core/dtype.h"

namespace diffuse::pickle {

enum class Kind : uint8_t {
  none,
  boolean,
  integer,
  floating,
  string,
  bytes,
  tuple,
  list,
  dict,  // items: k0, v0, k1, v1, ...
  set,
  global,   // str = module, str2 = name
  object,   // opaque result of an allowed constructor (numpy scalar/dtype); str = its global
  storage,  // torch storage: str = key, integer = numel, dtype
  tensor,   // items[0] = storage node; integer = offset; shape, strides
};

struct Node {
  Kind kind = Kind::none;
  bool flag = false;
  int64_t integer = 0;
  double floating = 0;
  DType dtype = DType::f32;
  std::string str;
  std::string str2;
  std::vector<uint32_t> items;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
};

struct Pickle {
  std::vector<Node> nodes;
  uint32_t root = 0;
  const Node& at(uint32_t i) const { return nodes[i]; }
};

// Parses `bytes`; `where` names the input in messages ("model.ckpt: archive/data.pkl").
// Throws diffuse::Error for malformed input, unsupported opcodes and refused globals.
Pickle parse(std::span<const uint8_t> bytes, const std::string& where);

}  // namespace diffuse::pickle
