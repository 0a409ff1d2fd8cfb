// Shared helpers for tests: fixture paths and file reading.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

namespace chorus::testing {

inline std::string SourcePath(const std::string& rel) { return std::string(CHORUS_SOURCE_DIR) + "/" + rel; }
inline std::string SharedPath(const std::string& rel) { return std::string(CHORUS_SHARED_DIR) + "/" + rel; }
inline std::string BinaryPath(const std::string& rel) { return std::string(CHORUS_BINARY_DIR) + "/" + rel; }
inline bool Exists(const std::string& p) { return std::filesystem::exists(p); }

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("chorus_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

}  // namespace chorus::testing
