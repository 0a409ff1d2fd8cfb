#include "chorus/hf/hf_model.h"

#include <filesystem>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/gguf/gguf_writer.h"
#include "hf_internal.h"

namespace chorus {

bool IsHfModelDirectory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) &&
         std::filesystem::is_regular_file(std::filesystem::path(path) / "config.json", ec);
}

absl::StatusOr<std::unique_ptr<GgufFile>> OpenHfModel(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  CHORUS_ASSIGN_OR_RETURN(hf::Json config, hf::ReadJsonFile(config_path, 16u << 20));
  GgufWriter w;
  CHORUS_ASSIGN_OR_RETURN(hf::HfConfig c, hf::ConvertConfig(config, config_path, &w));
  w.SetString("general.name", std::filesystem::path(dir).filename().string());
  CHORUS_RETURN_IF_ERROR(hf::ConvertTokenizer(dir, c.vocab_size, &c, &w));
  auto storage = std::make_shared<hf::TensorStorage>();
  CHORUS_ASSIGN_OR_RETURN(storage->weights, hf::OpenWeights(dir));
  CHORUS_ASSIGN_OR_RETURN(std::vector<GgufTensorInfo> tensors, hf::MapTensors(c, storage.get()));
  for (const GgufTensorInfo& t : tensors) {
    if (t.name == "token_embd.weight" && (t.n_dims != 2 || t.ne[1] != c.vocab_size)) {
      return absl::FailedPreconditionError(StrCat(dir, ": model.embed_tokens.weight has ", t.ne[1],
                                                  " rows but ", config_path, " says vocab_size ",
                                                  c.vocab_size));
    }
  }
  return GgufFile::FromParts(w.Serialize(), std::move(tensors), std::move(storage));
}

absl::StatusOr<std::unique_ptr<GgufFile>> OpenHfTokenizer(const std::string& dir, int vocab_size) {
  GgufWriter w;
  hf::HfConfig ids;
  const std::string config_path = dir + "/config.json";
  auto config = hf::ReadJsonFile(config_path, 16u << 20);
  if (config.ok()) {
    CHORUS_RETURN_IF_ERROR(hf::ReadConfigIds(*config, config_path, &ids));
  } else if (!absl::IsNotFound(config.status())) {
    return config.status();
  }
  CHORUS_RETURN_IF_ERROR(hf::ConvertTokenizer(dir, vocab_size, &ids, &w));
  return GgufFile::FromBytes(w.Serialize());
}

}  // namespace chorus
