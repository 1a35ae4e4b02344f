#include "diffuse/formats/weight_loader.h"

#include <mutex>
#include <set>

#include "diffuse/core/log.h"

namespace diffuse {

struct WeightLoader::State {
  std::mutex mutex;
  std::set<std::string, std::less<>> used;
  std::vector<std::string> missing;
};

WeightLoader::WeightLoader(std::shared_ptr<const TensorSource> source, Options options)
    : WeightLoader(std::move(source), options, std::make_shared<State>(), "") {}

WeightLoader::WeightLoader(std::shared_ptr<const TensorSource> source, Options options,
                           std::shared_ptr<State> state, std::string prefix)
    : source_(std::move(source)),
      options_(options),
      state_(std::move(state)),
      prefix_(std::move(prefix)) {
  DIFFUSE_CHECK(source_ != nullptr, "WeightLoader: the tensor source is null");
}

std::string WeightLoader::full_name(std::string_view name) const {
  if (prefix_.empty()) return std::string(name);
  if (name.empty()) return prefix_;
  std::string s = prefix_;
  s += '.';
  s += name;
  return s;
}

WeightLoader WeightLoader::scope(std::string_view name) const {
  return WeightLoader(source_, options_, state_, full_name(name));
}

WeightLoader WeightLoader::scope(int64_t index) const {
  return scope(std::to_string(index));
}

WeightLoader WeightLoader::with_dtype(DType dtype) const {
  Options o = options_;
  o.dtype = dtype;
  return WeightLoader(source_, o, state_, prefix_);
}

bool WeightLoader::contains(std::string_view name) const {
  return source_->contains(full_name(name));
}

Tensor WeightLoader::fetch(const std::string& full, const Shape* shape, DType dtype,
                           bool optional_tensor, bool* found) const {
  *found = true;
  const TensorInfo* info = source_->find(full);
  if (info == nullptr) {
    if (shape != nullptr) {
      if (auto t = source_->synthesize(full, *shape, dtype)) return *t;
    }
    *found = false;
    if (optional_tensor) return {};
    DIFFUSE_CHECK(options_.allow_missing && shape != nullptr, "missing weight '", full, "' in ",
                  source_->path(), " (", source_->format(), ", ", source_->tensors().size(),
                  " tensors); check that the file matches the model and its config");
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->missing.push_back(full);
    return Tensor::zeros(*shape, dtype);
  }
  if (shape != nullptr) {
    DIFFUSE_CHECK(info->shape == *shape, "weight '", full, "' in ", info->file, " has shape ",
                  shape_str(info->shape), " but the model expects ", shape_str(*shape),
                  "; check that the config matches the checkpoint");
  }
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->used.insert(full);
  }
  // Integer and boolean tensors (position ids, step counters) keep their type.
  if (!is_floating(info->dtype) && is_floating(dtype)) return source_->get(full);
  return source_->get(full, dtype);
}

Tensor WeightLoader::get(std::string_view name, const Shape& shape) const {
  return get(name, shape, options_.dtype);
}

Tensor WeightLoader::get(std::string_view name, const Shape& shape, DType dtype) const {
  bool found = false;
  return fetch(full_name(name), &shape, dtype, false, &found);
}

std::optional<Tensor> WeightLoader::get_optional(std::string_view name, const Shape& shape) const {
  bool found = false;
  Tensor t = fetch(full_name(name), &shape, options_.dtype, true, &found);
  if (!found) return std::nullopt;
  return t;
}

Tensor WeightLoader::get_any(std::string_view name) const {
  bool found = false;
  return fetch(full_name(name), nullptr, options_.dtype, false, &found);
}

std::vector<std::string> WeightLoader::unused() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  std::vector<std::string> out;
  for (const TensorInfo& i : source_->tensors())
    if (state_->used.find(i.name) == state_->used.end()) out.push_back(i.name);
  return out;
}

std::vector<std::string> WeightLoader::missing() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->missing;
}

void WeightLoader::finish(bool strict) const {
  const auto u = unused();
  const auto m = missing();
  if (u.empty() && m.empty()) return;
  // Built with append(): GCC 12 reports a false -Wrestrict on chained std::string operator+.
  const auto list = [](const std::vector<std::string>& names) {
    std::string s;
    for (std::size_t i = 0; i < names.size() && i < 20; ++i) {
      if (i) s.append(", ");
      s.append(names[i]);
    }
    if (names.size() > 20)
      s.append(", ... (").append(std::to_string(names.size() - 20)).append(" more)");
    return s;
  };
  std::string msg = source_->path();
  msg.append(":");
  if (!u.empty())
    msg.append(" ")
        .append(std::to_string(u.size()))
        .append(" unused tensors: ")
        .append(list(u))
        .append(".");
  if (!m.empty())
    msg.append(" ")
        .append(std::to_string(m.size()))
        .append(" missing tensors (zero-initialized): ")
        .append(list(m))
        .append(".");
  DIFFUSE_CHECK(!strict, msg);
  log_warn(msg);
}

}  // namespace diffuse
