// Test helper: a random-weight model of `spec` as an in-memory GGUF file.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "chorus/gguf/gguf.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"

namespace chorus::testing {

inline std::unique_ptr<GgufFile> MakeModelFile(const RandomModelSpec& spec) {
  GgufWriter w;
  EXPECT_TRUE(BuildRandomModel(spec, nullptr, &w).ok());
  auto f = GgufFile::FromBytes(w.Serialize());
  EXPECT_TRUE(f.ok()) << f.status();
  return std::move(*f);
}

}  // namespace chorus::testing
