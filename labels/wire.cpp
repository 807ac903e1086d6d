#include "labels/wire.h"

#include <cstring>

#include "common/error.h"

namespace rlhf::labels {

std::string encode_frame(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  std::string out(4 + bytes.size(), '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 4, bytes.begin(), bytes.size());
  return out;
}

uint32_t decode_frame_length(const uint8_t header[4]) {
  return uint32_t(header[0]) | (uint32_t(header[1]) << 8) | (uint32_t(header[2]) << 16) | (uint32_t(header[3]) << 24);
}

DecodedMessage::DecodedMessage(const std::string& body, size_t max_bytes) {
  if (body.empty() || body.size() % sizeof(capnp::word) != 0)
    fail(ErrorKind::kData, "a frame of ", body.size(), " bytes is not a Cap'n Proto message (whole 8-byte words)");
  if (body.size() > max_bytes) fail(ErrorKind::kData, "a frame of ", body.size(), " bytes is over the limit of ", max_bytes);
  words_ = kj::heapArray<capnp::word>(body.size() / sizeof(capnp::word));
  std::memcpy(words_.begin(), body.data(), body.size());
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * words_.size() + 64;
  options.nestingLimit = 16;
  try {
    reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words_.asPtr(), options);
  } catch (const kj::Exception& e) {
    fail(ErrorKind::kData, "undecodable message: ", e.getDescription().cStr());
  }
}

std::string to_std(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
capnp::Text::Reader text(const std::string& s) { return capnp::Text::Reader(s.c_str(), s.size()); }

void write_task(wire::Task::Builder b, const RatingTask& t) {
  b.setComparisonId(t.comparison_id);
  auto conv = b.initConversation(static_cast<unsigned>(t.conversation.size()));
  for (size_t i = 0; i < t.conversation.size(); ++i) {
    conv[i].setRole(text(t.conversation[i].role));
    conv[i].setContent(text(t.conversation[i].content));
  }
  auto reps = b.initReplies(static_cast<unsigned>(t.replies.size()));
  for (size_t i = 0; i < t.replies.size(); ++i) {
    reps[i].setCandidateId(t.replies[i].candidate_id);
    reps[i].setText(text(t.replies[i].text));
    reps[i].setFinished(t.replies[i].finished);
  }
  b.setMode(t.ranking ? wire::Task::Mode::RANKING : wire::Task::Mode::PAIR);
  b.setAskRatings(t.ask_ratings);
  b.setRemaining(t.remaining);
}

RatingTask read_task(wire::Task::Reader r) {
  RatingTask t;
  t.comparison_id = r.getComparisonId();
  for (auto m : r.getConversation()) t.conversation.push_back({to_std(m.getRole()), to_std(m.getContent())});
  for (auto p : r.getReplies()) t.replies.push_back({p.getCandidateId(), to_std(p.getText()), p.getFinished()});
  t.ranking = r.getMode() == wire::Task::Mode::RANKING;
  t.ask_ratings = r.getAskRatings();
  t.remaining = r.getRemaining();
  return t;
}

void write_label(wire::LabelMsg::Builder b, const Label& l) {
  b.setComparisonId(l.comparison_id);
  b.setClientId(text(l.client_id));
  b.setChoice(choice_name(l.choice));
  auto shown = b.initShownOrder(static_cast<unsigned>(l.shown_order.size()));
  for (size_t i = 0; i < l.shown_order.size(); ++i) shown.set(static_cast<unsigned>(i), l.shown_order[i]);
  auto ranking = b.initRanking(static_cast<unsigned>(l.ranking.size()));
  for (size_t i = 0; i < l.ranking.size(); ++i) ranking.set(static_cast<unsigned>(i), l.ranking[i]);
  auto ratings = b.initRatings(static_cast<unsigned>(l.ratings.size()));
  for (size_t i = 0; i < l.ratings.size(); ++i) ratings.set(static_cast<unsigned>(i), l.ratings[i]);
  b.setStrength(l.strength);
  b.setRationale(text(l.rationale));
}

Label read_label(wire::LabelMsg::Reader r) {
  Label l;
  l.comparison_id = r.getComparisonId();
  l.client_id = to_std(r.getClientId());
  const std::string choice = to_std(r.getChoice());
  const auto c = parse_choice(choice);
  if (!c) fail(ErrorKind::kData, "choice '", choice, "' is not one of a, b, tie, both_bad, ranking");
  l.choice = *c;
  for (int64_t id : r.getShownOrder()) l.shown_order.push_back(id);
  for (int32_t v : r.getRanking()) l.ranking.push_back(v);
  for (int32_t v : r.getRatings()) l.ratings.push_back(v);
  l.strength = r.getStrength();
  l.rationale = to_std(r.getRationale());
  return l;
}

void write_progress(wire::RaterStats::Builder b, const RaterProgress& p) {
  b.setRater(text(p.rater));
  b.setLabels(p.labels);
  b.setRemaining(p.remaining);
  b.setGoldSeen(p.gold_seen);
  b.setGoldCorrect(p.gold_correct);
}

RaterProgress read_progress(wire::RaterStats::Reader r) {
  return {to_std(r.getRater()), r.getLabels(), r.getRemaining(), r.getGoldSeen(), r.getGoldCorrect()};
}

}  // namespace rlhf::labels
