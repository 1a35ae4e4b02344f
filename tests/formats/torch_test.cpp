#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "diffuse/formats/safetensors.h"
#include "diffuse/formats/torch.h"
#include "tests/formats/writers.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

using testing::PickleWriter;
using testing::ZipEntry;

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

std::string storage_type(DType d) {
  switch (d) {
    case DType::f32:
      return "FloatStorage";
    case DType::f16:
      return "HalfStorage";
    case DType::bf16:
      return "BFloat16Storage";
    case DType::i64:
      return "LongStorage";
    default:
      return "ByteStorage";
  }
}

// torch.save({"state_dict": OrderedDict(tensors), "global_step": 42, "epoch": 3}) (or the bare
// OrderedDict when !wrap), as a zip with stored or deflated entries.
void write_checkpoint(const std::filesystem::path& path, const std::vector<NamedTensor>& tensors,
                      bool wrap, bool deflate = false) {
  PickleWriter p;
  p.proto(2);
  if (wrap) {
    p.op('}').binput(0).mark().str("state_dict");
  }
  p.global("collections", "OrderedDict").op(')').reduce().binput(1).mark();
  std::vector<ZipEntry> entries;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].tensor;
    const std::string key = std::to_string(i);
    p.str(tensors[i].name)
        .tensor(storage_type(t.dtype()), key, t.numel(), 0, t.shape(),
                contiguous_strides(t.shape()));
    entries.push_back({"archive/data/" + key, testing::tensor_bytes(t), deflate});
  }
  p.op('u');  // SETITEMS
  if (wrap) p.str("global_step").integer(42).str("epoch").integer(3).op('u');
  p.stop();
  entries.insert(entries.begin(), {"archive/data.pkl", p.bytes(), deflate});
  entries.push_back({"archive/byteorder", "little", false});
  entries.push_back({"archive/version", "3\n", false});
  testing::write_zip(path, entries);
}

class TorchTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::temp_dir("torch"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes a checkpoint whose data.pkl is `pkl` plus storages; expects an Error naming the file
  // and containing `needle`.
  void expect_error(const std::string& pkl, const std::string& needle,
                    std::vector<ZipEntry> extra = {}) {
    const auto path = dir_ / "bad.pt";
    extra.insert(extra.begin(), {"archive/data.pkl", pkl, false});
    testing::write_zip(path, extra);
    expect_open_error(path, needle);
  }
  void expect_open_error(const std::filesystem::path& path, const std::string& needle) {
    try {
      TorchCheckpoint::open(path);
      ADD_FAILURE() << "no error, expected one containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
  }
  std::filesystem::path dir_;
};

TEST_F(TorchTest, ReadsStateDictZeroCopy) {
  const auto path = dir_ / "model.ckpt";
  Tensor a = Tensor::from_vector<float>({1, -2, 3.5f, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({0.5f, 1.5f, -7, 8}, {4}, DType::f16);
  Tensor c = Tensor::from_vector<int64_t>({7, 8, 9}, {3});
  write_checkpoint(path, {{"model.a.weight", a}, {"model.b", b}, {"pos_ids", c}}, true);
  auto ck = TorchCheckpoint::open(path);
  ASSERT_EQ(ck->tensors().size(), 3u);
  EXPECT_EQ(ck->tensors()[0].name, "model.a.weight");
  EXPECT_EQ(ck->metadata().at("global_step"), "42");
  EXPECT_EQ(ck->metadata().at("epoch"), "3");
  Tensor ra = ck->get("model.a.weight");
  EXPECT_EQ(ra.shape(), (Shape{2, 3}));
  EXPECT_EQ(ra.to_vector<float>(), a.to_vector<float>());
  EXPECT_TRUE(ra.read_only());
  EXPECT_TRUE(ck->zero_copy("model.a.weight"));
  EXPECT_EQ(ra.storage()->kind(), Storage::Kind::mapped_file);
  EXPECT_EQ(ck->get("model.b").dtype(), DType::f16);
  EXPECT_EQ(ck->get("model.b").to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(ck->get("pos_ids").to_vector<int64_t>(), (std::vector<int64_t>{7, 8, 9}));
}

TEST_F(TorchTest, ReadsDeflatedEntriesAndBareDict) {
  const auto path = dir_ / "model.bin";
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  write_checkpoint(path, {{"w", a}}, false, true);
  auto ck = TorchCheckpoint::open(path);
  EXPECT_FALSE(ck->zero_copy("w"));
  EXPECT_NE(ck->get("w").storage()->kind(), Storage::Kind::mapped_file);
  EXPECT_EQ(ck->get("w").to_vector<float>(), a.to_vector<float>());
  EXPECT_TRUE(ck->get("w").read_only());
}

TEST_F(TorchTest, StridedViewsAndSharedStorage) {
  // One storage of 12 floats; "t" is a transposed view at offset 2, "u" the whole storage.
  std::vector<float> v(12);
  for (int i = 0; i < 12; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(i);
  PickleWriter p;
  p.proto(2).op('}').mark();
  p.str("t").tensor("FloatStorage", "0", 12, 2, {3, 2}, {1, 3});
  p.str("u").tensor("FloatStorage", "0", 12, 0, {12}, {1});
  p.op('u').stop();
  const auto path = dir_ / "views.pt";
  testing::write_zip(path, {{"arch/data.pkl", p.bytes()},
                            {"arch/data/0", testing::tensor_bytes(Tensor::from_vector(v, {12}))}});
  auto ck = TorchCheckpoint::open(path);
  // t[i][j] = storage[2 + i + 3 j]
  EXPECT_EQ(ck->get("t").to_vector<float>(), (std::vector<float>{2, 5, 3, 6, 4, 7}));
  EXPECT_EQ(ck->get("u").to_vector<float>(), v);
}

TEST_F(TorchTest, RefusesForbiddenGlobalsWithoutRunningThem) {
  const std::vector<std::pair<std::string, std::string>> evil = {{"os", "system"},
                                                                 {"posix", "system"},
                                                                 {"builtins", "eval"},
                                                                 {"builtins", "exec"},
                                                                 {"__builtin__", "eval"},
                                                                 {"subprocess", "Popen"},
                                                                 {"subprocess", "call"},
                                                                 {"torch", "load"},
                                                                 {"builtins", "getattr"},
                                                                 {"torch", "ComplexFloatStorage"},
                                                                 {"collections", "defaultdict"}};
  for (const auto& [module, name] : evil) {
    PickleWriter p;
    p.proto(2).global(module, name).str("touch /tmp/diffuse_pwned").op(0x85).reduce().stop();
    expect_error(p.bytes(), "refusing to load: the pickle calls " + module + "." + name);
    // Protocol 4 spelling: STACK_GLOBAL.
    PickleWriter q;
    q.proto(4).op(0x8c).byte(static_cast<uint8_t>(module.size())).raw(module);
    q.op(0x8c).byte(static_cast<uint8_t>(name.size())).raw(name).op(0x93).stop();
    expect_error(q.bytes(), module + "." + name);
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/diffuse_pwned"));
  // An allowed name that may not be called.
  PickleWriter p;
  p.proto(2).global("torch", "FloatStorage").op(')').reduce().stop();
  expect_error(p.bytes(), "refusing to call torch.FloatStorage");
}

TEST_F(TorchTest, RejectsHostilePickles) {
  // Truncated: no STOP.
  expect_error(PickleWriter().proto(2).op('}').bytes(), "without a STOP");
  // Unknown opcode (INST runs constructors by name).
  expect_error(PickleWriter().proto(2).op('i').raw("os\nsystem\n").stop().bytes(),
               "unsupported pickle opcode");
  // 2^40-byte string.
  expect_error(PickleWriter().proto(4).op(0x8d).le(1ull << 40, 8).raw("abc").bytes(),
               "runs past the end");
  // Protocol 6.
  expect_error(PickleWriter().proto(6).op('}').stop().bytes(), "protocol 6");
  // Memo key never stored.
  expect_error(PickleWriter().proto(2).binget(7).stop().bytes(), "never stored");
  // Stack underflow.
  expect_error(PickleWriter().proto(2).op('s').stop().bytes(), "stack underflow");
  // Invalid UTF-8 in a unicode string.
  expect_error(PickleWriter().proto(2).str("\xff\xfe").stop().bytes(), "UTF-8");
  // A dict that contains itself.
  expect_error(PickleWriter().proto(2).op('}').binput(0).str("a").binget(0).op('s').stop().bytes(),
               "cyclic");
  // 100000 nested lists: parsing is iterative, walking stops at the depth limit.
  {
    PickleWriter p;
    p.proto(2);
    for (int i = 0; i < 100000; ++i) p.op(']');
    for (int i = 0; i < 99999; ++i) p.op('a');
    p.stop();
    expect_error(p.bytes(), "nested deeper");
  }
  // 2^29 paths through shared lists (each list holds the previous one twice): bounded walk.
  {
    PickleWriter p;
    p.proto(2).op(']').binput(0);
    for (int i = 1; i < 30; ++i)
      p.op('0')
          .op(']')
          .mark()
          .binget(static_cast<uint8_t>(i - 1))
          .binget(static_cast<uint8_t>(i - 1))
          .op('e')
          .binput(static_cast<uint8_t>(i));
    p.stop();
    expect_error(p.bytes(), "too large to walk");
  }
  // Storage type that is not a storage; persistent id of the wrong shape.
  expect_error(PickleWriter().proto(2).str("x").op('Q').stop().bytes(), "persistent id");
}

TEST_F(TorchTest, RejectsInconsistentStorages) {
  const auto one = [](int64_t numel, std::vector<int64_t> size, std::vector<int64_t> stride,
                      int64_t offset = 0) {
    PickleWriter p;
    p.proto(2).op('}').str("w").tensor("FloatStorage", "0", numel, offset, size, stride);
    return p.op('s').stop().bytes();
  };
  const std::string four_floats(16, '\0');
  expect_error(one(4, {10}, {1}), "reaches past its storage", {{"archive/data/0", four_floats}});
  expect_error(one(4, {2, 2}, {2, 1}, 1), "reaches past its storage",
               {{"archive/data/0", four_floats}});
  expect_error(one(6, {4}, {1}), "should hold", {{"archive/data/0", four_floats}});
  expect_error(one(4, {4}, {1}), "does not hold", {});
  expect_error(one(4, {1ll << 40, 1ll << 40}, {1, 1}), "overflow",
               {{"archive/data/0", four_floats}});
}

TEST_F(TorchTest, RejectsBrokenZips) {
  const auto good = dir_ / "good.pt";
  write_checkpoint(good, {{"w", Tensor::from_vector<float>({1, 2, 3, 4}, {4})}}, false);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  const auto bad = dir_ / "bad.pt";
  // Truncated at every 97th byte.
  for (std::size_t n = 0; n < bytes.size(); n += 97) {
    testing::write_file(bad, bytes.substr(0, n));
    EXPECT_THROW(TorchCheckpoint::open(bad), Error) << "truncated to " << n;
  }
  testing::write_file(bad, "PK\x03\x04 definitely not a zip archive at all........");
  expect_open_error(bad, "not a valid zip");
  testing::write_zip(bad, {{"archive/other.pkl", "x"}});
  expect_open_error(bad, "not a PyTorch checkpoint");
  // Zip bomb: an entry that claims 2^31 bytes from a few compressed bytes (sizes patched in the
  // local and central headers alike, so the archive stays self-consistent).
  testing::write_zip(bad, {{"archive/data.pkl", std::string(64, 'a'), true}});
  std::ifstream zin(bad, std::ios::binary);
  std::string z((std::istreambuf_iterator<char>(zin)), {});
  zin.close();
  const auto patch = [&](const std::string& sig, std::size_t field) {
    const auto at = z.find(sig);
    ASSERT_NE(at, std::string::npos);
    const uint32_t v = 1u << 31;
    for (int i = 0; i < 4; ++i)
      z[at + field + static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
  };
  patch(std::string("PK\x03\x04", 4), 22);
  patch(std::string("PK\x01\x02", 4), 24);
  testing::write_file(bad, z);
  expect_open_error(bad, "zip bomb");
  // Legacy (pre-1.6) pickle file: detected by the source opener.
  testing::write_file(bad, std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8", 12));
  try {
    open_tensor_source(bad);
    ADD_FAILURE() << "legacy file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("legacy"), std::string::npos) << e.what();
  }
}

TEST_F(TorchTest, ReadsRealTextualInversionFile) {
  const auto path = testing::shared_dir() / "assets/lora-cloneofsimo/lora_kiriko2.ti.pt";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "asset missing: " << path;
  auto ck = TorchCheckpoint::open(path);
  ASSERT_EQ(ck->tensors().size(), 1u);
  const TensorInfo& info = ck->tensors()[0];
  EXPECT_EQ(info.name, "<krk>");
  EXPECT_EQ(info.shape, (Shape{768}));
  EXPECT_EQ(info.dtype, DType::f32);
  EXPECT_TRUE(ck->zero_copy("<krk>"));
  // Independently: the raw storage bytes read through libzip.
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  ASSERT_NE(z, nullptr);
  zip_file_t* f = zip_fopen(z, "archive/data/0", 0);
  ASSERT_NE(f, nullptr);
  std::vector<float> expected(768);
  ASSERT_EQ(zip_fread(f, expected.data(), 768 * 4), 768 * 4);
  zip_fclose(f);
  zip_close(z);
  EXPECT_EQ(ck->get("<krk>").to_vector<float>(), expected);
  double norm = 0;
  for (float x : expected) norm += static_cast<double>(x) * x;
  EXPECT_GT(norm, 0.01);
}

TEST_F(TorchTest, ReadsRealTorchModule) {
  const auto path = testing::shared_dir() / "assets/taef2/taef2_decoder.pth";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "asset missing: " << path;
  auto ck = TorchCheckpoint::open(path);
  EXPECT_GT(ck->tensors().size(), 10u);
  for (const auto& t : ck->tensors()) {
    EXPECT_TRUE(ck->zero_copy(t.name)) << t.name;
    EXPECT_EQ(ck->get(t.name).shape(), t.shape);
  }
}

#ifdef DIFFUSE_CLI
int run_cli(const std::string& args, std::string* output = nullptr) {
  const std::string cmd = std::string(DIFFUSE_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  if (output) *output = out;
  return rc;
}

TEST_F(TorchTest, CliConvertsCheckpointToIdenticalSafetensors) {
  const auto ckpt = dir_ / "model.ckpt";
  Tensor a = Tensor::from_vector<float>({1.25f, -2, 3, 1e-8f, 5, 6}, {3, 2});
  Tensor b = Tensor::from_vector<float>({0.5f, 1.5f, -7, 8}, {4}, DType::bf16);
  Tensor c = Tensor::from_vector<int64_t>({7, 8, 9}, {3});
  write_checkpoint(ckpt, {{"a", a}, {"b", b}, {"ids", c}}, true);
  const auto out = dir_ / "model.safetensors";
  std::string log;
  ASSERT_EQ(run_cli("convert " + ckpt.string() + " " + out.string(), &log), 0) << log;
  auto st = SafetensorsFile::open(out);
  auto ck = TorchCheckpoint::open(ckpt);
  ASSERT_EQ(st.entries().size(), 3u);
  for (const auto& t : ck->tensors()) {
    const Tensor x = ck->get(t.name), y = st.get(t.name);
    EXPECT_EQ(x.dtype(), y.dtype()) << t.name;
    EXPECT_EQ(x.shape(), y.shape()) << t.name;
    EXPECT_EQ(testing::tensor_bytes(x), testing::tensor_bytes(y)) << t.name;
  }
  EXPECT_EQ(st.metadata().at("global_step"), "42");
  // --dtype f16 converts floating tensors only.
  const auto half = dir_ / "half.safetensors";
  ASSERT_EQ(run_cli("convert " + ckpt.string() + " " + half.string() + " --dtype f16", &log), 0)
      << log;
  auto h = SafetensorsFile::open(half);
  EXPECT_EQ(h.entry("a").dtype, DType::f16);
  EXPECT_EQ(h.entry("ids").dtype, DType::i64);
  EXPECT_EQ(h.get("a").to_vector<float>(), a.to(DType::f16).to_vector<float>());
  // info lists the tensors.
  ASSERT_EQ(run_cli("info " + ckpt.string() + " --tensors", &log), 0) << log;
  EXPECT_NE(log.find("pytorch"), std::string::npos) << log;
  EXPECT_NE(log.find("ids"), std::string::npos) << log;
  // Errors are reported, not crashes.
  testing::write_file(dir_ / "junk.ckpt", "PK\x03\x04junk");
  EXPECT_NE(run_cli("info " + (dir_ / "junk.ckpt").string(), &log), 0);
  EXPECT_NE(log.find("error"), std::string::npos) << log;
}

TEST_F(TorchTest, CliHandlesRealFiles) {
  const auto dir = testing::shared_dir() / "assets/lora-cloneofsimo";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "assets missing: " << dir;
  std::string log;
  const auto out = dir_ / "ti.safetensors";
  ASSERT_EQ(run_cli("convert " + (dir / "lora_kiriko2.ti.pt").string() + " " + out.string(), &log),
            0)
      << log;
  auto st = SafetensorsFile::open(out);
  auto ck = TorchCheckpoint::open(dir / "lora_kiriko2.ti.pt");
  EXPECT_EQ(testing::tensor_bytes(st.get("<krk>")), testing::tensor_bytes(ck->get("<krk>")));
  ASSERT_EQ(run_cli("info " + (dir / "analog_svd_rank4.safetensors").string(), &log), 0) << log;
  EXPECT_NE(log.find("tensors:    384"), std::string::npos) << log;
  EXPECT_NE(log.find("F16"), std::string::npos) << log;
  const auto f32 = dir_ / "svd32.safetensors";
  ASSERT_EQ(run_cli("convert " + (dir / "analog_svd_rank4.safetensors").string() + " " +
                        f32.string() + " --dtype f32",
                    &log),
            0)
      << log;
  auto src = SafetensorsFile::open(dir / "analog_svd_rank4.safetensors");
  auto dst = SafetensorsFile::open(f32);
  ASSERT_EQ(src.entries().size(), dst.entries().size());
  for (const auto& e : src.entries())
    ASSERT_EQ(dst.get(e.name).to_vector<float>(), src.get(e.name).to_vector<float>()) << e.name;
}
#endif

}  // namespace
}  // namespace diffuse
