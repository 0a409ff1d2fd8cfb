// Spawns chorusd on 127.0.0.1 with an ephemeral port and reads the port it prints.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "../test_util.h"

namespace chorus::testing {

struct Daemon {
  pid_t pid = -1;
  int port = 0;
  FILE* out = nullptr;
};

inline Daemon Spawn(const std::vector<std::string>& extra) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  Daemon d;
  d.pid = ::fork();
  if (d.pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    std::vector<std::string> args = {testing::BinaryPath("src/chorusd"),
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--model",
                                     testing::SourcePath("models/stories260K.gguf"),
                                     "--metrics",
                                     "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(fds[1]);
  d.out = ::fdopen(fds[0], "r");
  char line[256];
  while (std::fgets(line, sizeof(line), d.out)) {
    if (std::sscanf(line, "chorusd listening on port %d", &d.port) == 1) break;
  }
  return d;
}

inline void StopDaemon(Daemon& d) {
  if (d.pid > 0) {
    ::kill(d.pid, SIGTERM);
    int status;
    ::waitpid(d.pid, &status, 0);
  }
  if (d.out) std::fclose(d.out);
  d = {};
}

}  // namespace chorus::testing
