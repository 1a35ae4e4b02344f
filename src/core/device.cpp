#include "diffuse/core/device.h"

namespace diffuse {

std::string Device::str() const {
  return type == DeviceType::cpu ? "cpu" : "cuda:" + std::to_string(index);
}

}  // namespace diffuse
