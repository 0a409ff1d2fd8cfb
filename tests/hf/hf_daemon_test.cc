// chorusd --model DIR serves Hugging Face directories: random weights in a Llama-3-style and a
// Qwen3-style directory with the real tokenizer files of shared/tokenizers/hf; chat requests
// are rendered to the reference's ids (the prompt token counts of the fixture renders).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "../model/random_model_file.h"
#include "../server/daemon.h"
#include "../test_util.h"
#include "chorus/http/openai.h"
#include "chorus/v1/chorus.grpc.pb.h"
#include "hf_test_util.h"

namespace chorus {
namespace {

namespace pb = chorus::v1;
using testing::Json;

struct Style {
  std::string fixture, arch;
  int vocab_size, head_dim;
  Json config_patch, generation_config;
};

void ServeDirectory(const Style& style) {
  const std::string tok_dir = testing::SharedPath("tokenizers/hf/" + style.fixture);
  if (!testing::Exists(tok_dir + "/cases.json")) GTEST_SKIP() << tok_dir << " absent";
  const Json cases = Json::parse(testing::ReadFile(tok_dir + "/cases.json"));
  RandomModelSpec s;
  s.arch = style.arch;
  s.dim = 64;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.head_dim = style.head_dim;
  s.ffn_dim = 128;
  s.vocab_size = style.vocab_size;
  s.weight_type = GgmlType::kBF16;
  s.tied_output = true;
  const std::string dir = testing::TempPath("hf_serve_" + style.fixture);
  std::filesystem::remove_all(dir);
  testing::WriteHfModel(*testing::MakeModelFile(s), s, dir, 1, tok_dir, style.config_patch);
  testing::WriteText(dir + "/generation_config.json", style.generation_config.dump());

  testing::Daemon d = testing::Spawn({"--model", dir});
  ASSERT_GT(d.port, 0) << "chorusd did not start on " << dir;
  auto stub = pb::Chorus::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(d.port),
                                                      grpc::InsecureChannelCredentials()));
  // Every conversation under every option set, through the gRPC API (reasoning_content, tool
  // calls, tool results, chat_options): the prompt is the reference render's ids.
  int served = 0;
  for (const Json& c : cases["chat_cases"]) {
    pb::GenerateRequest base;
    for (const Json& m : c["messages"]) {
      pb::ChatMessage* msg = base.add_messages();
      msg->set_role(m["role"].get<std::string>());
      msg->set_content(m["content"].get<std::string>());
      if (m.contains("reasoning_content"))
        msg->set_reasoning_content(m["reasoning_content"].get<std::string>());
      for (const Json& call : m.value("tool_calls", Json::array())) {
        const Json& f = call.contains("function") ? call["function"] : call;
        std::string args;
        ASSERT_TRUE(http::ToPythonStyleJson(f["arguments"].dump(), &args));
        if (f["arguments"].is_string()) args = f["arguments"].get<std::string>();
        pb::ToolCall* tc = msg->add_tool_calls();
        tc->set_name(f["name"].get<std::string>());
        tc->set_arguments(args);
      }
    }
    for (const Json& render : c["renders"]) {
      pb::GenerateRequest r = base;
      const Json& o = render["options"];
      r.mutable_chat_options()->set_add_generation_prompt(o.value("add_generation_prompt", false));
      if (o.contains("enable_thinking"))
        r.mutable_chat_options()->set_enable_thinking(o["enable_thinking"].get<bool>());
      r.set_max_tokens(8);
      r.mutable_sampling()->set_temperature(0);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      pb::GenerateResponse resp;
      const grpc::Status st = stub->Generate(&ctx, r, &resp);
      ASSERT_TRUE(st.ok()) << c["name"] << " " << o.dump() << ": " << st.error_message();
      EXPECT_EQ(resp.usage().prompt_tokens(), static_cast<int>(render["ids"].size()))
          << c["name"] << " " << o.dump();
      EXPECT_GT(resp.usage().completion_tokens(), 0) << c["name"];
      ++served;
    }
  }
  EXPECT_GE(served, 14);
  testing::StopDaemon(d);
  std::filesystem::remove_all(dir);
}

TEST(HfDaemonTest, ServesALlama3StyleDirectory) {
  ServeDirectory({"llama3",
                  "llama",
                  128256,
                  0,
                  {{"bos_token_id", 128000}, {"eos_token_id", 128001}},
                  {{"bos_token_id", 128000}, {"eos_token_id", {128001, 128009}}}});
}

TEST(HfDaemonTest, ServesAQwen3StyleDirectory) {
  ServeDirectory({"qwen3",
                  "qwen3",
                  151936,
                  32,
                  {{"bos_token_id", 151643}, {"eos_token_id", 151645}},
                  {{"bos_token_id", 151643}, {"eos_token_id", {151645, 151643}}}});
}

// A template Chorus does not recognise stops the start-up with a clear error, unless the config
// names the family to use.
TEST(HfDaemonTest, AnUnrecognisedChatTemplateNeedsTheConfigToNameAFamily) {
  RandomModelSpec s;
  s.dim = 32;
  s.vocab_size = 263;
  const std::string dir = testing::TempPath("hf_serve_weird");
  std::filesystem::remove_all(dir);
  testing::WriteHfModel(*testing::MakeModelFile(s), s, dir);
  testing::WriteText(dir + "/tokenizer_config.json",
                     Json{{"eos_token", "<|eos|>"}, {"chat_template", "{{ weird }}"}}.dump());
  const std::string cmd = testing::BinaryPath("src/chorusd") +
                          " --listen 127.0.0.1:0 --metrics '' --model " + dir + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p)) out += buf;
  const int status = ::pclose(p);
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find("chat template is not one Chorus recognises"), std::string::npos) << out;
  const std::string config = dir + "/chorus.pbtxt";
  testing::WriteText(config, "chat_template: \"chatml\"\n");
  testing::Daemon d = testing::Spawn({"--config", config, "--model", dir});
  EXPECT_GT(d.port, 0);
  testing::StopDaemon(d);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace chorus
