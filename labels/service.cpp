#include "labels/service.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>

#include "common/error.h"
#include "common/log.h"
#include "common/text.h"
#include "labels/wire.h"

namespace rlhf::labels {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

std::string error_frame(const std::string& text) {
  capnp::MallocMessageBuilder m;
  m.initRoot<wire::Response>().setError(labels::text(text));
  return encode_frame(m);
}

// One decoded request; sets `close` when the connection must end.
std::string dispatch(RatingDesk& desk, std::optional<Rater>& rater, wire::Request::Reader req, bool& close) {
  capnp::MallocMessageBuilder m;
  auto res = m.initRoot<wire::Response>();
  if (req.which() == wire::Request::HELLO) {
    rater = desk.authenticate(to_std(req.getHello().getToken()));
    if (!rater) {
      log_info("label service: a connection offered an unknown token; closing");
      close = true;
      res.setError("unknown rater token: ask the operator for yours (`rlhf raters add NAME` prints it once)");
    } else {
      log_info("label service: rater '", printable(rater->name), "' connected (",
               printable(to_std(req.getHello().getClient())), ")");
      res.setWelcome(text(rater->name));
    }
    return encode_frame(m);
  }
  if (!rater) {
    close = true;
    res.setError("say hello with a rater token first");
    return encode_frame(m);
  }
  try {
    switch (req.which()) {
      case wire::Request::NEXT_TASK: {
        auto nt = req.getNextTask();
        std::vector<int64_t> exclude;
        for (int64_t id : nt.getExclude()) exclude.push_back(id);
        if (auto t = desk.next_task(*rater, exclude, nt.getPrefer())) write_task(res.initTask(), *t);
        else res.setNoTask();
        break;
      }
      case wire::Request::SUBMIT: res.setAck(desk.submit(*rater, read_label(req.getSubmit()))); break;
      case wire::Request::UNDO: res.setUndone(desk.undo(*rater)); break;
      case wire::Request::STATS: write_progress(res.initStats(), desk.progress(*rater)); break;
      default: close = true; res.setError("unknown request"); break;
    }
  } catch (const Error& e) {
    // A well-formed request the store refuses (a label for a missing comparison,
    // a second label on one comparison): the rater is told and may go on.
    capnp::MallocMessageBuilder em;
    em.initRoot<wire::Response>().setError(text(e.what()));
    return encode_frame(em);
  }
  return encode_frame(m);
}

}  // namespace

FrameAnswer answer_frame(RatingDesk& desk, std::optional<Rater>& rater, const std::string& body, size_t max_bytes) {
  FrameAnswer a;
  try {
    DecodedMessage message(body, max_bytes);
    a.frame = dispatch(desk, rater, message.root<wire::Request>(), a.close);
    return a;
  } catch (const Error& e) {
    a.rejected = e.what();
  } catch (const kj::Exception& e) {
    a.rejected = std::string("invalid message: ") + e.getDescription().cStr();
  } catch (const std::exception& e) {
    // Not a refusal we wrote: a bug, which the frame fuzzer looks for.
    a.rejected = std::string("internal error while serving the request: ") + e.what();
  }
  a.frame = error_frame(a.rejected);
  a.close = true;
  return a;
}

// ---------------------------------------------------------------- server

struct LabelServer::Impl {
  // Held while this server runs: a flock on <db>.serving, released with the
  // descriptor (also when a later member fails to construct).
  struct ServingLock {
    int fd = -1;
    explicit ServingLock(int f) : fd(f) {}
    ServingLock(const ServingLock&) = delete;
    ServingLock& operator=(const ServingLock&) = delete;
    ~ServingLock() {
      if (fd >= 0) ::close(fd);
    }
  };
  ServiceConfig config;
  ServingLock serving_lock;
  LabelStore store;
  RatingDesk desk;
  // Open connections, in all and per remote address (the I/O thread only).
  // Declared before io: sessions still queued in io count down on its
  // destruction.
  size_t open_sessions = 0;
  std::map<std::string, size_t> open_per_address;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  size_t next_session = 1;
  size_t accept_failures = 0;  // in a row (the I/O thread only)
  // The store thread: every request that touches the store runs here, in
  // arrival order. Declared after io so it is joined before io goes away.
  asio::thread_pool store_thread{1};
  std::optional<asio::ssl::context> tls;  // set when serving TLS

  explicit Impl(const ServiceConfig& c)
      : config(c), serving_lock(lock_for_serving(c.db)), store(c.db), desk(store, c.desk), tls(server_tls(c)) {
    store.db().set_busy_timeout(c.store_busy_timeout_ms);
  }

  // TLS 1.2 or later with the operator's certificate chain and key (PEM).
  static std::optional<asio::ssl::context> server_tls(const ServiceConfig& c) {
    if (c.tls_cert.empty() && c.tls_key.empty()) return std::nullopt;
    if (c.tls_cert.empty() || c.tls_key.empty())
      fail(ErrorKind::kUsage, "label service: TLS needs both --tls_cert and --tls_key (PEM files)");
    asio::ssl::context ctx(asio::ssl::context::tls_server);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                    asio::ssl::context::single_dh_use);
    boost::system::error_code ec;
    ctx.use_certificate_chain_file(c.tls_cert, ec);
    if (ec) fail(ErrorKind::kUsage, "label service: cannot use --tls_cert ", c.tls_cert, ": ", ec.message(),
                 " (a PEM certificate chain is expected)");
    ctx.use_private_key_file(c.tls_key, asio::ssl::context::pem, ec);
    if (ec) fail(ErrorKind::kUsage, "label service: cannot use --tls_key ", c.tls_key, ": ", ec.message(),
                 " (the PEM private key of --tls_cert is expected)");
    if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
      fail(ErrorKind::kUsage, "label service: --tls_key ", c.tls_key, " is not the key of --tls_cert ", c.tls_cert);
    return ctx;
  }

  // One server per store, so every rater goes through one service's limits
  // and log. (Offers live in the store, so a second desk would still hand
  // out each task correctly; see RatingDesk.) flock is released when the
  // process dies, SIGKILL included.
  static int lock_for_serving(const std::string& db) {
    const std::string path = db + ".serving";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail(ErrorKind::kIo, "label service: cannot open ", path, ": ", std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      fail(ErrorKind::kUsage, "label service: another `rlhf serve-labels` is serving ", db,
           " (it holds ", path, "); raters should all use that one");
    }
    return fd;
  }

  void accept();
};

namespace {

// One connection; Stream is a plain socket or a TLS stream over one.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(Stream stream, LabelServer::Impl& server, size_t id, std::string address)
      : stream_(std::move(stream)), timer_(stream_.get_executor()), server_(server), address_(std::move(address)) {
    boost::system::error_code ec;
    const auto ep = lowest().remote_endpoint(ec);
    peer_ = "#" + std::to_string(id) + " " + (ec ? std::string("?") : address_ + ":" + std::to_string(ep.port()));
    ++server_.open_sessions;
    ++server_.open_per_address[address_];
  }
  ~Session() {
    --server_.open_sessions;
    if (--server_.open_per_address[address_] == 0) server_.open_per_address.erase(address_);
  }
  void start() {
    if constexpr (kTls) {
      // The handshake counts against the hello timeout.
      arm_timer();
      stream_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](
                                                                   const boost::system::error_code& ec) {
        if (ec) {
          log_info("label service: ", self->peer_, ": TLS handshake failed (", printable(ec.message()), "); closing");
          self->close();
          return;
        }
        self->read_header();
      });
    } else {
      read_header();
    }
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;
  tcp::socket& lowest() {
    if constexpr (kTls) return stream_.next_layer();
    else return stream_;
  }
  bool authenticated() const { return rater_.has_value(); }
  void arm_timer() {
    const int seconds = authenticated() ? server_.config.idle_timeout_s : server_.config.hello_timeout_s;
    timer_.expires_after(std::chrono::seconds(seconds));
    timer_.async_wait([self = this->shared_from_this(), seconds](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: activity
      log_info("label service: ", self->peer_, self->authenticated() ? " idle for " : " said no hello in ", seconds,
               " s; closing");
      self->close();
    });
  }
  void close() {
    boost::system::error_code ec;
    timer_.cancel();
    lowest().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close(ec);
  }
  void reject(const std::string& why) {
    log_info("label service: ", peer_, ": ", why, "; closing this connection");
    send(error_frame(why), true);
  }
  void read_header() {
    arm_timer();
    asio::async_read(stream_, asio::buffer(header_), [self = this->shared_from_this()](const boost::system::error_code& ec,
                                                                                 size_t n) {
      if (ec) {
        if (n > 0) log_info("label service: ", self->peer_, ": truncated frame header (", n, " of 4 bytes); closing");
        self->close();
        return;
      }
      const uint32_t len = decode_frame_length(self->header_);
      const int64_t limit = self->authenticated()
                                ? self->server_.config.max_frame_bytes
                                : std::min(self->server_.config.hello_frame_bytes, self->server_.config.max_frame_bytes);
      if (len == 0 || len > static_cast<uint64_t>(limit)) {
        self->reject("frame of " + std::to_string(len) + " bytes is outside 1.." + std::to_string(limit) +
                     (self->authenticated() ? "" : " (before hello)"));
        return;
      }
      self->body_.clear();
      self->read_body(len);
    });
  }
  // The body as it arrives, a chunk at a time: a frame that is declared
  // but never sent holds one chunk, not its declared size.
  void read_body(size_t want) {
    const size_t n = std::min(chunk_.size(), want - body_.size());
    stream_.async_read_some(asio::buffer(chunk_.data(), n), [self = this->shared_from_this(), want](
                                                                const boost::system::error_code& ec, size_t got) {
      if (ec) {
        log_info("label service: ", self->peer_, ": truncated frame (", self->body_.size() + got, " of ", want,
                 " bytes); closing");
        self->close();
        return;
      }
      self->body_.append(self->chunk_.data(), got);
      if (self->body_.size() < want) {
        self->read_body(want);
      } else {
        self->handle();
      }
    });
  }
  // The request runs on the store thread; its answer is sent from the I/O
  // thread. No other handler of this connection runs meanwhile (nothing is
  // read until the answer is written), so the session is never touched by
  // both threads at once. The store thread keeps no reference once it has
  // posted the answer: the session always ends on the I/O thread.
  void handle() {
    asio::post(server_.store_thread, [self = this->shared_from_this(), body = std::move(body_), rater = rater_]() mutable {
      FrameAnswer answer =
          answer_frame(self->server_.desk, rater, body, static_cast<size_t>(self->server_.config.max_frame_bytes));
      const auto io = self->stream_.get_executor();
      asio::post(io, [self = std::move(self), answer = std::move(answer), rater = std::move(rater)]() mutable {
        self->rater_ = std::move(rater);
        if (!answer.rejected.empty()) self->reject(answer.rejected);
        else self->send(std::move(answer.frame), answer.close);
      });
    });
  }
  void send(std::string frame, bool close_after) {
    out_ = std::move(frame);
    asio::async_write(stream_, asio::buffer(out_), [self = this->shared_from_this(), close_after](
                                                       const boost::system::error_code& ec, size_t) {
      if (ec || close_after) {
        self->close();
        return;
      }
      self->read_header();
    });
  }

  Stream stream_;
  asio::steady_timer timer_;
  LabelServer::Impl& server_;
  std::string address_, peer_;
  uint8_t header_[4] = {};
  std::array<char, 16384> chunk_{};
  std::string body_, out_;
  std::optional<Rater> rater_;
};

}  // namespace

void LabelServer::Impl::accept() {
  acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of file descriptors (or another transient failure): retrying at
      // once would spin; wait a little so open connections can finish. One
      // log line per streak of failures, and one when accepting resumes.
      if (accept_failures++ == 0)
        log_info("label service: cannot accept a connection (", ec.message(), "); retrying every 100 ms");
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](const boost::system::error_code& e) {
        if (!e) accept();
      });
      return;
    }
    if (accept_failures > 0) {
      log_info("label service: accepting connections again after ", accept_failures, " failed attempts");
      accept_failures = 0;
    }
    boost::system::error_code addr_ec;
    const auto ep = socket.remote_endpoint(addr_ec);
    const std::string address = addr_ec ? std::string("?") : ep.address().to_string();
    const auto it = open_per_address.find(address);
    const size_t from_address = it == open_per_address.end() ? 0 : it->second;
    if (open_sessions >= static_cast<size_t>(config.max_connections) ||
        from_address >= static_cast<size_t>(config.max_connections_per_address)) {
      log_info("label service: refusing a connection from ", address, " (", open_sessions, " open, ", from_address,
               " from that address)");
      boost::system::error_code ignored;
      socket.close(ignored);
    } else {
      if (tls) {
        using TlsStream = asio::ssl::stream<tcp::socket>;
        std::make_shared<Session<TlsStream>>(TlsStream(std::move(socket), *tls), *this, next_session++, address)->start();
      } else {
        std::make_shared<Session<tcp::socket>>(std::move(socket), *this, next_session++, address)->start();
      }
    }
    accept();
  });
}

LabelServer::LabelServer(const ServiceConfig& config) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(config.host, ec);
  if (ec) fail(ErrorKind::kUsage, "label service: host '", config.host, "' is not an IP address");
  // Tokens and labels cross the network in clear without TLS: that is only
  // the default on this machine.
  const bool tls = !config.tls_cert.empty() || !config.tls_key.empty();
  if (!tls && !address.is_loopback() && !config.allow_plaintext)
    fail(ErrorKind::kUsage, "label service: serving ", config.host,
         " beyond this machine without TLS would send rater tokens and labels in clear. Give --tls_cert and --tls_key "
         "(docs/security.md shows how to make them), or pass --allow_plaintext when a tunnel or a trusted network "
         "protects the port.");
  impl_ = std::make_unique<Impl>(config);
  const tcp::endpoint ep(address, static_cast<unsigned short>(config.port));
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep, ec);
  if (ec)
    fail(ErrorKind::kNetwork, "label service: cannot listen on ", config.host, ":", config.port, ": ", ec.message(),
         ". Pick another --port or stop the process using it.");
  impl_->acceptor.listen();
  impl_->accept();
}

LabelServer::~LabelServer() = default;

int LabelServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void LabelServer::run(bool handle_signals) {
  std::unique_ptr<asio::signal_set> signals;
  if (handle_signals) {
    signals = std::make_unique<asio::signal_set>(impl_->io, SIGINT, SIGTERM);
    signals->async_wait([this](const boost::system::error_code& ec, int) {
      if (!ec) log_info("label service: stopping");
      impl_->io.stop();
    });
  }
  impl_->io.run();
}

void LabelServer::stop() {
  asio::post(impl_->io, [this] { impl_->io.stop(); });
}

// ---------------------------------------------------------------- client

struct LabelClient::Impl {
  asio::io_context io;
  tcp::socket socket{io};
  std::optional<asio::ssl::context> tls_context;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;  // over `socket`, when the service speaks TLS
  std::string rater;

  template <class Buffer> void write(const Buffer& b, boost::system::error_code& ec) {
    if (tls) asio::write(*tls, b, ec);
    else asio::write(socket, b, ec);
  }
  template <class Buffer> void read(const Buffer& b, boost::system::error_code& ec) {
    if (tls) asio::read(*tls, b, ec);
    else asio::read(socket, b, ec);
  }

  wire::Response::Reader request(capnp::MallocMessageBuilder& msg, std::unique_ptr<DecodedMessage>& holder) {
    const std::string frame = encode_frame(msg);
    boost::system::error_code ec;
    write(asio::buffer(frame), ec);
    if (ec) fail(ErrorKind::kNetwork, "label service: connection lost while sending (", ec.message(), ")");
    uint8_t header[4];
    read(asio::buffer(header), ec);
    if (ec) fail(ErrorKind::kNetwork, "label service: connection lost while waiting for an answer (", ec.message(), ")");
    const uint32_t len = decode_frame_length(header);
    if (len == 0 || len > 64u << 20) fail(ErrorKind::kNetwork, "label service: answered with a bad frame length ", len);
    std::string body(len, '\0');
    read(asio::buffer(body), ec);
    if (ec) fail(ErrorKind::kNetwork, "label service: connection lost mid-answer (", ec.message(), ")");
    holder = std::make_unique<DecodedMessage>(body, 64u << 20);
    auto res = holder->root<wire::Response>();
    if (res.which() == wire::Response::ERROR) fail(ErrorKind::kData, "label service: ", to_std(res.getError()));
    return res;
  }

  // TLS with the server's certificate checked against `ca` (a PEM file, or
  // "system" for the system's trusted authorities) and the host name.
  void start_tls(const std::string& host, const std::string& ca) {
    tls_context.emplace(asio::ssl::context::tls_client);
    tls_context->set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                             asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    if (ca == "system") tls_context->set_default_verify_paths(ec);
    else tls_context->load_verify_file(ca, ec);
    if (ec) fail(ErrorKind::kUsage, "label service: cannot use the certificate authority '", ca, "': ", ec.message());
    tls_context->set_verify_mode(asio::ssl::verify_peer);
    tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket, *tls_context);
    tls->set_verify_callback(asio::ssl::host_name_verification(host));
    boost::system::error_code not_ip;
    asio::ip::make_address(host, not_ip);
    if (not_ip) SSL_set_tlsext_host_name(tls->native_handle(), host.c_str());  // SNI carries names, not addresses
    tls->handshake(asio::ssl::stream_base::client, ec);
    if (ec)
      fail(ErrorKind::kNetwork, "label service: TLS handshake with ", host, " failed (", ec.message(),
           "). Does the service use TLS, and does --tls_ca hold the authority that signed its certificate?");
  }
};

LabelClient::LabelClient(const std::string& host, int port, const std::string& token, double timeout_s,
                         const std::string& tls_ca)
    : impl_(std::make_unique<Impl>()) {
  boost::system::error_code ec;
  tcp::resolver resolver(impl_->io);
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) fail(ErrorKind::kNetwork, "label service: cannot resolve '", host, "': ", ec.message());
  asio::connect(impl_->socket, endpoints, ec);
  if (ec)
    fail(ErrorKind::kNetwork, "label service: cannot connect to ", host, ":", port, " (", ec.message(),
         "). Is `rlhf serve-labels` running there?");
  impl_->socket.set_option(tcp::no_delay(true));
  timeval tv{static_cast<time_t>(timeout_s), static_cast<suseconds_t>((timeout_s - static_cast<int64_t>(timeout_s)) * 1e6)};
  ::setsockopt(impl_->socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(impl_->socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (!tls_ca.empty()) impl_->start_tls(host, tls_ca);
  capnp::MallocMessageBuilder m;
  auto hello = m.initRoot<wire::Request>().initHello();
  hello.setToken(text(token));
  hello.setClient("rlhf 0.1");
  std::unique_ptr<DecodedMessage> holder;
  try {
    impl_->rater = to_std(impl_->request(m, holder).getWelcome());
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kData) fail(ErrorKind::kUsage, e.what());
    throw;
  }
}

LabelClient::~LabelClient() = default;

const std::string& LabelClient::rater() const { return impl_->rater; }

std::optional<RatingTask> LabelClient::next_task(const std::vector<int64_t>& exclude, int64_t prefer) {
  capnp::MallocMessageBuilder m;
  auto nt = m.initRoot<wire::Request>().initNextTask();
  auto ex = nt.initExclude(static_cast<unsigned>(exclude.size()));
  for (size_t i = 0; i < exclude.size(); ++i) ex.set(static_cast<unsigned>(i), exclude[i]);
  nt.setPrefer(prefer);
  std::unique_ptr<DecodedMessage> holder;
  auto res = impl_->request(m, holder);
  if (res.which() == wire::Response::TASK) return read_task(res.getTask());
  return std::nullopt;
}

int64_t LabelClient::submit(const Label& label) {
  capnp::MallocMessageBuilder m;
  write_label(m.initRoot<wire::Request>().initSubmit(), label);
  std::unique_ptr<DecodedMessage> holder;
  auto res = impl_->request(m, holder);
  if (res.which() != wire::Response::ACK) fail(ErrorKind::kNetwork, "label service: expected an acknowledgement");
  return res.getAck();
}

int64_t LabelClient::undo() {
  capnp::MallocMessageBuilder m;
  m.initRoot<wire::Request>().setUndo();
  std::unique_ptr<DecodedMessage> holder;
  return impl_->request(m, holder).getUndone();
}

RaterProgress LabelClient::stats() {
  capnp::MallocMessageBuilder m;
  m.initRoot<wire::Request>().setStats();
  std::unique_ptr<DecodedMessage> holder;
  return read_progress(impl_->request(m, holder).getStats());
}

std::pair<std::string, int> parse_host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    fail(ErrorKind::kUsage, "'", text, "' is not HOST:PORT (e.g. 127.0.0.1:7461)");
  try {
    size_t used = 0;
    const int port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1 || port <= 0 || port > 65535) throw std::invalid_argument("port");
    return {text.substr(0, colon), port};
  } catch (const std::exception&) {
    fail(ErrorKind::kUsage, "'", text, "': the port must be a number in 1..65535");
  }
}

}  // namespace rlhf::labels
