// Shared helpers for tests: fixture paths and file reading.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace chorus::testing {

// The environment's CHORUS_SOURCE_DIR / CHORUS_SHARED_DIR, when set, replace the build machine's
// paths (test binaries carried to another machine: scripts/gpu-check.sh sets them).
inline std::string DirFromEnv(const char* name, const char* built_in) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : built_in;
}
inline std::string SourcePath(const std::string& rel) {
  return DirFromEnv("CHORUS_SOURCE_DIR", CHORUS_SOURCE_DIR) + "/" + rel;
}
inline std::string SharedPath(const std::string& rel) {
  return DirFromEnv("CHORUS_SHARED_DIR", CHORUS_SHARED_DIR) + "/" + rel;
}
inline std::string BinaryPath(const std::string& rel) {
  return std::string(CHORUS_BINARY_DIR) + "/" + rel;
}
inline bool Exists(const std::string& p) { return std::filesystem::exists(p); }

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The published stories260K greedy output (llama2.c doc/stories260K.md: `./run stories260K.bin
// -z tok512.bin -t 0.0`, 256 steps from BOS), without run.c's final newline.
constexpr char kPublishedGreedy[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
    "She said, \"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what "
    "to do.\"\n"
    "Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to "
    "do.\" Her mom said, \"Don't worry, Lily. We can help you.";

inline std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("chorus_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

}  // namespace chorus::testing
