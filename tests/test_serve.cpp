// rlhf serve: the continuous-batching engine, the OpenAI-compatible HTTP
// API (errors, hostile input, keys, shutdown), feedback into the label
// store, and the real clients (curl, the OpenAI Node SDK, the chat page in
// headless Chromium) against a tiny checkpoint.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "common/fs.h"
#include "common/jsonl.h"
#include "labels/store.h"
#include "labels/token.h"
#include "labels/user_feedback.h"
#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "serve/engine.h"
#include "serve/openai.h"
#include "serve/server.h"
#include "tests/loopback.h"
#include "tests/process_util.h"
#include "tests/test_util.h"
#include "tests/tiny_fixtures.h"

namespace rlhf {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// A scratch folder that lives until the suite ends.
std::string temp_dir(const std::string& name) {
  static std::vector<std::unique_ptr<test::TempDir>> dirs;
  dirs.push_back(std::make_unique<test::TempDir>(name));
  return dirs.back()->path();
}

// One tiny random policy for the whole suite (context 128).
struct Fixture {
  std::string dir;
  std::string checkpoint;
  std::string long_checkpoint;  // the same size with a 512-token context, for conversations
  Tokenizer tokenizer;
};

const Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    x.dir = temp_dir("serve");
    auto data = test::tiny_support_data(16, 4, 4);
    x.tokenizer = test::tiny_support_tokenizer(data);
    x.checkpoint = test::write_tiny_checkpoint(join_path(x.dir, "policy"), x.tokenizer, 7, 128);
    x.long_checkpoint = test::write_tiny_checkpoint(join_path(x.dir, "policy512"), x.tokenizer, 7, 512);
    return x;
  }();
  return f;
}

std::vector<std::vector<int32_t>> test_prompts(int count) {
  const auto& f = fixture();
  ChatTemplate chat(f.tokenizer);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < count; ++i) {
    std::string text = "Where is order #" + std::to_string(10000 + i) + "?";
    for (int r = 0; r < i % 5; ++r) text += " It has been a week and nothing came.";
    out.push_back(chat.render_prompt({{"user", text}}));
  }
  return out;
}

// Collects one request's events.
struct Collected {
  std::vector<int32_t> tokens;
  serve::FinishReason finish = serve::FinishReason::kRunning;
  std::promise<void> done;
};

std::shared_ptr<Collected> submit(serve::Engine& engine, const std::vector<int32_t>& prompt, SamplingConfig s,
                                  uint64_t seed, std::shared_ptr<serve::RequestHandle>* handle = nullptr) {
  auto c = std::make_shared<Collected>();
  auto h = engine.submit({prompt, s, seed}, [c](const serve::TokenEvent& ev) {
    if (ev.token >= 0) c->tokens.push_back(ev.token);
    if (ev.finish != serve::FinishReason::kRunning) {
      c->finish = ev.finish;
      c->done.set_value();
    }
  });
  EXPECT_TRUE(h != nullptr);
  if (handle) *handle = h;
  return c;
}

void wait(const std::shared_ptr<Collected>& c) {
  ASSERT_EQ(c->done.get_future().wait_for(std::chrono::seconds(120)), std::future_status::ready);
}

GPT load_model() { return load_policy(fixture().checkpoint).model; }

TEST(Engine, AloneMatchesGenerate) {
  GPT reference = load_model();
  ChatTemplate chat(fixture().tokenizer);
  serve::Engine engine(load_model(), chat.stop_tokens(), {});
  const auto prompts = test_prompts(3);
  for (double temperature : {0.0, 1.0}) {
    SamplingConfig s;
    s.temperature = temperature;
    s.top_p = 0.9;
    s.max_new_tokens = 24;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const uint64_t seed = 100 + i;
      auto got = submit(engine, prompts[i], s, seed);
      wait(got);
      Generation g = generate(reference, {prompts[i]}, s, chat.stop_tokens(), 0, {seed});
      EXPECT_EQ(got->tokens, row_tokens(g.tokens, g.lengths, 0)) << "prompt " << i << " temperature " << temperature;
    }
  }
}

// With weights = "bf16" the engine serves what bf16 sampling generates, and
// the model it was given computes in fp32 again once the engine is gone.
TEST(Engine, Bf16WeightsServeWhatBf16SamplingGenerates) {
  GPT reference = load_model();
  ChatTemplate chat(fixture().tokenizer);
  GPT served = load_model();
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>{5, 6, 7, 8}).unsqueeze(0);
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = served->forward(ids);
  }
  const auto prompts = test_prompts(2);
  {
    serve::EngineConfig config;
    config.weights = "bf16";
    serve::Engine engine(served, chat.stop_tokens(), config);
    SamplingConfig s;
    s.temperature = 1.0;
    s.max_new_tokens = 24;
    s.weights = "bf16";
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto got = submit(engine, prompts[i], s, 7 + i);
      wait(got);
      Generation g = generate(reference, {prompts[i]}, s, chat.stop_tokens(), 0, {7 + i});
      EXPECT_EQ(got->tokens, row_tokens(g.tokens, g.lengths, 0)) << "prompt " << i;
    }
  }
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(served->forward(ids), before));
  serve::EngineConfig bad;
  bad.weights = "fp8";
  EXPECT_NE(test::error_of([&] { serve::Engine e(load_model(), chat.stop_tokens(), bad); }).find("engine.weights"),
            std::string::npos);
}

TEST(Engine, BatchingDoesNotChangeReplies) {
  ChatTemplate chat(fixture().tokenizer);
  const auto prompts = test_prompts(32);
  SamplingConfig greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 40;
  SamplingConfig sampled = greedy;
  sampled.temperature = 1.0;
  sampled.top_k = 40;
  auto settings = [&](size_t i) { return i % 2 == 0 ? greedy : sampled; };
  std::vector<std::vector<int32_t>> alone;
  {
    serve::Engine engine(load_model(), chat.stop_tokens(), {});
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto c = submit(engine, prompts[i], settings(i), 7 + i);
      wait(c);
      alone.push_back(c->tokens);
    }
  }
  // The same requests arriving while others run (so rows join and leave a
  // running batch), with a batch smaller than the load.
  serve::EngineConfig config;
  config.max_batch = 12;
  serve::Engine engine(load_model(), chat.stop_tokens(), config);
  std::vector<std::shared_ptr<Collected>> got;
  for (size_t i = 0; i < prompts.size(); ++i) {
    got.push_back(submit(engine, prompts[i], settings(i), 7 + i));
    if (i % 4 == 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& c : got) wait(c);
  size_t equal = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (i % 2 == 0) {
      EXPECT_EQ(got[i]->tokens, alone[i]) << "greedy request " << i;
    }
    equal += got[i]->tokens == alone[i];
  }
  // Sampled rows see the same uniform draws; only float noise at other
  // batch sizes could move one across a boundary.
  EXPECT_GE(equal, prompts.size() - 2);
  const auto stats = engine.stats();
  EXPECT_GT(stats.row_steps, stats.steps * 4) << "requests were not batched";
}

TEST(Engine, CancelFreesTheRowAndShutdownEndsEverything) {
  serve::EngineConfig config;
  config.max_batch = 2;
  config.max_queue = 1;
  serve::Engine engine(load_model(), {}, config);  // no stop tokens: rows run to their limit
  const auto prompts = test_prompts(4);
  SamplingConfig s;
  s.max_new_tokens = 60;
  // Request a holds the engine thread in its first event until released, so
  // what is queued meanwhile is known.
  std::promise<void> gate;
  auto opened = gate.get_future().share();
  auto a = std::make_shared<Collected>();
  auto h0 = engine.submit({prompts[0], s, 1}, [a, opened](const serve::TokenEvent& ev) {
    if (a->tokens.empty()) opened.wait();
    if (ev.token >= 0) a->tokens.push_back(ev.token);
    if (ev.finish != serve::FinishReason::kRunning) {
      a->finish = ev.finish;
      a->done.set_value();
    }
  });
  ASSERT_TRUE(h0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a is admitted and waits
  auto b = submit(engine, prompts[1], s, 2);
  auto c = submit(engine, prompts[2], s, 3);
  // One row free and one place in the queue are taken: a fourth is refused (HTTP 429).
  EXPECT_EQ(engine.submit({prompts[3], s, 4}, [](const serve::TokenEvent&) {}), nullptr);
  h0->cancel();
  gate.set_value();
  wait(a);
  EXPECT_EQ(a->finish, serve::FinishReason::kCancelled);
  EXPECT_LE(a->tokens.size(), 2u);
  wait(b);
  wait(c);  // got a's row
  EXPECT_EQ(c->finish, serve::FinishReason::kLength);
  EXPECT_EQ(c->tokens.size(), 60u);
  // Shutdown: a running request is cut at the deadline, later ones refused.
  auto d = submit(engine, prompts[3], s, 5);
  engine.shutdown(std::chrono::steady_clock::now());
  wait(d);
  EXPECT_EQ(d->finish, serve::FinishReason::kCancelled);
  EXPECT_EQ(engine.submit({prompts[3], s, 4}, [](const serve::TokenEvent&) {}), nullptr);
}

// A request's last event comes after its row has left the running count: a
// client that has its whole reply and then reads /metrics must not see the
// row still running (CI saw "rlhf_running_rows 1" there once).
TEST(Engine, ARowIsFreeWhenItsLastEventArrives) {
  serve::Engine engine(load_model(), {}, {});
  const auto prompts = test_prompts(2);
  SamplingConfig s;
  s.max_new_tokens = 5;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto c = std::make_shared<Collected>();
    auto running_at_end = std::make_shared<size_t>(99);
    auto h = engine.submit({prompts[i], s, i}, [&engine, c, running_at_end](const serve::TokenEvent& ev) {
      if (ev.finish == serve::FinishReason::kRunning) return;
      *running_at_end = engine.stats().running;
      c->done.set_value();
    });
    ASSERT_TRUE(h);
    wait(c);
    EXPECT_EQ(*running_at_end, 0u) << "request " << i;
  }
}

TEST(Engine, MergedCacheKeepsRowsRightAligned) {
  GPT model = load_model();
  auto fill = [&](int64_t rows, int64_t len, float base) {
    KVCache c = model->make_cache(rows, len + 2);
    for (size_t l = 0; l < c.k.size(); ++l) {
      c.k[l].narrow(2, 0, len).fill_(base + l);
      c.v[l].narrow(2, 0, len).fill_(-base - l);
    }
    c.key_mask.narrow(1, 0, len).fill_(1);
    c.length = len;
    return c;
  };
  KVCache old = fill(3, 6, 1);
  old.key_mask[0].narrow(0, 0, 2).fill_(0);  // row 0 holds 4 tokens
  KVCache added = fill(1, 9, 50);
  // Keep rows 0 (4 tokens) and 2 (6 tokens), add a 9-token row.
  KVCache m = serve::merge_caches({{&old, 0, 4}, {&old, 2, 6}, {&added, 0, 9}}, 5, 128);
  EXPECT_EQ(m.length, 9);
  EXPECT_EQ(m.key_mask.size(0), 3);
  EXPECT_EQ(m.key_mask.size(1), 14);
  EXPECT_EQ(m.key_mask[0].narrow(0, 0, 9).sum().item<int64_t>(), 4);
  EXPECT_EQ(m.key_mask[0].narrow(0, 5, 4).sum().item<int64_t>(), 4);  // right-aligned
  EXPECT_EQ(m.key_mask[1].narrow(0, 3, 6).sum().item<int64_t>(), 6);
  EXPECT_EQ(m.key_mask[2].narrow(0, 0, 9).sum().item<int64_t>(), 9);
  EXPECT_FLOAT_EQ(m.k[1][2].narrow(1, 0, 9).mean().item<float>(), 51.0f);
  EXPECT_FLOAT_EQ(m.k[0][1].narrow(1, 3, 6).mean().item<float>(), 1.0f);
}

TEST(OpenAi, RequestsAreCheckedField_by_field) {
  serve::RequestLimits limits;
  auto status_of = [&](const std::string& body) {
    try {
      serve::parse_chat_request(body, limits);
    } catch (const serve::ApiError& e) {
      return std::to_string(e.status()) + " " + e.param() + ": " + e.what();
    }
    return std::string("ok");
  };
  EXPECT_EQ(status_of(R"({"messages":[{"role":"user","content":"hi"}]})"), "ok");
  EXPECT_NE(status_of("{nope").find("400"), std::string::npos);
  EXPECT_NE(status_of("[1,2]").find("must be a JSON object"), std::string::npos);
  EXPECT_NE(status_of(R"({"messages":"hi"})").find("messages"), std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"wizard","content":"hi"}]})").find("unknown role 'wizard'"), std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"user","content":5}]})").find("messages[0].content"), std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})").find("temperature"),
            std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":1e30})").find("max_tokens"),
            std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"user","content":"x"}],"seed":1e400})").find("400"), std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"user","content":"x"}],"n":99})").find("\"n\""), std::string::npos);
  EXPECT_NE(status_of("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}").find("400"), std::string::npos);
  EXPECT_NE(status_of(R"({"messages":[{"role":"user","content":"x"}],"stop":[1]})").find("stop"), std::string::npos);
  // Parts and the newer "developer" role are accepted.
  auto r = serve::parse_chat_request(
      R"({"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"stream":true,"stream_options":{"include_usage":true},"seed":-3})",
      limits);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(*r.seed, -3);
}

TEST(OpenAi, ReplyDecoderHoldsBackStopStringsAndSplitCharacters) {
  const Tokenizer& tok = fixture().tokenizer;
  const std::string reply = "Thanks for waiting. Your order ships today. Anything else?";
  const std::vector<int32_t> ids = tok.encode(reply);
  serve::ReplyDecoder d(tok, {"ships"});
  std::string streamed;
  for (int32_t id : ids) {
    streamed += d.push(id);
    if (d.stopped()) break;
  }
  streamed += d.finish();
  EXPECT_TRUE(d.stopped());
  EXPECT_EQ(streamed, "Thanks for waiting. Your order ");
  EXPECT_EQ(d.text(), streamed);
  serve::ReplyDecoder plain(tok, {});
  std::string all;
  for (int32_t id : ids) all += plain.push(id);
  all += plain.finish();
  EXPECT_EQ(all, reply);
  EXPECT_EQ(serve::incomplete_utf8_tail("ab\xe2\x82"), 2u);
  EXPECT_EQ(serve::incomplete_utf8_tail("ab\xe2\x82\xac"), 0u);
  EXPECT_EQ(serve::incomplete_utf8_tail("\xf0\x9f"), 2u);
  EXPECT_EQ(serve::to_valid_utf8("a\xfb\xe2\x82\xac\xc0\xafz\xed\xa0\x80"),
            "a\xef\xbf\xbd\xe2\x82\xac\xef\xbf\xbd\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

// --- the HTTP server, in this process ---

struct Running {
  std::unique_ptr<serve::ChatServer> server;
  std::thread thread;
  int port = 0;
  explicit Running(serve::ServeConfig c) {
    c.port = 0;
    server = std::make_unique<serve::ChatServer>(c);
    port = server->port();
    thread = std::thread([this] { server->run(); });
  }
  ~Running() {
    server->stop();
    thread.join();
  }
};

serve::ServeConfig base_config() {
  serve::ServeConfig c;
  c.checkpoint = fixture().checkpoint;
  c.model_name = "tiny";
  c.threads = 1;
  return c;
}

struct Reply {
  int status = 0;
  std::string body;
  std::string content_type;
};

Reply request(int port, http::verb verb, const std::string& target, const std::string& body = "",
              const std::string& key = "") {
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  http::request<http::string_body> req(verb, target, 11);
  req.set(http::field::host, "127.0.0.1");
  if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
  }
  http::write(socket, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(socket, buffer, parser);
  auto res = parser.release();
  return {static_cast<int>(res.result_int()), res.body(), std::string(res[http::field::content_type])};
}

Reply post(int port, const std::string& target, const Json& body, const std::string& key = "") {
  return request(port, http::verb::post, target, body.dump(), key);
}

// The text of a streamed chat reply, per choice, from its SSE body.
std::vector<std::string> stream_texts(const std::string& sse, int n, bool* done = nullptr) {
  std::vector<std::string> out(n);
  size_t at = 0;
  while ((at = sse.find("data: ", at)) != std::string::npos) {
    const size_t end = sse.find("\n\n", at);
    const std::string data = sse.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      if (done) *done = true;
      continue;
    }
    const Json j = Json::parse(data);
    for (const auto& c : j["choices"]) {
      if (c["delta"].contains("content")) out[c["index"].get<int>()] += c["delta"]["content"].get<std::string>();
    }
  }
  return out;
}

Json chat_body(const std::string& text, int max_tokens = 24, bool stream = false) {
  return {{"model", "tiny"},
          {"messages", {{{"role", "user"}, {"content", text}}}},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"stream", stream}};
}

TEST(Server, EndpointsAndErrorsInOpenAiShape) {
  Running s(base_config());
  auto models = request(s.port, http::verb::get, "/v1/models");
  EXPECT_EQ(models.status, 200);
  EXPECT_EQ(Json::parse(models.body)["data"][0]["id"], "tiny");
  EXPECT_EQ(request(s.port, http::verb::get, "/health").status, 200);
  auto page = request(s.port, http::verb::get, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("/v1/chat/completions"), std::string::npos);

  auto r = post(s.port, "/v1/chat/completions", chat_body("Where is my order?"));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 3);
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 24);
  EXPECT_TRUE(j["choices"][0]["finish_reason"] == "stop" || j["choices"][0]["finish_reason"] == "length");

  auto completions = post(s.port, "/v1/completions", {{"prompt", "Your order"}, {"max_tokens", 5}, {"temperature", 0}});
  ASSERT_EQ(completions.status, 200) << completions.body;
  EXPECT_EQ(Json::parse(completions.body)["object"], "text_completion");

  auto error = [&](const Reply& e, int status, const std::string& needle) {
    EXPECT_EQ(e.status, status) << e.body;
    const Json b = Json::parse(e.body);
    ASSERT_TRUE(b.contains("error")) << e.body;
    EXPECT_NE(b["error"]["message"].get<std::string>().find(needle), std::string::npos) << e.body;
    EXPECT_TRUE(b["error"].contains("type") && b["error"].contains("code") && b["error"].contains("param"));
  };
  error(request(s.port, http::verb::post, "/v1/chat/completions", "{\"messages\": [oops"), 400, "not valid JSON");
  error(post(s.port, "/v1/chat/completions", {{"messages", {{{"role", "robot"}, {"content", "x"}}}}}), 400, "robot");
  error(post(s.port, "/v1/chat/completions", {{"messages", 3}}), 400, "messages");
  error(post(s.port, "/v1/chat/completions", chat_body("x", 500)), 400, "maximum context length is 128");
  error(post(s.port, "/v1/chat/completions", chat_body(std::string(3000, 'a'))), 400, "maximum context length is 128");
  Json wrong_model = chat_body("x");
  wrong_model["model"] = "gpt-9";
  error(post(s.port, "/v1/chat/completions", wrong_model), 404, "gpt-9");
  error(request(s.port, http::verb::get, "/v1/nothing"), 404, "no such endpoint");
  error(request(s.port, http::verb::get, "/v1/chat/completions"), 405, "POST");
  error(post(s.port, "/v1/feedback", {{"id", "x"}, {"rating", "up"}}), 400, "--log_conversations");

  auto metrics = request(s.port, http::verb::get, "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("rlhf_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}"), std::string::npos);
  EXPECT_NE(metrics.body.find("rlhf_time_to_first_token_seconds_bucket"), std::string::npos);
  EXPECT_NE(metrics.body.find("rlhf_batch_occupancy"), std::string::npos);
}

TEST(Server, ThirtyTwoStreamingClientsGetWhatEachGetsAlone) {
  serve::ServeConfig c = base_config();
  c.threads = 0;
  Running s(c);
  const int clients = 32;
  auto body = [](int i) {
    std::string text = "Order #" + std::to_string(20000 + i) + " never arrived.";
    for (int r = 0; r < i % 4; ++r) text += " Please help.";
    return chat_body(text, 32, true);
  };
  std::vector<std::string> alone;
  for (int i = 0; i < clients; ++i) {
    auto r = post(s.port, "/v1/chat/completions", body(i));
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.content_type.find("text/event-stream"), std::string::npos);
    bool done = false;
    alone.push_back(stream_texts(r.body, 1, &done)[0]);
    EXPECT_TRUE(done);
  }
  std::vector<std::future<std::string>> together;
  for (int i = 0; i < clients; ++i) {
    together.push_back(std::async(std::launch::async, [&, i] {
      auto r = post(s.port, "/v1/chat/completions", body(i));
      bool done = false;
      auto t = stream_texts(r.body, 1, &done)[0];
      return r.status == 200 && done ? t : std::string("<failed: ") + r.body + ">";
    }));
  }
  for (int i = 0; i < clients; ++i) EXPECT_EQ(together[i].get(), alone[i]) << "client " << i;
}

// Raw sockets for the hostile cases.
int raw_connect(int port) { return test::connect_loopback(port); }

// Everything the server sends until it closes (or 20 s pass).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST(Server, HostileClientsGetTheirErrorOrAreClosedAndOthersAreServed) {
  serve::ServeConfig c = base_config();
  c.read_timeout_s = 2;
  Running s(c);
  // A 100 MB body: refused on its Content-Length, before it is read.
  {
    const int fd = raw_connect(s.port);
    const std::string head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n";
    ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
    const std::string chunk(1 << 16, 'a');
    for (int i = 0; i < 64; ++i) {
      if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
    }
    const std::string got = read_all(fd);
    ::close(fd);
    EXPECT_NE(got.find("413"), std::string::npos) << got.substr(0, 200);
  }
  // Garbage instead of HTTP.
  {
    const int fd = raw_connect(s.port);
    const std::string junk = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n";
    ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    const std::string got = read_all(fd);
    ::close(fd);
    EXPECT_NE(got.find("400"), std::string::npos);
  }
  // 1,000 idle connections and one that sends a byte a second, while a
  // normal client is served.
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    const int fd = raw_connect(s.port);
    ASSERT_GE(fd, 0) << "connection " << i;
    idle.push_back(fd);
  }
  std::atomic<bool> slow_closed{false};
  std::thread slow([&] {
    const int fd = raw_connect(s.port);
    const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n";
    for (char ch : req) {
      if (::send(fd, &ch, 1, MSG_NOSIGNAL) < 0) {
        slow_closed = true;
        break;
      }
      char probe;
      timeval tv{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (::recv(fd, &probe, 1, 0) == 0) {
        slow_closed = true;
        break;
      }
    }
    ::close(fd);
  });
  auto r = post(s.port, "/v1/chat/completions", chat_body("Hello?", 8));
  EXPECT_EQ(r.status, 200) << r.body;
  slow.join();
  EXPECT_TRUE(slow_closed) << "a client sending one byte a second was not cut off";
  // The idle ones are closed after read_timeout_s.
  size_t closed = 0;
  for (int fd : idle) {
    char b;
    closed += ::recv(fd, &b, 1, 0) == 0;
    ::close(fd);
  }
  EXPECT_EQ(closed, idle.size());
  EXPECT_EQ(post(s.port, "/v1/chat/completions", chat_body("Still there?", 4)).status, 200);
}

TEST(Server, AClientThatLeavesFreesItsRow) {
  serve::ServeConfig c = base_config();
  c.checkpoint = fixture().long_checkpoint;
  c.engine.max_batch = 1;  // the next request needs the row the first one held
  Running s(c);
  const int fd = raw_connect(s.port);
  const std::string body = chat_body("Tell me a long story.", 480, true).dump();
  const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  char buf[512];
  ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the stream has started
  ::close(fd);
  // The row is freed: a new request gets it and finishes.
  auto r = post(s.port, "/v1/chat/completions", chat_body("Hello?", 4));
  EXPECT_EQ(r.status, 200) << r.body;
  const std::string metrics = request(s.port, http::verb::get, "/metrics").body;
  EXPECT_NE(metrics.find("rlhf_cancelled_requests_total 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("rlhf_running_rows 0"), std::string::npos);
}

TEST(Server, KeysBeyondLoopbackAndFeedbackIntoTheLabelStore) {
  const std::string db = join_path(temp_dir("serve_feedback"), "labels.sqlite");
  const std::string key = labels::new_rater_token();
  {
    labels::LabelStore store(db);
    store.add_rater("app", labels::sha256_hex(key), "api");
  }
  serve::ServeConfig c = base_config();
  c.labels = db;
  c.log_conversations = true;
  c.require_keys = true;
  serve::ServeConfig open = c;
  open.labels.clear();
  open.log_conversations = false;
  open.require_keys = false;
  open.host = "0.0.0.0";
  EXPECT_NE(test::error_of([&] { serve::ChatServer x(open); }).find("needs API keys"), std::string::npos);

  Running s(c);
  EXPECT_EQ(post(s.port, "/v1/chat/completions", chat_body("hi")).status, 401);
  EXPECT_EQ(post(s.port, "/v1/chat/completions", chat_body("hi"), "wrong").status, 401);
  Json two = chat_body("My parcel is late.", 16);
  two["n"] = 2;
  two["temperature"] = 1.0;
  two["seed"] = 5;
  auto r = post(s.port, "/v1/chat/completions", two, key);
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = Json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 2u);
  const std::string id = j["id"];
  auto fb = post(s.port, "/v1/feedback", {{"id", id}, {"preferred", 1}, {"comment", "second is kinder"}}, key);
  ASSERT_EQ(fb.status, 200) << fb.body;
  EXPECT_EQ(Json::parse(fb.body)["labels"].size(), 1u);
  // The same choice again writes nothing new.
  EXPECT_EQ(Json::parse(post(s.port, "/v1/feedback", {{"id", id}, {"preferred", 1}}, key).body)["labels"].size(), 0u);
  EXPECT_EQ(post(s.port, "/v1/feedback", {{"id", "chatcmpl-none"}, {"rating", "up"}}, key).status, 400);
  EXPECT_EQ(post(s.port, "/v1/feedback", {{"id", id}, {"index", 7}, {"rating", "up"}}, key).status, 400);
  EXPECT_EQ(post(s.port, "/v1/feedback", {{"id", id}, {"rating", "meh"}}, key).status, 400);

  // Thumbs: a lone thumb stays unpaired; up and down on one conversation's
  // replies become a comparison.
  Json other = two;
  other["seed"] = 6;  // other replies (the same ones would be the pair already labelled)
  auto r2 = post(s.port, "/v1/chat/completions", other, key);
  const std::string id2 = Json::parse(r2.body)["id"];
  EXPECT_EQ(post(s.port, "/v1/feedback", {{"id", id2}, {"index", 0}, {"rating", "down"}}, key).status, 200);
  auto single = post(s.port, "/v1/chat/completions", chat_body("Cancel my plan."), key);
  const std::string id3 = Json::parse(single.body)["id"];
  EXPECT_EQ(post(s.port, "/v1/feedback", {{"id", id3}, {"rating", "up"}}, key).status, 200);

  labels::LabelStore store(db);
  const auto app = store.rater_by_name("app");
  ASSERT_TRUE(app);
  const auto all = store.labels();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].rater_id, app->id);
  EXPECT_EQ(all[0].rationale, "second is kinder");
  const auto records = store.export_records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["chosen"], j["choices"][1]["message"]["content"]);
  // Which reply is id2's choice 0 is in the store; a thumb up on choice 1
  // pairs with it.
  EXPECT_EQ(labels::unpaired_feedback(store).size(), 2u);
  EXPECT_EQ(post(s.port, "/v1/feedback", {{"id", id2}, {"index", 1}, {"rating", "up"}}, key).status, 200);
  EXPECT_EQ(store.labels().size(), 2u);
  EXPECT_EQ(labels::unpaired_feedback(store).size(), 1u);
  const auto counts = labels::feedback_counts(store);
  EXPECT_EQ(counts.up, 2u);
  EXPECT_EQ(counts.down, 1u);
  EXPECT_EQ(counts.paired, 2u);
}

TEST(Server, ShutdownCutsRunningStreamsAtTheDeadline) {
  serve::ServeConfig c = base_config();
  c.shutdown_grace_s = 0.2;
  auto s = std::make_unique<Running>(c);
  // No stop: run the whole context so the stream is running at shutdown.
  Json body = chat_body("Tell me everything.", 100, true);
  auto pending = std::async(std::launch::async, [&] { return post(s->port, "/v1/chat/completions", body); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto t0 = std::chrono::steady_clock::now();
  s.reset();  // stop() and join
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 5.0);
  auto r = pending.get();
  EXPECT_EQ(r.status, 200);
  bool done = false;
  stream_texts(r.body, 1, &done);
  EXPECT_TRUE(done);
}

// Serving to retraining: feedback given through the API trains a reward
// model, and the next round's feedback continues it (the README's loop).
TEST(Loop, FeedbackThroughTheApiTrainsAndContinuesARewardModel) {
  const std::string dir = temp_dir("serve_loop");
  const std::string db = join_path(dir, "labels.sqlite");
  { labels::LabelStore store(db); }
  serve::ServeConfig c = base_config();
  c.checkpoint = fixture().long_checkpoint;
  c.labels = db;
  c.log_conversations = true;
  Running s(c);
  auto round = [&](int first, int count, bool thumbs) {
    for (int i = first; i < first + count; ++i) {
      Json body = chat_body("Order #" + std::to_string(30000 + i) + " arrived broken.", 12);
      body["n"] = 2;
      body["temperature"] = 1.0;
      body["seed"] = i;
      auto r = post(s.port, "/v1/chat/completions", body);
      ASSERT_EQ(r.status, 200) << r.body;
      const std::string id = Json::parse(r.body)["id"];
      if (thumbs) {
        ASSERT_EQ(post(s.port, "/v1/feedback", {{"id", id}, {"index", 1}, {"rating", "up"}}).status, 200);
        ASSERT_EQ(post(s.port, "/v1/feedback", {{"id", id}, {"index", 0}, {"rating", "down"}}).status, 200);
      } else {
        ASSERT_EQ(post(s.port, "/v1/feedback", {{"id", id}, {"preferred", 0}}).status, 200);
      }
    }
  };
  round(0, 8, false);
  auto last_label = [&] {
    labels::LabelStore store(db);
    return store.labels().back().id;
  };
  const int64_t first_round = last_label();
  const std::vector<std::string> common = {"--data.preferences=" + db, "--data.eval_fraction=0",
                                           "--train.batch_size=4", "--train.threads=1", "--train.log_interval=1"};
  auto train = [&](const std::string& init, const std::string& out, const std::string& since) {
    std::vector<std::string> args = {"rm", "train", "--init_from=" + init, "--out_dir=" + join_path(dir, out),
                                     "--data.since_label=" + since};
    args.insert(args.end(), common.begin(), common.end());
    const std::string log = join_path(dir, out + ".log");
    EXPECT_EQ(test::run_cli(args, log), 0) << read_file(log);
    return read_json_file(join_path(resolve_checkpoint(join_path(dir, out)), "trainer_state.json"));
  };
  const Json rm1 = train(fixture().long_checkpoint, "rm1", "0");
  EXPECT_EQ(rm1["train_pairs"], 8);
  EXPECT_EQ(rm1["last_label_id"], first_round);
  round(8, 6, true);  // thumbs up and down on each pair of replies
  const Json rm2 = train(join_path(dir, "rm1"), "rm2", "-1");
  EXPECT_EQ(rm2["train_pairs"], 6) << "continued on the new feedback only";
  EXPECT_EQ(rm2["last_label_id"], last_label());
}

// --- real clients, against `rlhf serve` ---

// Starts `rlhf serve` on a free port and returns the port (from its first line).
struct ServeProcess {
  pid_t pid = -1;
  int port = 0;
  std::string log;
  ServeProcess(std::vector<std::string> args, const std::string& dir, const std::string& checkpoint = "") {
    log = join_path(dir, "serve.log");
    std::vector<std::string> all = {"serve", "--checkpoint", checkpoint.empty() ? fixture().checkpoint : checkpoint,
                                    "--port", "0",
                                    "--model_name", "tiny", "--threads", "1"};
    all.insert(all.end(), args.begin(), args.end());
    pid = test::spawn_cli(all, log);
    port = test::wait_for_port(log, "http://127.0.0.1:");
  }
  ~ServeProcess() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      test::wait_exit(pid);
    }
  }
};

bool have(const std::string& program) {
  return std::system(("command -v " + program + " >/dev/null 2>&1").c_str()) == 0;
}

TEST(Clients, CurlAndTheOpenAiNodeSdk) {
  const std::string dir = temp_dir("serve_clients");
  ServeProcess s({}, dir);
  ASSERT_GT(s.port, 0) << read_file(s.log);
  ASSERT_TRUE(have("curl")) << "curl is missing: scripts/setup.sh installs it";
  const std::string base = "http://127.0.0.1:" + std::to_string(s.port);
  const std::string out = join_path(dir, "curl.json");
  const std::string curl = "curl -sS -o " + out + " -w '%{http_code}' " + base +
                           "/v1/chat/completions -H 'Content-Type: application/json' -d "
                           "'{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":8}'";
  FILE* p = popen(curl.c_str(), "r");
  char code[8] = {0};
  ASSERT_TRUE(p && fgets(code, sizeof code, p));
  pclose(p);
  EXPECT_STREQ(code, "200");
  EXPECT_EQ(Json::parse(read_file(out))["object"], "chat.completion");
  const std::string stream_out = join_path(dir, "curl_stream.txt");
  ASSERT_EQ(std::system(("curl -sSN -o " + stream_out + " " + base +
                         "/v1/chat/completions -H 'Content-Type: application/json' -d "
                         "'{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":8,"
                         "\"stream\":true}'")
                            .c_str()),
            0);
  EXPECT_NE(read_file(stream_out).find("data: [DONE]"), std::string::npos);

  const std::string sdk = join_path(test::source_dir(), ".deps/openai");
  ASSERT_TRUE(path_exists(join_path(sdk, "package.json"))) << "the OpenAI Node SDK is missing: run scripts/setup.sh";
  ASSERT_TRUE(have("node"));
  const std::string script = join_path(test::source_dir(), "tests/serve/openai_sdk.mjs");
  const std::string node_log = join_path(dir, "node.log");
  const int rc = std::system(("node " + script + " " + base + "/v1 " + sdk + " > " + node_log + " 2>&1").c_str());
  EXPECT_EQ(rc, 0) << read_file(node_log);
  EXPECT_NE(read_file(node_log).find("all OpenAI SDK checks passed"), std::string::npos) << read_file(node_log);
}

TEST(Clients, ChatPageInHeadlessChromium) {
  const std::string chromium = have("chromium") ? "chromium" : have("chromium-browser") ? "chromium-browser" : "";
  ASSERT_FALSE(chromium.empty()) << "Chromium is missing: scripts/setup.sh installs Debian's chromium for the tests";
  const std::string dir = temp_dir("serve_page");
  const std::string db = join_path(dir, "labels.sqlite");
  { labels::LabelStore store(db); }
  ServeProcess s({"--labels", db, "--log_conversations"}, dir, fixture().long_checkpoint);
  ASSERT_GT(s.port, 0) << read_file(s.log);
  const std::string script = join_path(test::source_dir(), "tests/serve/chat_page.mjs");
  const std::string ws = join_path(test::source_dir(), ".deps/ws");
  const std::string shot = join_path(dir, "chat_page.png");
  const std::string node_log = join_path(dir, "page.log");
  const int rc = std::system(("node " + script + " http://127.0.0.1:" + std::to_string(s.port) + "/ " + ws + " " +
                              chromium + " " + shot + " > " + node_log + " 2>&1")
                                 .c_str());
  ASSERT_EQ(rc, 0) << read_file(node_log) << read_file(s.log);
  EXPECT_GT(read_file(shot).size(), 10000u);
  // What the page did is in the label store: a thumb up and a two-reply choice.
  labels::LabelStore store(db);
  const auto counts = labels::feedback_counts(store);
  EXPECT_GE(counts.up, 1u);
  const auto users = store.rater_by_name("users");
  ASSERT_TRUE(users);
  const auto all = store.labels();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].rater_id, users->id);
  EXPECT_EQ(all[0].choice, labels::Choice::kB);  // the page clicked the second reply
}

}  // namespace
}  // namespace rlhf
