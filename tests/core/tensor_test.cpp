#include <gtest/gtest.h>

#include <numeric>

#include "diffuse/core/tensor.h"

namespace diffuse {
namespace {

Tensor iota(const Shape& shape) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
  std::iota(v.begin(), v.end(), 0.0f);
  return Tensor::from_vector(v, shape);
}

TEST(Tensor, FactoriesAndProperties) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(24, 0.0f));
  Tensor f = Tensor::full({3}, 2.5, DType::bf16);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{2.5f, 2.5f, 2.5f}));
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, PermuteTransposeContiguous) {
  Tensor t = iota({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  Tensor c = p.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  auto v = c.to_vector<float>();
  // c[k][i][j] == t[i][j][k] == i*12 + j*4 + k
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) EXPECT_EQ(v[k * 6 + i * 3 + j], i * 12 + j * 4 + k);
  EXPECT_EQ(t.transpose(0, 2).shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(t.contiguous().data_ptr(), t.data_ptr());  // no copy when already contiguous
}

TEST(Tensor, SliceNarrowSelect) {
  Tensor t = iota({4, 5});
  Tensor s = t.slice(1, 1, -1, 2);  // columns 1, 3
  EXPECT_EQ(s.shape(), (Shape{4, 2}));
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{1, 3, 6, 8, 11, 13, 16, 18}));
  EXPECT_EQ(t.narrow(0, 2, 2).to_vector<float>()[0], 10.0f);
  EXPECT_EQ(t.select(0, -1).to_vector<float>(), (std::vector<float>{15, 16, 17, 18, 19}));
  EXPECT_THROW(t.narrow(0, 3, 2), Error);
  EXPECT_THROW(t.select(1, 5), Error);
  EXPECT_THROW(t.slice(2, 0, 1), Error);
}

TEST(Tensor, ViewReshapeAndErrors) {
  Tensor t = iota({2, 6});
  EXPECT_EQ(t.view({3, -1}).shape(), (Shape{3, 4}));
  EXPECT_EQ(t.view({3, 4}).data_ptr(), t.data_ptr());
  Tensor tr = t.transpose(0, 1);  // [6, 2], not viewable as [12]
  EXPECT_THROW(tr.view({12}), Error);
  Tensor r = tr.reshape({12});
  EXPECT_EQ(r.to_vector<float>()[1], 6.0f);
  EXPECT_THROW(t.view({5, -1}), Error);
  EXPECT_THROW(t.view({-1, -1}), Error);
  EXPECT_EQ(t.flatten().shape(), (Shape{12}));
  // Views of a slice keep working when dims stay mergeable.
  Tensor s = iota({4, 6}).slice(0, 1, 3);
  EXPECT_EQ(s.view({12}).to_vector<float>()[0], 6.0f);
}

TEST(Tensor, ExpandSqueezeUnsqueeze) {
  Tensor t = iota({3, 1});
  Tensor e = t.expand({2, 3, 4});
  EXPECT_EQ(e.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(e.stride(2), 0);
  auto v = e.contiguous().to_vector<float>();
  EXPECT_EQ(v[4 * 1 + 3], 1.0f);
  EXPECT_EQ(v[12 + 4 * 2], 2.0f);
  EXPECT_THROW(t.expand({3, 2, 2}), Error);
  EXPECT_EQ(t.squeeze().shape(), (Shape{3}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(t.unsqueeze(-1).shape(), (Shape{3, 1, 1}));
}

TEST(Tensor, ChunkSplit) {
  Tensor t = iota({7, 2});
  auto c = t.chunk(3, 0);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].size(0), 3);
  EXPECT_EQ(c[2].size(0), 1);
  auto s = t.split({2, 5}, 0);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].to_vector<float>()[0], 4.0f);
  EXPECT_THROW(t.split({2, 2}, 0), Error);
}

TEST(Tensor, CopyConvertsAndBroadcasts) {
  Tensor dst = Tensor::zeros({2, 3}, DType::f16);
  dst.copy_(Tensor::from_vector<float>({1, 2, 3}, {3}));
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{1, 2, 3, 1, 2, 3}));
  Tensor strided = Tensor::zeros({2, 6}).slice(1, 0, 6, 2);
  strided.copy_(iota({2, 3}));
  EXPECT_EQ(strided.to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
}

TEST(Tensor, WrapChecksBounds) {
  auto storage = Storage::allocate(16);
  EXPECT_NO_THROW(Tensor::wrap(storage, {4}, DType::f32));
  EXPECT_THROW(Tensor::wrap(storage, {5}, DType::f32), Error);
  EXPECT_THROW(Tensor::wrap(storage, {2}, DType::f32, 3), Error);
  EXPECT_THROW(Tensor::empty({-1}), Error);
  EXPECT_THROW(Tensor::empty({int64_t{1} << 40, int64_t{1} << 40}), Error);
}

}  // namespace
}  // namespace diffuse
