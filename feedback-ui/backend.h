// Where the rater tool gets tasks and sends labels: a label service over the
// network (--server) or a local label store (--db). The session logic in
// rater_session.h sees only this interface, so it is tested without either.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "labels/desk.h"

namespace rlhf::ui {

class RatingBackend {
 public:
  virtual ~RatingBackend() = default;
  virtual std::string rater() const = 0;
  // These throw rlhf::Error: kNetwork when the connection is lost (the
  // session keeps its unsent labels and retries), kData when refused.
  virtual std::optional<labels::RatingTask> next_task(const std::vector<int64_t>& exclude, int64_t prefer) = 0;
  virtual int64_t submit(const labels::Label& label) = 0;
  virtual int64_t undo() = 0;
  virtual labels::RaterProgress progress() = 0;
  // Re-establishes a lost connection; throws kNetwork while it cannot.
  virtual void reconnect() {}
};

// Rates a local store as rater `name` (created as a human rater if new).
std::unique_ptr<RatingBackend> make_local_backend(const std::string& db, const std::string& name,
                                                  const labels::DeskConfig& desk);
// Talks to `rlhf serve-labels` at host:port with the rater's token; over
// TLS when `tls_ca` names the authority of the service's certificate.
std::unique_ptr<RatingBackend> make_remote_backend(const std::string& host, int port, const std::string& token,
                                                   const std::string& tls_ca = "");

}  // namespace rlhf::ui
