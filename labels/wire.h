// Frames and conversions for the label service's Cap'n Proto protocol
// (labels/protocol.capnp): a 4-byte little-endian length, then one flat,
// unpacked message. Decoding uses bounded traversal and nesting limits, so a
// hostile message costs at most its own size.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <memory>
#include <string>

#include "labels/desk.h"
#include "labels/protocol.capnp.h"

namespace rlhf::labels {

constexpr size_t kDefaultMaxFrameBytes = 1 << 20;

// Header + message bytes, ready to write.
std::string encode_frame(capnp::MessageBuilder& message);
uint32_t decode_frame_length(const uint8_t header[4]);

// Holds a decoded message (the reader points into `words`).
class DecodedMessage {
 public:
  // Throws Error(kData) saying what is wrong when `body` is not one valid message.
  DecodedMessage(const std::string& body, size_t max_bytes);
  template <class T> typename T::Reader root() { return reader_->getRoot<T>(); }

 private:
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

std::string to_std(capnp::Text::Reader t);
capnp::Text::Reader text(const std::string& s);

void write_task(wire::Task::Builder b, const RatingTask& t);
RatingTask read_task(wire::Task::Reader r);
void write_label(wire::LabelMsg::Builder b, const Label& l);
// The rater is set by the server from the connection, never from the message.
Label read_label(wire::LabelMsg::Reader r);
void write_progress(wire::RaterStats::Builder b, const RaterProgress& p);
RaterProgress read_progress(wire::RaterStats::Reader r);

}  // namespace rlhf::labels
