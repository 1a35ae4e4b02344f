// Storage kinds: memory-mapped files, subranges and borrowed memory, and the read-only guard
// that tensors on them enforce.
#include "diffuse/core/storage.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse {
namespace {

// A file of `floats` little-endian float32 values 0, 1, 2, ... removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& tag, int floats) {
    path_ = std::filesystem::temp_directory_path() /
            ("diffuse_storage_test_" + tag + "_" + std::to_string(::getpid()) + ".bin");
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < floats; ++i) {
      const float v = static_cast<float>(i);
      out.write(reinterpret_cast<const char*>(&v), sizeof(v));
    }
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(Storage, AllocateIsAlignedAndNeverNull) {
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{4097}}) {
    auto s = Storage::allocate(n);
    ASSERT_NE(s->data(), nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s->data()) % Storage::kAlignment, 0u);
    EXPECT_EQ(s->nbytes(), n);
    EXPECT_EQ(s->kind(), Storage::Kind::heap);
    EXPECT_FALSE(s->read_only());
  }
  EXPECT_THROW(Storage::allocate(std::numeric_limits<std::size_t>::max() - 8), Error);
}

TEST(Storage, MapFileIsReadOnlyAndZeroCopy) {
  TempFile file("map", 16);
  auto s = Storage::map_file(file.path());
  EXPECT_EQ(s->kind(), Storage::Kind::mapped_file);
  EXPECT_TRUE(s->read_only());
  ASSERT_EQ(s->nbytes(), 64u);
  Tensor t = Tensor::wrap(s, {4, 4}, DType::f32);
  EXPECT_EQ(t.data_ptr(), s->data());
  EXPECT_TRUE(t.read_only());
  EXPECT_EQ(t.select(0, 2).to_vector<float>(), (std::vector<float>{8, 9, 10, 11}));
  // Writes through the tensor API are refused, on the tensor and on its views.
  EXPECT_THROW(t.fill_(1.0), Error);
  EXPECT_THROW(t.copy_(Tensor::zeros({4, 4})), Error);
  EXPECT_THROW(t.slice(1, 0, 2).fill_(0.0), Error);
  EXPECT_THROW(t.transpose(0, 1).copy_(Tensor::zeros({4})), Error);
  // Copies are writable heap tensors.
  Tensor c = t.clone();
  EXPECT_FALSE(c.read_only());
  c.fill_(3.0);
  EXPECT_EQ(t.to_vector<float>()[5], 5.0f);
  // The mapping outlives the file name.
  std::filesystem::remove(file.path());
  EXPECT_EQ(t.to_vector<float>()[15], 15.0f);
}

TEST(Storage, MapFileErrorsNameThePath) {
  const auto missing = std::filesystem::temp_directory_path() / "diffuse_no_such_file.bin";
  try {
    Storage::map_file(missing);
    FAIL() << "mapping a missing file must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("diffuse_no_such_file.bin"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Storage::map_file(std::filesystem::temp_directory_path()), Error);  // a directory
  TempFile empty("empty", 0);
  auto s = Storage::map_file(empty.path());
  EXPECT_EQ(s->nbytes(), 0u);
  EXPECT_EQ(Tensor::wrap(s, {0}, DType::f32).numel(), 0);
  EXPECT_THROW(Tensor::wrap(s, {1}, DType::f32), Error);
}

TEST(Storage, SubrangeSharesBytesAndLifetime) {
  TempFile file("sub", 16);
  auto parent = Storage::map_file(file.path());
  auto sub = parent->subrange(8, 16);  // floats 2..5
  EXPECT_EQ(sub->kind(), Storage::Kind::mapped_file);
  EXPECT_TRUE(sub->read_only());
  EXPECT_EQ(sub->nbytes(), 16u);
  EXPECT_EQ(static_cast<const char*>(sub->data()), static_cast<const char*>(parent->data()) + 8);
  Tensor t = Tensor::wrap(sub, {4}, DType::f32);
  EXPECT_THROW(t.fill_(0.0), Error);
  // Dropping the parent handle must not unmap the bytes the subrange views.
  std::weak_ptr<Storage> weak_parent = parent;
  parent.reset();
  EXPECT_FALSE(weak_parent.expired());
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{2, 3, 4, 5}));
  t = Tensor();
  sub.reset();
  EXPECT_TRUE(weak_parent.expired());

  // Bounds, including offset + nbytes wrapping around size_t.
  auto heap = Storage::allocate(32);
  EXPECT_NO_THROW(heap->subrange(32, 0));
  EXPECT_NO_THROW(heap->subrange(0, 32));
  EXPECT_THROW(heap->subrange(33, 0), Error);
  EXPECT_THROW(heap->subrange(16, 17), Error);
  EXPECT_THROW(heap->subrange(8, std::numeric_limits<std::size_t>::max()), Error);
  EXPECT_THROW(heap->subrange(std::numeric_limits<std::size_t>::max(), 2), Error);

  // A subrange of writable heap memory is writable and aliases its parent.
  auto part = heap->subrange(16, 16);
  EXPECT_EQ(part->kind(), Storage::Kind::borrowed);
  EXPECT_FALSE(part->read_only());
  Tensor::wrap(heap, {8}, DType::f32).fill_(0.0);
  Tensor::wrap(part, {4}, DType::f32).fill_(7.0);
  EXPECT_EQ(Tensor::wrap(heap, {8}, DType::f32).to_vector<float>(),
            (std::vector<float>{0, 0, 0, 0, 7, 7, 7, 7}));
}

TEST(Storage, BorrowKeepsOwnerAliveAndHonorsReadOnly) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4});
  std::weak_ptr<std::vector<float>> weak_owner = owner;
  float* raw = owner->data();
  auto writable = Storage::borrow(raw, 16, /*read_only=*/false, owner);
  auto frozen = Storage::borrow(raw, 16, /*read_only=*/true, owner);
  owner.reset();
  EXPECT_FALSE(weak_owner.expired());
  EXPECT_EQ(writable->kind(), Storage::Kind::borrowed);

  Tensor w = Tensor::wrap(writable, {4}, DType::f32);
  w.slice(0, 1, 3).fill_(9.0);  // writes land in the external buffer
  EXPECT_EQ(raw[1], 9.0f);
  EXPECT_EQ(raw[2], 9.0f);

  Tensor r = Tensor::wrap(frozen, {2, 2}, DType::f32);
  EXPECT_TRUE(r.read_only());
  EXPECT_THROW(r.fill_(0.0), Error);
  EXPECT_THROW(r.copy_(Tensor::zeros({2})), Error);
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{1, 9, 9, 4}));

  w = Tensor();
  r = Tensor();
  writable.reset();
  EXPECT_FALSE(weak_owner.expired());  // `frozen` still holds it
  frozen.reset();
  EXPECT_TRUE(weak_owner.expired());

  // Without an owner the caller keeps the memory alive; the storage never frees it.
  float local[2] = {5, 6};
  {
    auto s = Storage::borrow(local, sizeof(local), false);
    Tensor::wrap(s, {2}, DType::f32).fill_(1.5);
  }
  EXPECT_EQ(local[0], 1.5f);
  EXPECT_EQ(local[1], 1.5f);
}

}  // namespace
}  // namespace diffuse
