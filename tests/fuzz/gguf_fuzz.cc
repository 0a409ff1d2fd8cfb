// libFuzzer target: arbitrary bytes through the GGUF reader, then (when it parses) the model
// config reader and the tokenizer builder and encoder. Any crash, leak or sanitizer report is
// a bug: malformed files must come back as a Status.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "chorus/gguf/gguf.h"
#include "chorus/model/hparams.h"
#include "chorus/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file =
      chorus::GgufFile::FromBytes(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!file.ok()) return 0;
  (void)chorus::ReadModelConfig(**file);
  auto tok = chorus::Tokenizer::FromGguf(**file);
  if (tok.ok()) {
    auto ids = (*tok)->Encode("Hello world, \xe4\xb8\xad 123 <s>", true, true);
    (void)(*tok)->Decode(ids, true);
  }
  return 0;
}
