#include "feedback-ui/backend.h"

#include "common/error.h"
#include "labels/service.h"
#include "labels/store.h"

namespace rlhf::ui {
namespace {

class LocalBackend : public RatingBackend {
 public:
  LocalBackend(const std::string& db, const std::string& name, const labels::DeskConfig& desk)
      : store_(db), desk_(store_, desk) {
    auto r = store_.rater_by_name(name);
    if (!r) {
      store_.add_rater(name, "", "human");
      r = store_.rater_by_name(name);
    }
    rater_ = *r;
  }
  std::string rater() const override { return rater_.name; }
  std::optional<labels::RatingTask> next_task(const std::vector<int64_t>& exclude, int64_t prefer) override {
    return desk_.next_task(rater_, exclude, prefer);
  }
  int64_t submit(const labels::Label& label) override { return desk_.submit(rater_, label); }
  int64_t undo() override { return desk_.undo(rater_); }
  labels::RaterProgress progress() override { return desk_.progress(rater_); }

 private:
  labels::LabelStore store_;
  labels::RatingDesk desk_;
  labels::Rater rater_;
};

class RemoteBackend : public RatingBackend {
 public:
  RemoteBackend(std::string host, int port, std::string token, std::string tls_ca)
      : host_(std::move(host)), port_(port), token_(std::move(token)), tls_ca_(std::move(tls_ca)) {
    connect();
  }
  std::string rater() const override { return name_; }
  std::optional<labels::RatingTask> next_task(const std::vector<int64_t>& exclude, int64_t prefer) override {
    return call([&] { return client().next_task(exclude, prefer); });
  }
  int64_t submit(const labels::Label& label) override {
    return call([&] { return client().submit(label); });
  }
  int64_t undo() override {
    return call([&] { return client().undo(); });
  }
  labels::RaterProgress progress() override {
    return call([&] { return client().stats(); });
  }
  void reconnect() override {
    client_.reset();
    connect();
  }

 private:
  void connect() {
    client_ = std::make_unique<labels::LabelClient>(host_, port_, token_, 30.0, tls_ca_);
    name_ = client_->rater();
  }
  labels::LabelClient& client() {
    if (!client_) fail(ErrorKind::kNetwork, "not connected to the label service at ", host_, ":", port_);
    return *client_;
  }
  // A lost connection drops the client so the next call reconnects first.
  template <class F> auto call(F f) -> decltype(f()) {
    try {
      return f();
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNetwork) client_.reset();
      throw;
    }
  }
  std::string host_;
  int port_;
  std::string token_, tls_ca_, name_;
  std::unique_ptr<labels::LabelClient> client_;
};

}  // namespace

std::unique_ptr<RatingBackend> make_local_backend(const std::string& db, const std::string& name,
                                                  const labels::DeskConfig& desk) {
  return std::make_unique<LocalBackend>(db, name, desk);
}

std::unique_ptr<RatingBackend> make_remote_backend(const std::string& host, int port, const std::string& token,
                                                   const std::string& tls_ca) {
  return std::make_unique<RemoteBackend>(host, port, token, tls_ca);
}

}  // namespace rlhf::ui
