// Starting and killing the `rlhf` binary from tests (end-to-end runs).
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace rlhf::test {

#ifdef RLHF_CLI
inline std::string cli_path() { return RLHF_CLI; }
#endif

// Starts `program args...` (found on PATH when it has no slash) with
// stdout/stderr sent to `log` (and stdin read from `input` if given).
// Returns the pid, or -1.
inline pid_t spawn_program(const std::vector<std::string>& command, const std::string& log,
                           const std::string& input = "", const std::string& cwd = "") {
  std::vector<std::string> all = command;
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  if (!input.empty()) posix_spawn_file_actions_addopen(&actions, 0, input.c_str(), O_RDONLY, 0);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// Starts `rlhf args...`, as spawn_program.
inline pid_t spawn_cli(const std::vector<std::string>& args, const std::string& log,
                       const std::string& input = "", const std::string& cwd = "") {
  std::vector<std::string> all = {cli_path()};
  all.insert(all.end(), args.begin(), args.end());
  return spawn_program(all, log, input, cwd);
}

// Waits for the process; returns its exit status, or 128 + signal.
inline int wait_exit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

inline int run_cli(const std::vector<std::string>& args, const std::string& log, const std::string& input = "",
                   const std::string& cwd = "") {
  const pid_t pid = spawn_cli(args, log, input, cwd);
  return pid < 0 ? -1 : wait_exit(pid);
}

// The port a server started with --port 0 printed to `log` after `prefix`
// (e.g. "127.0.0.1:"), once its line is complete; 0 if none within
// `timeout_s`.
inline int wait_for_port(const std::string& log, const std::string& prefix, double timeout_s = 30) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find(prefix);
    if (at != std::string::npos && text.find('\n', at) != std::string::npos)
      return std::atoi(text.c_str() + at + prefix.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return 0;
}

}  // namespace rlhf::test
