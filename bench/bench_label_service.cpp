// The label service under load and attack, then SIGKILL and restart.
//
// `rlhf serve-labels` runs as its own process on a store of --comparisons
// pairs (one rater each). --raters honest raters label at full speed (no
// think time: next task, submit, again) from 127.0.0.1; each request's round
// trip is timed. Phase 1 runs them alone, phase 2 beside --hostile hostile
// connections from 127.0.0.2-5 (a quarter each: slow senders that trickle a
// header byte at a time, oversized frames declared before hello, garbage
// bytes, and silent connections), so both phases are measured in one run.
// Then the server is killed with SIGKILL mid-load and restarted; raters
// resend the label they were waiting on (same client id), and the store is
// checked: every acknowledged label is there exactly once, and no comparison
// has more labels than raters asked for. Prints figures; asserts nothing.
//
//   build/bench/bench_label_service [--raters 32] [--hostile 200] [--comparisons 30000] [--seconds 15]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/fs.h"
#include "labels/service.h"
#include "labels/sqlite.h"
#include "labels/store.h"
#include "labels/token.h"
#include "tests/process_util.h"

using namespace rlhf;
using namespace rlhf::labels;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int raters = 32;
  int hostile = 200;
  int comparisons = 30000;
  double seconds = 15;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--raters") o.raters = std::atoi(argv[i + 1]);
    else if (k == "--hostile") o.hostile = std::atoi(argv[i + 1]);
    else if (k == "--comparisons") o.comparisons = std::atoi(argv[i + 1]);
    else if (k == "--seconds") o.seconds = std::atof(argv[i + 1]);
    else fail(ErrorKind::kUsage, "unknown option ", k, " (--raters, --hostile, --comparisons, --seconds)");
  }
  return o;
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// A server process and its port.
struct Server {
  pid_t pid = -1;
  int port = 0;
  Server(const std::string& db, const std::string& log) {
    ::remove(log.c_str());
    pid = test::spawn_cli({"serve-labels", "--db", db, "--port", "0"}, log);
    port = test::wait_for_port(log, "127.0.0.1:");
    if (port == 0) fail(ErrorKind::kIo, "the label service did not start; see ", log);
  }
};

// One honest rater: full speed, each round trip timed, acknowledged labels kept.
struct HonestRater {
  std::string token, name;
  std::vector<double> next_ms[3], submit_ms[3];  // per phase (2: after the measured ones)
  std::map<std::string, int64_t> acked;          // client id -> label id
  std::optional<Label> in_flight;                // sent, not yet acknowledged
  size_t labels = 0;
};

Label left_better(const RatingTask& t, const std::string& client_id) {
  Label l;
  l.comparison_id = t.comparison_id;
  l.choice = Choice::kA;
  l.client_id = client_id;
  for (const auto& r : t.replies) l.shown_order.push_back(r.candidate_id);
  return l;
}

void rate(HonestRater& r, int port, const std::atomic<int>& phase, const std::atomic<bool>& stop) {
  try {
    LabelClient client("127.0.0.1", port, r.token, 10);
    while (!stop) {
      const int ph = phase.load();
      auto t0 = Clock::now();
      const auto task = client.next_task();
      r.next_ms[ph].push_back(ms_since(t0));
      if (!task) break;
      r.in_flight = left_better(*task, r.name + "-" + std::to_string(r.labels));
      t0 = Clock::now();
      const int64_t id = client.submit(*r.in_flight);
      r.submit_ms[ph].push_back(ms_since(t0));
      r.acked[r.in_flight->client_id] = id;
      r.in_flight.reset();
      ++r.labels;
    }
  } catch (const Error&) {
    // The server was killed: what is in flight is resent after the restart.
  }
}

// Hostile connections from one loopback address, a quarter of each kind:
// slow (a header byte at a time), oversized (1 MiB declared before hello),
// garbage bytes, and silent. Each reconnects when the server closes it.
struct Hostile {
  std::atomic<size_t> connections{0}, closed_by_server{0};

  int open(int port, const std::string& from) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    ::inet_pton(AF_INET, from.c_str(), &src.sin_addr);
    ::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src);
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<uint16_t>(port));
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst);  // non-blocking: completes in the background
    ++connections;
    return fd;
  }

  void run(int port, const std::string& from, int count, const std::atomic<bool>& stop) {
    std::mt19937 rng(static_cast<unsigned>(count * 7919 + from.back()));
    std::vector<int> fds(static_cast<size_t>(count));
    for (auto& fd : fds) fd = open(port, from);
    std::string oversized(4, '\0');
    const uint32_t big = 1u << 20;
    std::memcpy(oversized.data(), &big, 4);
    oversized += std::string(64, 'x');
    while (!stop) {
      for (size_t i = 0; i < fds.size(); ++i) {
        char buf[256];
        const ssize_t got = ::recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
        const bool closed = got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN);
        if (closed) {
          ++closed_by_server;
          ::close(fds[i]);
          fds[i] = open(port, from);
          continue;
        }
        switch (i % 4) {
          case 0: ::send(fds[i], "\x01", 1, MSG_DONTWAIT | MSG_NOSIGNAL); break;  // slow
          case 1: ::send(fds[i], oversized.data(), oversized.size(), MSG_DONTWAIT | MSG_NOSIGNAL); break;
          case 2: {
            std::string junk(64, '\0');
            for (char& c : junk) c = static_cast<char>(rng());
            ::send(fds[i], junk.data(), junk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
          }
          default: break;  // silent
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (int fd : fds) ::close(fd);
  }
};

void print_phase(const char* what, const std::vector<HonestRater>& raters, int phase, double seconds) {
  std::vector<double> next, submit, all;
  size_t labels = 0;
  for (const HonestRater& r : raters) {
    next.insert(next.end(), r.next_ms[phase].begin(), r.next_ms[phase].end());
    submit.insert(submit.end(), r.submit_ms[phase].begin(), r.submit_ms[phase].end());
    labels += r.submit_ms[phase].size();
  }
  all = next;
  all.insert(all.end(), submit.begin(), submit.end());
  std::printf("%-24s %9zu %8.1f %8.1f %8.1f %8.1f %8.1f %10.0f\n", what, all.size(), percentile(next, 0.5),
              percentile(next, 0.99), percentile(submit, 0.5), percentile(submit, 0.99), percentile(all, 1.0),
              static_cast<double>(labels) / seconds);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    const std::string dir = "/tmp/rlhf-bench-labels-" + std::to_string(::getpid());
    make_dirs(dir);
    const std::string db = dir + "/labels.sqlite";
    std::vector<HonestRater> raters(static_cast<size_t>(o.raters));
    {
      LabelStore store(db);
      sql::Transaction tx(store.db());
      for (int i = 0; i < o.comparisons; ++i) {
        const int64_t p = store.add_prompt(
            Json::array({{{"role", "user"}, {"content", "Where is order #" + std::to_string(100000 + i) + "?"}}}), nullptr);
        const int64_t a = store.add_candidate(p, "It shipped on Monday.", true, "a", nullptr);
        const int64_t b = store.add_candidate(p, "No idea, sorry.", true, "b", nullptr);
        store.add_comparison(p, {a, b}, 1);
      }
      for (size_t i = 0; i < raters.size(); ++i) {
        raters[i].name = "rater" + std::to_string(i);
        raters[i].token = new_rater_token();
        store.add_rater(raters[i].name, sha256_hex(raters[i].token), "human");
      }
      tx.commit();
    }
    std::printf("label service under load: %d raters at full speed, %d comparisons, %d hostile connections, %.0f s "
                "per phase\n\n",
                o.raters, o.comparisons, o.hostile, o.seconds);
    std::printf("%-24s %9s %8s %8s %8s %8s %8s %10s\n", "phase", "requests", "next p50", "next p99", "sub p50",
                "sub p99", "max ms", "labels/s");

    Server server(db, dir + "/server1.log");
    std::atomic<int> phase{0};
    std::atomic<bool> stop{false}, stop_hostile{false};
    std::vector<std::thread> threads;
    for (HonestRater& r : raters) threads.emplace_back(rate, std::ref(r), server.port, std::cref(phase), std::cref(stop));
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    Hostile hostile;
    std::vector<std::thread> attackers;
    for (int a = 0; a < 4; ++a)
      attackers.emplace_back([&, a] {
        hostile.run(server.port, "127.0.0." + std::to_string(2 + a), o.hostile / 4, stop_hostile);
      });
    std::this_thread::sleep_for(std::chrono::seconds(1));  // the attack is under way before phase 2 counts
    phase = 1;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    phase = 2;
    print_phase("raters alone", raters, 0, o.seconds);
    print_phase("beside hostile conns", raters, 1, o.seconds);

    // SIGKILL mid-load, restart, resend what was in flight.
    ::kill(server.pid, SIGKILL);
    test::wait_exit(server.pid);
    stop = true;
    for (auto& t : threads) t.join();
    stop_hostile = true;
    for (auto& t : attackers) t.join();
    size_t acked_before = 0, in_flight = 0, resent_acks = 0;
    for (const HonestRater& r : raters) acked_before += r.acked.size(), in_flight += r.in_flight.has_value();
    Server again(db, dir + "/server2.log");
    for (HonestRater& r : raters) {
      if (!r.in_flight) continue;
      LabelClient client("127.0.0.1", again.port, r.token, 10);
      r.acked[r.in_flight->client_id] = client.submit(*r.in_flight);
      ++resent_acks;
    }
    ::kill(again.pid, SIGTERM);
    test::wait_exit(again.pid);
    std::printf("\nhostile connections opened %zu, closed by the server %zu\n", hostile.connections.load(),
                hostile.closed_by_server.load());
    std::printf("SIGKILL under load: %zu labels acknowledged before, %zu in flight, resent after restart: %zu "
                "acknowledged\n",
                acked_before, in_flight, resent_acks);

    // Every acknowledged label exactly once; no comparison over its raters.
    LabelStore store(db);
    std::map<int64_t, std::string> stored;  // id -> client id
    std::map<int64_t, int> per_comparison;
    for (const Label& l : store.labels()) stored[l.id] = l.client_id, ++per_comparison[l.comparison_id];
    size_t acked = 0, missing = 0;
    std::set<int64_t> ids;
    for (const HonestRater& r : raters)
      for (const auto& [client_id, id] : r.acked) {
        ++acked;
        ids.insert(id);
        auto it = stored.find(id);
        missing += it == stored.end() || it->second != client_id;
      }
    size_t over = 0;
    for (const auto& [c, n] : per_comparison) over += n > 1;
    std::printf("store after restart: %zu labels for %zu acknowledged (%zu distinct ids); missing %zu, unacknowledged "
                "extra %zu, comparisons over their raters %zu\n",
                stored.size(), acked, ids.size(), missing, stored.size() - std::min(stored.size(), ids.size()), over);
    remove_all(dir);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_label_service: %s\n", e.what());
    return 1;
  }
}
