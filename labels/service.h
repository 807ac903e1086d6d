// The label service: `rlhf serve-labels`. A Boost.Asio TCP server speaking
// the Cap'n Proto protocol in labels/protocol.capnp over length-prefixed
// frames, in front of one label store. One I/O thread reads and writes
// frames; one store thread runs the requests in arrival order, so a slow or
// locked database never stalls accepting, reading or timing out
// connections. A label is acknowledged only after its transaction is
// committed and synced. Oversized, truncated, undecodable or out-of-order
// messages (anything before a valid hello) get an error frame and close that
// connection only; they are logged with the peer's address.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "labels/desk.h"

namespace rlhf::labels {

struct ServiceConfig {
  std::string db = "labels.sqlite";           // the label store to serve
  std::string host = "127.0.0.1";             // bind address; 0.0.0.0 to serve other machines
  int port = 7461;                            // 0 = any free port (tests)
  int64_t max_frame_bytes = 1 << 20;          // larger frames close the connection
  int idle_timeout_s = 900;                   // a silent connection is closed after this long
  // Before a valid hello a connection costs the server almost nothing: its
  // frames may declare at most this many bytes, bodies are read as they
  // arrive, and it must say hello within hello_timeout_s.
  int64_t hello_frame_bytes = 4096;
  int hello_timeout_s = 10;
  int max_connections = 512;                  // open connections in all; more are closed on accept
  int max_connections_per_address = 64;       // from one IP address
  // A request that waits this long for another process's lock on the store
  // is answered "busy, try again" instead of holding every rater behind it.
  int store_busy_timeout_ms = 2000;
  // TLS: the certificate chain and private key (PEM). Without them the
  // service binds only loopback addresses unless allow_plaintext is set.
  std::string tls_cert, tls_key;
  bool allow_plaintext = false;               // serve beyond loopback without TLS (a tunnel or trusted network)
  DeskConfig desk;                            // task assignment
  template <class V> void visit(V& v) {
    v("db", db);
    v("host", host);
    v("port", port, Range::between(0, 65535));
    v("max_frame_bytes", max_frame_bytes, Range::between(4096, 64 << 20));
    v("idle_timeout_s", idle_timeout_s, Range::at_least(1));
    v("hello_frame_bytes", hello_frame_bytes, Range::between(64, 1 << 20));
    v("hello_timeout_s", hello_timeout_s, Range::at_least(1));
    v("max_connections", max_connections, Range::at_least(1));
    v("max_connections_per_address", max_connections_per_address, Range::at_least(1));
    v("store_busy_timeout_ms", store_busy_timeout_ms, Range::between(0, 60000));
    v("tls_cert", tls_cert);
    v("tls_key", tls_key);
    v("allow_plaintext", allow_plaintext);
    v.section("desk", desk);
  }
};

// What the service answers to one frame body (decoded with at most
// `max_bytes`) on a connection whose rater is `rater` (a hello sets it).
// Never throws for any bytes: a refused frame is an error frame, with
// `close` set and `rejected` saying why.
struct FrameAnswer {
  std::string frame;
  bool close = false;
  std::string rejected;
};
FrameAnswer answer_frame(RatingDesk& desk, std::optional<Rater>& rater, const std::string& body, size_t max_bytes);

class LabelServer {
 public:
  // Opens the store and binds; throws Error(kNetwork) when the address is taken.
  explicit LabelServer(const ServiceConfig& config);
  ~LabelServer();
  LabelServer(const LabelServer&) = delete;
  LabelServer& operator=(const LabelServer&) = delete;

  int port() const;  // the bound port
  // Serves until stop() (from any thread) or, with `handle_signals`, SIGINT/SIGTERM.
  void run(bool handle_signals = false);
  void stop();

  struct Impl;  // opaque; public so the connection handlers in service.cpp can name it

 private:
  std::unique_ptr<Impl> impl_;
};

// A blocking client for the rater tool, PPO's live link and tests. Errors the
// server sends come back as Error(kData) with its text; a lost connection is
// Error(kNetwork).
class LabelClient {
 public:
  // Connects and says hello; a wrong token is Error(kUsage). With `tls_ca`
  // (a PEM file of the authority that signed the service's certificate, or
  // "system") the connection is TLS and the certificate and host are checked.
  LabelClient(const std::string& host, int port, const std::string& token, double timeout_s = 30,
              const std::string& tls_ca = "");
  ~LabelClient();
  LabelClient(const LabelClient&) = delete;
  LabelClient& operator=(const LabelClient&) = delete;

  const std::string& rater() const;
  std::optional<RatingTask> next_task(const std::vector<int64_t>& exclude = {}, int64_t prefer = 0);
  int64_t submit(const Label& label);
  int64_t undo();
  RaterProgress stats();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "host:port" -> {host, port}; Error(kUsage) naming the text when malformed.
std::pair<std::string, int> parse_host_port(const std::string& text);

}  // namespace rlhf::labels
