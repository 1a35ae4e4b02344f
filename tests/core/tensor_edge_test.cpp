// Tensor edge cases: 0-dim tensors, empty dimensions, and arguments large enough to overflow
// int64 arithmetic (each was a bug in tensor.cpp: an error, a wrong result, or undefined
// behaviour that UBSan reports).
#include <gtest/gtest.h>

#include <limits>
#include <numeric>

#include "diffuse/core/tensor.h"

namespace diffuse {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

Tensor iota(const Shape& shape) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
  std::iota(v.begin(), v.end(), 0.0f);
  return Tensor::from_vector(v, shape);
}

TEST(TensorEdge, ZeroDimTensors) {
  // full()/fill_() on a 0-dim tensor used to throw (a [1] source cannot expand to []).
  Tensor s = Tensor::full({}, 2.5);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<float>(), 2.5f);
  s.fill_(-1.0);
  EXPECT_EQ(s.item<double>(), -1.0);
  // Viewing a 0-dim tensor as one element used to throw in view(), reshape() and flatten().
  EXPECT_EQ(s.view({1}).shape(), (Shape{1}));
  EXPECT_EQ(s.view({1}).data_ptr(), s.data_ptr());
  EXPECT_EQ(s.reshape({1, 1, 1}).item<float>(), -1.0f);
  EXPECT_EQ(s.flatten().shape(), (Shape{1}));
  EXPECT_EQ(s.view({-1}).shape(), (Shape{1}));
  EXPECT_THROW(s.view({2}), Error);
  // select() produces 0-dim tensors that must be reshapeable like any other.
  Tensor row = iota({3, 4}).select(0, 1).select(0, 2);
  EXPECT_EQ(row.dim(), 0);
  EXPECT_EQ(row.reshape({1}).item<float>(), 6.0f);
  EXPECT_EQ(row.unsqueeze(0).shape(), (Shape{1}));
  // squeeze(0) / squeeze(-1) of a 0-dim tensor is the tensor itself, as in PyTorch.
  EXPECT_EQ(s.squeeze(0).dim(), 0);
  EXPECT_EQ(s.squeeze(-1).dim(), 0);
  EXPECT_THROW(s.squeeze(1), Error);
  // copy_ into a 0-dim tensor from a 0-dim source; clone keeps the shape.
  Tensor d = Tensor::zeros({}, DType::f16);
  d.copy_(Tensor::full({}, 3.0));
  EXPECT_EQ(d.item<float>(), 3.0f);
  EXPECT_EQ(d.clone().shape(), Shape{});
}

TEST(TensorEdge, EmptyDimensions) {
  Tensor t = Tensor::zeros({4, 0, 3});
  EXPECT_EQ(t.numel(), 0);
  // torch.chunk of an empty dimension returns `chunks` empty pieces.
  auto c = t.chunk(3, 1);
  ASSERT_EQ(c.size(), 3u);
  for (const Tensor& p : c) EXPECT_EQ(p.shape(), (Shape{4, 0, 3}));
  // torch.split of an empty dimension returns one piece.
  EXPECT_EQ(t.split(2, 1).size(), 1u);
  // An empty tensor is contiguous whatever its strides (PyTorch), e.g. an empty slice of a
  // transposed tensor.
  Tensor e = iota({3, 5}).transpose(0, 1).slice(0, 2, 2);
  EXPECT_EQ(e.numel(), 0);
  EXPECT_TRUE(e.is_contiguous());
  EXPECT_EQ(e.reshape({0, 3}).shape(), (Shape{0, 3}));
  t.fill_(1.0);  // nothing to do, no error
  EXPECT_TRUE(t.to_vector<float>().empty());
}

TEST(TensorEdge, ChunkSizes) {
  Tensor t = iota({5});
  auto c = t.chunk(2);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].numel(), 3);
  EXPECT_EQ(c[1].numel(), 2);
  // More chunks than elements: one element each; a huge count used to overflow.
  EXPECT_EQ(t.chunk(7).size(), 5u);
  auto many = t.chunk(kMax);
  ASSERT_EQ(many.size(), 5u);
  EXPECT_EQ(many[4].item<float>(), 4.0f);
  EXPECT_THROW(t.chunk(0), Error);
}

TEST(TensorEdge, HugeArgumentsDoNotOverflow) {
  Tensor t = iota({6});
  // slice with a step far beyond the extent: one element (overflowed before).
  Tensor s = t.slice(0, 1, kMax, kMax);
  EXPECT_EQ(s.shape(), (Shape{1}));
  EXPECT_EQ(s.item<float>(), 1.0f);
  EXPECT_EQ(t.slice(0, 0, 6, 4).to_vector<float>(), (std::vector<float>{0, 4}));
  EXPECT_EQ(t.slice(0, 5, 2).numel(), 0);
  EXPECT_EQ(t.slice(0, -kMax, kMax).numel(), 6);
  // narrow: start + length overflowed before the range check.
  EXPECT_THROW(t.narrow(0, 2, kMax), Error);
  EXPECT_THROW(t.narrow(0, 7, 0), Error);
  EXPECT_EQ(t.narrow(0, 6, 0).numel(), 0);
  EXPECT_EQ(t.narrow(0, -2, 2).to_vector<float>(), (std::vector<float>{4, 5}));
  // view/reshape with extents whose product overflows.
  EXPECT_THROW(t.view({kMax, 2, -1}), Error);
  EXPECT_THROW(t.reshape({kMax / 2, 3, -1}), Error);
  // split with sizes whose sum overflows.
  EXPECT_THROW(t.split(std::vector<int64_t>{kMax, 2}), Error);
  EXPECT_THROW(t.split(std::vector<int64_t>{-1, 7}), Error);
}

}  // namespace
}  // namespace diffuse
