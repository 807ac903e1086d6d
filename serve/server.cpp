#include "serve/server.h"

#include <sys/resource.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstdio>
#include <deque>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/text.h"
#include "common/version.h"
#include "labels/store.h"
#include "labels/token.h"
#include "labels/user_feedback.h"
#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "serve/chat_page.h"
#include "serve/metrics.h"
#include "train/runtime.h"

namespace rlhf::serve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

bool is_loopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  boost::system::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// A whole HTTP/1.1 response as bytes.
std::string http_response(int status, const std::string& content_type, const std::string& body, bool keep_alive,
                          const std::string& extra_headers = "") {
  std::string out = str_cat("HTTP/1.1 ", status, " ", http::obsolete_reason(static_cast<http::status>(status)), "\r\n");
  out += "Content-Type: " + content_type + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  out += body;
  return out;
}

std::string chunk(const std::string& data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

std::string sse(const std::string& data) { return chunk("data: " + data + "\n\n"); }

// Lets a server hold about `want` open sockets: raises the soft limit on
// file descriptors up to the hard one. Returns the limit now in force.
rlim_t raise_fd_limit(rlim_t want) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
  if (r.rlim_cur < want) {
    rlimit next = r;
    next.rlim_cur = std::min(want, r.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &next) == 0) r = next;
  }
  return r.rlim_cur;
}

}  // namespace

// One request that went to the engine: its choices, decoders and timing.
struct Completion {
  CompletionRequest request;
  std::string id;
  int64_t created = 0;
  int64_t prompt_tokens = 0;
  Json sampling;
  std::vector<ReplyDecoder> decoders;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  std::vector<std::string> finish;  // per choice; empty while running
  std::vector<bool> started;        // a chunk was sent for the choice
  std::vector<Clock::time_point> last_token;
  int running = 0;
  bool any_token = false;
  bool cancelled = false;  // by shutdown
  bool client_gone = false;
  Clock::time_point received;
};

struct ChatServer::Impl {
  ServeConfig config;
  net::io_context io;
  tcp::acceptor acceptor{io};
  LoadedPolicy policy;
  std::unique_ptr<ChatTemplate> chat;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<labels::LabelStore> store;
  ServerMetrics metrics;
  std::string model_name;
  bool keys_required = false;
  bool draining = false;
  int active = 0;  // completions in flight
  std::thread drain_thread;
  std::mt19937_64 random{std::random_device{}()};

  explicit Impl(const ServeConfig& c) : config(c) {}
  void accept();
  void begin_shutdown();
  std::string new_id(const char* prefix) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx%08llx", static_cast<unsigned long long>(random()),
                  static_cast<unsigned long long>(random() & 0xffffffffULL));
    return prefix + std::string(buf);
  }
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ChatServer::Impl& server, tcp::socket socket) : srv_(server), stream_(std::move(socket)) {
    ++srv_.metrics.open_connections;
  }
  ~Session() { --srv_.metrics.open_connections; }

  void start() { read_request(); }

 private:
  // --- reading ---
  void read_request() {
    if (closing_) return;
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(srv_.config.max_body_bytes));
    parser_->header_limit(16 * 1024);
    stream_.expires_after(millis(srv_.config.read_timeout_s));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_request(ec); });
  }

  void on_request(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted ||
        ec == net::error::eof || ec == net::error::connection_reset) {
      return close();
    }
    if (ec == http::error::body_limit) {
      return fail_and_close(ApiError(413, str_cat("the request body is larger than ", srv_.config.max_body_bytes,
                                                  " bytes (--max_body_bytes)")));
    }
    if (ec == http::error::header_limit) {
      return fail_and_close(ApiError(431, "the request headers are larger than 16 KiB"));
    }
    if (ec) return fail_and_close(ApiError(400, str_cat("malformed HTTP request: ", ec.message())));
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    try {
      route();
    } catch (const ApiError& e) {
      reply_error(e);
    } catch (const std::exception& e) {
      // Never a crash on user input: anything unforeseen is a 500 for this
      // request only.
      log_info("serve: internal error on ", endpoint_, ": ", e.what());
      reply_error(ApiError(500, str_cat("internal error: ", e.what())));
    }
  }

  // A read while a reply is generated: tells us when the client leaves.
  void watch() {
    if (watching_ || closing_) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) return self->client_left();
      self->buffer_.commit(n);  // the next pipelined request: parsed later
      if (self->completion_) {
        if (self->buffer_.size() < 64 * 1024) self->watch();
      } else if (!self->writing_) {
        self->read_request();
      }
    });
  }

  void client_left() {
    if (completion_ && !completion_->client_gone) {
      completion_->client_gone = true;
      for (auto& h : completion_->handles) h->cancel();
      ++srv_.metrics.cancelled;
    }
    close();
  }

  // --- routing ---
  void route() {
    const std::string target(request_.target());
    const std::string path = target.substr(0, target.find('?'));
    const auto method = request_.method();
    endpoint_ = path.rfind("/v1/models/", 0) == 0 ? "/v1/models/{id}" : path;
    if (srv_.draining && path != "/health") throw ApiError(503, "the server is shutting down");
    if (path == "/" && method == http::verb::get) {
      return reply(200, "text/html; charset=utf-8", chat_page_html());
    }
    if (path == "/health" && method == http::verb::get) {
      if (srv_.draining) return reply(503, "application/json", R"({"status":"shutting down"})");
      return reply(200, "application/json", R"({"status":"ok"})");
    }
    const bool known = path == "/metrics" || path == "/v1/models" || path.rfind("/v1/models/", 0) == 0 ||
                       path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/feedback";
    if (!known) {
      endpoint_ = "other";
      throw ApiError(404, str_cat("no such endpoint: ", printable(path)), "", "not_found");
    }
    authenticate();
    const bool want_post = path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/feedback";
    if ((want_post && method != http::verb::post) || (!want_post && method != http::verb::get)) {
      throw ApiError(405, str_cat(path, " takes ", want_post ? "POST" : "GET"), "", "method_not_allowed");
    }
    if (path == "/metrics") {
      return reply(200, "text/plain; version=0.0.4",
                   srv_.metrics.render(srv_.engine->stats(), srv_.engine->config().max_batch));
    }
    if (path == "/v1/models") return reply(200, "application/json", dump({{"object", "list"}, {"data", {model_json()}}}));
    if (path.rfind("/v1/models/", 0) == 0) {
      if (path.substr(11) != srv_.model_name) {
        throw ApiError(404, str_cat("the model '", printable(path.substr(11)), "' does not exist; this server has '",
                                    srv_.model_name, "'"),
                       "model", "model_not_found");
      }
      return reply(200, "application/json", dump(model_json()));
    }
    if (path == "/v1/feedback") return feedback();
    start_completion(path == "/v1/chat/completions");
  }

  Json model_json() const {
    return {{"id", srv_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "rlhf"},
            {"root", srv_.policy.dir}, {"max_model_len", srv_.engine->model_config().n_positions}};
  }

  void authenticate() {
    const auto it = request_.find(http::field::authorization);
    std::string key;
    if (it != request_.end()) {
      const std::string value(it->value());
      if (value.rfind("Bearer ", 0) == 0) key = value.substr(7);
    }
    if (!srv_.store) return;  // no keys to check (only allowed on loopback)
    if (key.empty()) {
      if (srv_.keys_required) {
        throw ApiError(401, "an API key is required: send \"Authorization: Bearer KEY\" (keys are made with `rlhf raters add NAME`)",
                       "", "invalid_api_key");
      }
      return;
    }
    auto rater = srv_.store->rater_by_token_hash(labels::sha256_hex(key));
    if (!rater) throw ApiError(401, "the API key is not valid (revoked, or from another label store)", "", "invalid_api_key");
    rater_id_ = rater->id;
  }

  // --- completions ---
  void start_completion(bool chat) {
    const std::string& body = request_.body();
    auto c = std::make_shared<Completion>();
    c->request = chat ? parse_chat_request(body, srv_.config.limits) : parse_completion_request(body, srv_.config.limits);
    const CompletionRequest& r = c->request;
    if (!r.model.empty() && r.model != srv_.model_name) {
      throw ApiError(404, str_cat("the model '", printable(r.model), "' does not exist; this server has '",
                                  srv_.model_name, "'"),
                     "model", "model_not_found");
    }
    const Tokenizer& tok = srv_.policy.tokenizer;
    std::vector<int32_t> prompt = chat ? srv_.chat->render_prompt(r.messages) : tok.encode(r.prompt);
    const int64_t context = srv_.engine->model_config().n_positions;
    const int64_t room = context - static_cast<int64_t>(prompt.size());
    if (room < 1) {
      throw ApiError(400, str_cat("this model's maximum context length is ", context, " tokens; the ",
                                  chat ? "messages" : "prompt", " came to ", prompt.size(),
                                  " tokens. Shorten them."),
                     chat ? "messages" : "prompt", "context_length_exceeded");
    }
    int max_tokens = r.max_tokens.value_or(static_cast<int>(std::min<int64_t>(srv_.config.limits.default_max_tokens, room)));
    if (max_tokens > room) {
      throw ApiError(400, str_cat("this model's maximum context length is ", context, " tokens; the ",
                                  chat ? "messages" : "prompt", " came to ", prompt.size(),
                                  " tokens and max_tokens asks for ", max_tokens, ". Ask for at most ", room,
                                  " tokens or shorten the input."),
                     "max_tokens", "context_length_exceeded");
    }
    c->id = srv_.new_id(chat ? "chatcmpl-" : "cmpl-");
    c->created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    c->prompt_tokens = static_cast<int64_t>(prompt.size());
    c->received = Clock::now();
    const uint64_t seed = r.seed ? static_cast<uint64_t>(*r.seed) : srv_.random();
    c->sampling = {{"temperature", r.temperature}, {"top_p", r.top_p}, {"top_k", r.top_k},
                   {"max_tokens", max_tokens}, {"seed", r.seed ? Json(*r.seed) : Json()}, {"source", "serve"}};
    SamplingConfig sampling;
    sampling.temperature = r.temperature;
    sampling.top_p = r.top_p;
    sampling.top_k = r.top_k;
    sampling.max_new_tokens = max_tokens;
    for (int i = 0; i < r.n; ++i) {
      c->decoders.emplace_back(tok, r.stop);
      c->finish.emplace_back();
      c->started.push_back(false);
      c->last_token.push_back(c->received);
    }
    completion_ = c;
    for (int i = 0; i < r.n; ++i) {
      EngineRequest er{prompt, sampling, r.n == 1 ? seed : mix_seed({seed, static_cast<uint64_t>(i)})};
      auto self = shared_from_this();
      auto handle = srv_.engine->submit(std::move(er), [self, c, i](const TokenEvent& ev) {
        net::post(self->srv_.io, [self, c, i, ev] { self->on_token(*c, i, ev); });
      });
      if (!handle) {
        for (auto& h : c->handles) h->cancel();
        completion_.reset();
        throw ApiError(429, "the server is busy: too many requests are waiting. Retry shortly.");
      }
      c->handles.push_back(std::move(handle));
      ++c->running;
    }
    ++srv_.active;
    if (r.stream) {
      send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
           "Transfer-Encoding: chunked\r\nConnection: " +
           std::string(keep_alive_ ? "keep-alive" : "close") + "\r\n\r\n");
    }
    stream_.expires_never();
    watch();
  }

  void on_token(Completion& c, int i, const TokenEvent& ev) {
    if (!c.finish[i].empty()) return;  // ended already (a stop string), the engine's cancel arrives late
    const auto now = Clock::now();
    std::string text;
    if (ev.token >= 0 && ev.finish != FinishReason::kStop) {
      text = c.decoders[i].push(ev.token);
      if (!c.any_token) srv_.metrics.time_to_first_token.observe(seconds_between(c.received, now));
      else if (c.decoders[i].tokens() > 1) srv_.metrics.inter_token.observe(seconds_between(c.last_token[i], now));
      c.any_token = true;
      c.last_token[i] = now;
      if (c.decoders[i].stopped()) {
        c.handles[i]->cancel();
        c.finish[i] = "stop";
      }
    }
    if (c.finish[i].empty() && ev.finish != FinishReason::kRunning) {
      if (ev.finish == FinishReason::kCancelled) {
        c.finish[i] = "cancelled";
        if (!c.client_gone) c.cancelled = true;
      } else {
        text += c.decoders[i].finish();
        c.finish[i] = ev.finish == FinishReason::kStop ? "stop" : "length";
      }
    }
    if (c.client_gone) return finish_if_done(c);
    if (c.request.stream && completion_.get() == &c) {
      if (!text.empty() || !c.started[i]) {
        send(sse(dump(stream_chunk(c.request, c.id, c.created, srv_.model_name, i, text, !c.started[i], ""))));
        c.started[i] = true;
      }
      if (!c.finish[i].empty() && c.finish[i] != "cancelled") {
        send(sse(dump(stream_chunk(c.request, c.id, c.created, srv_.model_name, i, "", false, c.finish[i]))));
      }
    }
    finish_if_done(c);
  }

  void finish_if_done(Completion& c) {
    for (const auto& f : c.finish) {
      if (f.empty()) return;
    }
    if (completion_.get() != &c) return;  // answered already
    auto keep = completion_;
    completion_.reset();
    --srv_.active;
    int64_t completion_tokens = 0;
    for (const auto& d : c.decoders) completion_tokens += d.tokens();
    srv_.metrics.prompt_tokens += static_cast<uint64_t>(c.prompt_tokens) * c.decoders.size();
    srv_.metrics.completion_tokens += static_cast<uint64_t>(completion_tokens);
    srv_.metrics.request_duration.observe(seconds_between(c.received, Clock::now()));
    if (c.client_gone) return;
    if (c.cancelled) {
      const ApiError e(503, "the server is shutting down; the reply was cut off");
      srv_.metrics.count_request(endpoint_, 503);
      if (c.request.stream) {
        send(sse(dump(e.body())) + sse("[DONE]") + "0\r\n\r\n");
      } else {
        send(http_response(503, "application/json", dump(e.body()), false));
      }
      keep_alive_ = false;
      return;
    }
    log_conversation(c);
    srv_.metrics.count_request(endpoint_, 200);
    if (c.request.stream) {
      std::string tail;
      if (c.request.include_usage) {
        Json u = stream_chunk(c.request, c.id, c.created, srv_.model_name, 0, "", false, "");
        u["choices"] = Json::array();
        u["usage"] = usage_json(c.prompt_tokens, completion_tokens);
        tail += sse(dump(u));
      }
      send(tail + sse("[DONE]") + "0\r\n\r\n");
    } else {
      Choices choices;
      for (size_t i = 0; i < c.decoders.size(); ++i) {
        choices.texts.push_back(c.decoders[i].text());
        choices.finish.push_back(c.finish[i]);
      }
      choices.prompt_tokens = c.prompt_tokens;
      choices.completion_tokens = completion_tokens;
      send(http_response(200, "application/json",
                         dump(completion_response(c.request, c.id, c.created, srv_.model_name, choices)), keep_alive_));
    }
  }

  void log_conversation(const Completion& c) {
    if (!srv_.store || !srv_.config.log_conversations || !c.request.chat) return;
    Json messages = Json::array();
    for (const auto& m : c.request.messages) messages.push_back({{"role", m.role}, {"content", m.content}});
    std::vector<std::string> texts;
    std::vector<bool> finished;
    for (size_t i = 0; i < c.decoders.size(); ++i) {
      texts.push_back(c.decoders[i].text());
      finished.push_back(c.finish[i] == "stop");
    }
    try {
      labels::log_served(*srv_.store, c.id, messages, texts, finished, srv_.policy.dir, c.sampling);
    } catch (const std::exception& e) {
      log_info("serve: could not log completion ", c.id, " to the label store: ", e.what());
    }
  }

  // --- feedback ---
  void feedback() {
    if (!srv_.store || !srv_.config.log_conversations) {
      throw ApiError(400, "feedback needs the server to keep conversations: restart it with --labels DB --log_conversations",
                     "", "feedback_disabled");
    }
    Json j;
    try {
      j = parse_json(request_.body(), "the request body");
    } catch (const std::exception& e) {
      throw ApiError(400, str_cat("the request body is not valid JSON: ", e.what()));
    }
    if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
    labels::UserFeedback f;
    if (!j.contains("id") || !j["id"].is_string()) throw ApiError(400, "\"id\" (the completion's id) is required", "id");
    f.completion_id = j["id"].get<std::string>();
    auto int_field = [&](const char* key) -> std::optional<int> {
      if (!j.contains(key) || j[key].is_null()) return std::nullopt;
      if (!j[key].is_number_integer() || j[key].get<int64_t>() < 0 || j[key].get<int64_t>() > 64) {
        throw ApiError(400, str_cat("\"", key, "\" must be a choice index (0, 1, ...)"), key);
      }
      return static_cast<int>(j[key].get<int64_t>());
    };
    f.index = int_field("index").value_or(0);
    f.preferred = int_field("preferred");
    if (j.contains("rating") && !j["rating"].is_null()) {
      const Json& t = j["rating"];
      if (t == "up" || t == 1) f.thumb = 1;
      else if (t == "down" || t == -1) f.thumb = -1;
      else throw ApiError(400, "\"rating\" must be \"up\" or \"down\"", "rating");
    }
    if (j.contains("comment") && !j["comment"].is_null()) {
      if (!j["comment"].is_string()) throw ApiError(400, "\"comment\" must be a string", "comment");
      f.comment = j["comment"].get<std::string>();
      if (f.comment.size() > 4000) throw ApiError(400, "\"comment\" is longer than 4000 bytes", "comment");
    }
    if (f.thumb == 0 && f.comment.empty() && !f.preferred) {
      throw ApiError(400, "say something: \"rating\" (\"up\"/\"down\"), \"comment\" or \"preferred\"");
    }
    const int64_t rater = rater_id_ ? *rater_id_ : labels::users_rater(*srv_.store);
    labels::FeedbackOutcome out;
    try {
      out = labels::apply_user_feedback(*srv_.store, rater, f);
    } catch (const Error& e) {
      throw ApiError(e.kind() == ErrorKind::kData ? 400 : 500, e.what());
    }
    reply(200, "application/json",
          dump({{"object", "feedback"}, {"id", f.completion_id}, {"feedback_id", out.feedback_id},
                {"labels", out.label_ids}}));
  }

  // --- writing ---
  void reply(int status, const std::string& type, const std::string& body) {
    srv_.metrics.count_request(endpoint_, status);
    send(http_response(status, type, body, keep_alive_));
  }

  void reply_error(const ApiError& e) {
    srv_.metrics.count_request(endpoint_.empty() ? "other" : endpoint_, e.status());
    if (e.status() == 413 || e.status() >= 500) keep_alive_ = false;
    send(http_response(e.status(), "application/json", dump(e.body()), keep_alive_,
                       e.status() == 401 ? "WWW-Authenticate: Bearer\r\n" : ""));
  }

  void fail_and_close(const ApiError& e) {
    keep_alive_ = false;
    endpoint_ = "other";
    reply_error(e);
  }

  void send(std::string bytes) {
    if (closing_) return;
    out_.push_back(std::move(bytes));
    write_next();
  }

  void write_next() {
    if (writing_ || out_.empty() || closing_) return;
    writing_ = true;
    stream_.expires_after(millis(srv_.config.write_timeout_s));
    net::async_write(stream_, net::buffer(out_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      self->out_.pop_front();
      if (ec) return self->client_left();
      if (!self->out_.empty()) return self->write_next();
      if (self->completion_) {
        self->stream_.expires_never();  // generating: the watch read waits without a deadline
        return;
      }
      if (!self->keep_alive_) return self->close();
      // The answer is out: wait for the next request (the watch read may
      // already be waiting for it).
      self->stream_.expires_after(millis(self->srv_.config.read_timeout_s));
      if (!self->watching_) self->read_request();
    });
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  ChatServer::Impl& srv_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  std::string endpoint_;
  bool keep_alive_ = true;
  bool watching_ = false;
  bool writing_ = false;
  bool closing_ = false;
  std::deque<std::string> out_;
  std::shared_ptr<Completion> completion_;
  std::optional<int64_t> rater_id_;
};

}  // namespace

void ChatServer::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors and the like: back off a little, keep serving.
      auto timer = std::make_shared<net::steady_timer>(io, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](beast::error_code) { accept(); });
      return;
    }
    if (metrics.open_connections >= static_cast<uint64_t>(config.max_connections)) {
      ++metrics.refused_connections;
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      socket.set_option(tcp::no_delay(true));
      std::make_shared<Session>(*this, std::move(socket))->start();
    }
    accept();
  });
}

void ChatServer::Impl::begin_shutdown() {
  if (draining) return;
  draining = true;
  beast::error_code ec;
  acceptor.close(ec);
  log_info("serve: shutting down; running requests have ", config.shutdown_grace_s, " s to finish");
  const auto deadline = Clock::now() + millis(config.shutdown_grace_s);
  drain_thread = std::thread([this, deadline] {
    engine->shutdown(deadline);
    // Let the last events and writes go out, then stop.
    net::post(io, [this] {
      auto timer = std::make_shared<net::steady_timer>(io);
      auto tick = std::make_shared<std::function<void(int)>>();
      *tick = [this, timer, tick](int left) {
        if (active == 0 || left == 0) {
          io.stop();
          return;
        }
        timer->expires_after(std::chrono::milliseconds(50));
        timer->async_wait([tick, left](beast::error_code) { (*tick)(left - 1); });
      };
      (*tick)(40);
    });
  });
}

ChatServer::ChatServer(const ServeConfig& config) : impl_(std::make_unique<Impl>(config)) {
  Impl& s = *impl_;
  if (config.checkpoint.empty()) fail(ErrorKind::kUsage, "rlhf serve needs --checkpoint DIR (a policy checkpoint or run folder)");
  s.keys_required = config.require_keys || !is_loopback(config.host);
  if (s.keys_required && config.labels.empty()) {
    fail(ErrorKind::kUsage, "serving on ", config.host,
         " (beyond loopback) needs API keys: pass --labels DB and make keys with `rlhf raters add NAME --db DB`");
  }
  if (config.log_conversations && config.labels.empty()) {
    fail(ErrorKind::kUsage, "--log_conversations needs --labels DB: the label store the conversations go to");
  }
  if (!config.labels.empty()) {
    s.store = std::make_unique<labels::LabelStore>(config.labels);
    if (s.keys_required) {
      bool any = false;
      for (const auto& r : s.store->raters()) any = any || r.kind != "users";
      if (!any) fail(ErrorKind::kUsage, "no API keys in ", config.labels, ": make one with `rlhf raters add NAME --db ",
                     config.labels, "`");
    }
  }
  set_torch_threads(config.threads);
  s.policy = load_chat_policy(config.checkpoint);
  s.chat = std::make_unique<ChatTemplate>(s.policy.tokenizer);
  s.model_name = config.model_name;
  if (s.model_name.empty()) {
    std::string dir = config.checkpoint;  // what the user named ("runs/demo/ppo" -> "ppo"), not its step folder
    while (!dir.empty() && dir.back() == '/') dir.pop_back();
    s.model_name = dir.substr(dir.find_last_of('/') + 1);
    if (s.model_name.empty()) s.model_name = "policy";
  }
  s.engine = std::make_unique<Engine>(s.policy.model, s.chat->stop_tokens(), config.engine);
  // 1,000 idle clients need 1,000 descriptors beyond the usual 1,024 limit.
  const rlim_t fds = raise_fd_limit(static_cast<rlim_t>(config.max_connections) + 64);
  if (fds < static_cast<rlim_t>(config.max_connections) + 64) {
    s.config.max_connections = std::max(16, static_cast<int>(fds) - 64);
    log_info("serve: the file-descriptor limit is ", fds, "; at most ", s.config.max_connections, " connections");
  }
  beast::error_code ec;
  const auto address = net::ip::make_address(config.host == "localhost" ? "127.0.0.1" : config.host, ec);
  if (ec) fail(ErrorKind::kUsage, "--host '", config.host, "' is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(config.port));
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    fail(ErrorKind::kNetwork, "cannot listen on ", config.host, ":", config.port, ": ", ec.message(),
         ec == net::error::address_in_use ? " (another server has the port: pick another with --port)" : "");
  }
}

ChatServer::~ChatServer() {
  if (impl_->drain_thread.joinable()) impl_->drain_thread.join();
}

int ChatServer::port() const { return impl_->acceptor.local_endpoint().port(); }
const std::string& ChatServer::model_name() const { return impl_->model_name; }

std::string ChatServer::banner() const {
  const Impl& s = *impl_;
  return str_cat("serving '", s.model_name, "' (", s.policy.dir, ") on http://", s.config.host, ":", port(),
                 "/v1 with up to ", s.config.engine.max_batch, " requests batched; API keys ",
                 s.keys_required ? "required" : "not required",
                 s.config.log_conversations ? str_cat("; conversations ARE logged to ", s.config.labels)
                                            : "; conversations are not logged (--log_conversations to keep them)");
}

void ChatServer::run(bool handle_signals) {
  Impl& s = *impl_;
  std::unique_ptr<net::signal_set> signals;
  if (handle_signals) {
    signals = std::make_unique<net::signal_set>(s.io, SIGINT, SIGTERM);
    signals->async_wait([&s](const beast::error_code& ec, int) {
      if (!ec) s.begin_shutdown();
    });
  }
  s.accept();
  s.io.run();
}

void ChatServer::stop() {
  net::post(impl_->io, [this] { impl_->begin_shutdown(); });
}

}  // namespace rlhf::serve
