// Where a tensor's bytes live.
#pragma once

#include <string>

namespace diffuse {

enum class DeviceType { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {}; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

}  // namespace diffuse
