#include "diffuse/ops/broadcast.h"

#include <algorithm>

namespace diffuse::ops {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    DIFFUSE_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ",
                  shape_str(b), " cannot be broadcast together (dimension ", i, ": ", da, " vs ",
                  db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace diffuse::ops
