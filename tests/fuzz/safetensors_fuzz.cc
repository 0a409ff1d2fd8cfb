// libFuzzer target: arbitrary bytes through the safetensors reader (header length, JSON header,
// entries, tiling of the data buffer). Any crash, leak or sanitizer report is a bug: malformed
// files must come back as a Status. Reads every accepted tensor's bytes so that an offset
// outside the buffer shows up under ASan.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "chorus/hf/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = chorus::SafetensorsFile::FromBytes(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const chorus::SafetensorsTensor& t : (*file)->tensors()) {
    for (uint64_t i = 0; i < t.end - t.begin; ++i) sink = sink ^ t.data[i];
    (void)(*file)->Find(t.name);
  }
  return 0;
}
