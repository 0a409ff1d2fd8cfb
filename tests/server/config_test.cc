// The server configuration has one source of defaults: DefaultServerConfig(). The shipped
// configs/default.pbtxt spells out the same values, field by field; the CUDA switches map onto
// the CUDA backend's options.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "../test_util.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/server/server.h"

namespace chorus {
namespace {

// Fields that configs/default.pbtxt deliberately sets apart from the built-in defaults, each
// with the reason. None today: the file is the defaults spelled out.
const std::vector<std::pair<std::string, std::string>> kDeliberatelyDifferent = {};

std::string DefaultPbtxtPath() { return testing::SourcePath("configs/default.pbtxt"); }

TEST(ServerConfigTest, ShippedDefaultPbtxtSpellsOutTheBuiltInDefaults) {
  const std::string path = DefaultPbtxtPath();
  ASSERT_TRUE(testing::Exists(path)) << path;
  // The file alone, not merged over the defaults: every default must be written in it.
  chorus::v1::ServerConfig shipped;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(testing::ReadFile(path), &shipped))
      << path << " is not a valid ServerConfig text proto";
  google::protobuf::util::MessageDifferencer differ;
  for (const auto& [field, reason] : kDeliberatelyDifferent) {
    const google::protobuf::FieldDescriptor* f =
        chorus::v1::ServerConfig::descriptor()->FindFieldByName(field);
    ASSERT_NE(f, nullptr) << "no ServerConfig field '" << field << "' (" << reason << ")";
    differ.IgnoreField(f);
  }
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  EXPECT_TRUE(differ.Compare(DefaultServerConfig(), shipped))
      << "configs/default.pbtxt and DefaultServerConfig() (src/server/config.cc) differ; change "
         "both together:\n"
      << differences;
}

TEST(ServerConfigTest, LoadingTheShippedDefaultsGivesTheBuiltInDefaults) {
  auto loaded = LoadServerConfig(DefaultPbtxtPath());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  google::protobuf::util::MessageDifferencer differ;
  for (const auto& [field, reason] : kDeliberatelyDifferent) {
    differ.IgnoreField(chorus::v1::ServerConfig::descriptor()->FindFieldByName(field));
  }
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  EXPECT_TRUE(differ.Compare(DefaultServerConfig(), *loaded)) << differences;
}

TEST(ServerConfigTest, BuiltInDefaultsAreValid) {
  const absl::Status s = ValidateServerConfig(DefaultServerConfig());
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ServerConfigTest, CudaSwitchesDefaultOnAndTurnOptionsOff) {
  // The environment overrides (CHORUS_CUDA_GRAPHS=0, ...) may be set by whoever runs the tests:
  // with every switch on, the options are exactly the environment's.
  const CudaBackendOptions env = CudaBackendOptions::FromEnvironment();
  chorus::v1::ServerConfig c = DefaultServerConfig();
  EXPECT_TRUE(c.cuda_graphs());
  EXPECT_TRUE(c.cuda_kv_cache_f16());
  EXPECT_TRUE(c.cuda_dequant_cache());
  EXPECT_TRUE(c.cuda_fuse());
  const CudaBackendOptions on = CudaBackendOptionsFromConfig(c);
  EXPECT_EQ(on.graphs, env.graphs);
  EXPECT_EQ(on.kv_f16, env.kv_f16);
  EXPECT_EQ(on.dequant_cache, env.dequant_cache);
  EXPECT_EQ(on.fuse, env.fuse);
  EXPECT_EQ(on.repack, env.repack);

  // Unset switches count as on.
  chorus::v1::ServerConfig unset;
  const CudaBackendOptions from_unset = CudaBackendOptionsFromConfig(unset);
  EXPECT_EQ(from_unset.graphs, env.graphs);
  EXPECT_EQ(from_unset.kv_f16, env.kv_f16);
  EXPECT_EQ(from_unset.dequant_cache, env.dequant_cache);
  EXPECT_EQ(from_unset.fuse, env.fuse);
  EXPECT_EQ(from_unset.repack, env.repack);

  c.set_cuda_graphs(false);
  c.set_cuda_kv_cache_f16(false);
  c.set_cuda_dequant_cache(false);
  c.set_cuda_fuse(false);
  c.set_cuda_repack_weights(false);
  EXPECT_TRUE(ValidateServerConfig(c).ok());
  const CudaBackendOptions off = CudaBackendOptionsFromConfig(c);
  EXPECT_FALSE(off.graphs);
  EXPECT_FALSE(off.kv_f16);
  EXPECT_FALSE(off.dequant_cache);
  EXPECT_FALSE(off.fuse);
  EXPECT_FALSE(off.repack);
}

}  // namespace
}  // namespace chorus
