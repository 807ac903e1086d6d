#include "labels/store.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "common/error.h"
#include "common/hash.h"
#include "common/jsonl.h"

namespace rlhf::labels {
namespace {

// Each migration takes the schema from version i to i + 1. Never edit one
// that has shipped: add a new one.
const char* const kMigrations[] = {
    // 1: the original schema.
    R"sql(
CREATE TABLE raters(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT, kind TEXT NOT NULL DEFAULT 'human',
  created_at TEXT NOT NULL);
CREATE TABLE prompts(
  id INTEGER PRIMARY KEY, messages TEXT NOT NULL, source TEXT NOT NULL, metadata TEXT,
  hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE candidates(
  id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id), text TEXT NOT NULL,
  finished INTEGER NOT NULL DEFAULT 1, policy TEXT NOT NULL DEFAULT '', sampling TEXT, created_at TEXT NOT NULL,
  UNIQUE(prompt_id, text));
CREATE TABLE comparisons(
  id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id), candidates TEXT NOT NULL,
  candidate_key TEXT NOT NULL UNIQUE, required_raters INTEGER NOT NULL DEFAULT 1,
  is_gold INTEGER NOT NULL DEFAULT 0, gold_answer TEXT, created_at TEXT NOT NULL);
CREATE TABLE labels(
  id INTEGER PRIMARY KEY, comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
  rater_id INTEGER NOT NULL REFERENCES raters(id), choice TEXT NOT NULL, ranking TEXT, ratings TEXT,
  strength INTEGER NOT NULL DEFAULT 0, margin REAL, rationale TEXT NOT NULL DEFAULT '', shown_order TEXT,
  created_at TEXT NOT NULL, UNIQUE(comparison_id, rater_id));
CREATE INDEX labels_by_rater ON labels(rater_id, id);
CREATE INDEX candidates_by_prompt ON candidates(prompt_id);
)sql",
    // 2: idempotent resends from the rater tool.
    R"sql(
ALTER TABLE labels ADD COLUMN client_id TEXT;
CREATE UNIQUE INDEX labels_by_client_id ON labels(rater_id, client_id) WHERE client_id IS NOT NULL;
)sql",
    // 3: replies served by `rlhf serve` and what their users said of them.
    R"sql(
CREATE TABLE served(
  completion_id TEXT NOT NULL, choice INTEGER NOT NULL, candidate_id INTEGER NOT NULL REFERENCES candidates(id),
  created_at TEXT NOT NULL, PRIMARY KEY(completion_id, choice));
CREATE TABLE feedback(
  id INTEGER PRIMARY KEY, candidate_id INTEGER NOT NULL REFERENCES candidates(id),
  rater_id INTEGER NOT NULL REFERENCES raters(id), thumb INTEGER NOT NULL DEFAULT 0, comment TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL, UNIQUE(candidate_id, rater_id));
)sql",
    // 4: what the rating desk needs without scanning the store: each
    // comparison's label count (kept by triggers, with an index of the open
    // ones) and the tasks handed to raters (offers), shared by every process.
    R"sql(
ALTER TABLE comparisons ADD COLUMN label_count INTEGER NOT NULL DEFAULT 0;
UPDATE comparisons SET label_count = (SELECT COUNT(*) FROM labels WHERE labels.comparison_id = comparisons.id);
CREATE TRIGGER labels_counted AFTER INSERT ON labels BEGIN
  UPDATE comparisons SET label_count = label_count + 1 WHERE id = NEW.comparison_id; END;
CREATE TRIGGER labels_uncounted AFTER DELETE ON labels BEGIN
  UPDATE comparisons SET label_count = label_count - 1 WHERE id = OLD.comparison_id; END;
CREATE INDEX comparisons_open ON comparisons(id) WHERE label_count < required_raters AND is_gold = 0;
CREATE INDEX comparisons_gold ON comparisons(id) WHERE is_gold = 1;
CREATE TABLE offers(
  comparison_id INTEGER NOT NULL REFERENCES comparisons(id), rater_id INTEGER NOT NULL REFERENCES raters(id),
  expires_at REAL NOT NULL, PRIMARY KEY(comparison_id, rater_id));
)sql",
    // 5: active selection: open comparisons are served by priority (highest
    // first, then oldest), and each comparison carries the strategy and the
    // score that placed it, which its labels keep.
    R"sql(
ALTER TABLE comparisons ADD COLUMN priority REAL NOT NULL DEFAULT 0;
ALTER TABLE comparisons ADD COLUMN selection TEXT;
ALTER TABLE comparisons ADD COLUMN selection_score REAL;
ALTER TABLE labels ADD COLUMN selection TEXT;
ALTER TABLE labels ADD COLUMN selection_score REAL;
CREATE INDEX comparisons_open_by_priority ON comparisons(priority DESC, id) WHERE label_count < required_raters AND is_gold = 0;
)sql",
};
constexpr int kLatest = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));

std::string to_text(const Json& j) { return j.is_null() ? std::string() : j.dump(); }
Json from_text(const std::string& s) { return s.empty() ? Json() : parse_json(s, "the label store"); }

template <class T>
std::string list_json(const std::vector<T>& v) {
  return Json(v).dump();
}
template <class T>
std::vector<T> list_from(const std::string& s) {
  if (s.empty()) return {};
  return parse_json(s, "the label store").get<std::vector<T>>();
}

std::string candidate_key(std::vector<int64_t> ids) {
  std::sort(ids.begin(), ids.end());
  return list_json(ids);
}

// A prompt as messages: a string becomes one user turn.
Json prompt_messages(const Json& prompt) {
  if (prompt.is_string()) return Json::array({{{"role", "user"}, {"content", prompt.get<std::string>()}}});
  return prompt;
}

// A response given as text or as TRL's [{"role": "assistant", "content"}].
std::string response_text(const Json& r, const std::string& path, size_t line, const char* field) {
  if (r.is_string()) return r.get<std::string>();
  if (r.is_array() && !r.empty() && r.back().is_object() && r.back().contains("content") &&
      r.back()["content"].is_string()) {
    return r.back()["content"].get<std::string>();
  }
  jsonl_error(path, line, str_cat("\"", field, "\" must be a string (or a list of messages)"));
}

void check_prompt(const Json& row, const std::string& path, size_t line) {
  if (!row.contains("prompt")) jsonl_error(path, line, "missing the field \"prompt\"");
  const Json& p = row["prompt"];
  if (p.is_string()) return;
  if (!p.is_array() || p.empty()) jsonl_error(path, line, "\"prompt\" must be a string or a list of messages");
  for (const auto& m : p) {
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["content"].is_string()) {
      jsonl_error(path, line, "each message in \"prompt\" needs \"role\" and a string \"content\"");
    }
  }
}

}  // namespace

const char* choice_name(Choice c) {
  switch (c) {
    case Choice::kA: return "a";
    case Choice::kB: return "b";
    case Choice::kTie: return "tie";
    case Choice::kBothBad: return "both_bad";
    case Choice::kRanking: return "ranking";
  }
  return "?";
}

std::optional<Choice> parse_choice(const std::string& s) {
  for (Choice c : {Choice::kA, Choice::kB, Choice::kTie, Choice::kBothBad, Choice::kRanking}) {
    if (s == choice_name(c)) return c;
  }
  return std::nullopt;
}

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

LabelStore::LabelStore(const std::string& path) : db_(path) { migrate(); }

int LabelStore::latest_schema_version() { return kLatest; }

int LabelStore::schema_version() {
  sql::Statement s(db_, "PRAGMA user_version");
  s.step();
  return static_cast<int>(s.int64(0));
}

void LabelStore::migrate() {
  sql::Transaction tx(db_);
  const int version = schema_version();
  if (version > kLatest) {
    fail(ErrorKind::kData, "the label store '", db_.path(), "' has schema version ", version,
         ", newer than this program knows (", kLatest, "). Upgrade rlhf to open it.");
  }
  for (int v = version; v < kLatest; ++v) db_.exec(kMigrations[v]);
  if (version < kLatest) {
    // PRAGMA cannot take a bound parameter; the value is our own constant.
    const std::string pragma = "PRAGMA user_version = " + std::to_string(kLatest);
    db_.exec(pragma.c_str());
  }
  tx.commit();
}

int64_t LabelStore::add_prompt(const Json& source, const Json& metadata) {
  const Json messages = prompt_messages(source);
  const std::string hash = std::to_string(fnv1a64(messages.dump()));
  sql::Transaction tx(db_);
  sql::Statement find(db_, "SELECT id FROM prompts WHERE hash = ?");
  find.bind(1, hash);
  if (find.step()) return find.int64(0);
  sql::Statement ins(db_, "INSERT INTO prompts(messages, source, metadata, hash, created_at) VALUES(?,?,?,?,?)");
  ins.bind(1, messages.dump()).bind(2, source.dump()).bind(3, to_text(metadata)).bind(4, hash).bind(5, utc_now());
  ins.run();
  const int64_t id = db_.last_insert_id();
  tx.commit();
  return id;
}

Prompt LabelStore::prompt(int64_t id) {
  sql::Statement s(db_, "SELECT id, messages, metadata FROM prompts WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) fail(ErrorKind::kData, "label store '", db_.path(), "': no prompt ", id);
  return Prompt{s.int64(0), parse_json(s.text(1), "the label store"), from_text(s.text(2))};
}

int64_t LabelStore::add_candidate(int64_t prompt_id, const std::string& text, bool finished,
                                  const std::string& policy, const Json& sampling) {
  sql::Transaction tx(db_);
  sql::Statement find(db_, "SELECT id FROM candidates WHERE prompt_id = ? AND text = ?");
  find.bind(1, prompt_id).bind(2, text);
  if (find.step()) return find.int64(0);
  sql::Statement ins(db_,
                     "INSERT INTO candidates(prompt_id, text, finished, policy, sampling, created_at) VALUES(?,?,?,?,?,?)");
  ins.bind(1, prompt_id).bind(2, text).bind(3, int64_t{finished}).bind(4, policy).bind(5, to_text(sampling)).bind(6, utc_now());
  ins.run();
  const int64_t id = db_.last_insert_id();
  tx.commit();
  return id;
}

Candidate LabelStore::candidate(int64_t id) {
  sql::Statement s(db_, "SELECT id, prompt_id, text, finished, policy, sampling FROM candidates WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) fail(ErrorKind::kData, "label store '", db_.path(), "': no candidate ", id);
  return Candidate{s.int64(0), s.int64(1), s.text(2), s.int64(3) != 0, s.text(4), from_text(s.text(5))};
}

std::vector<Candidate> LabelStore::candidates_of(int64_t prompt_id) {
  sql::Statement s(db_, "SELECT id, prompt_id, text, finished, policy, sampling FROM candidates WHERE prompt_id = ? ORDER BY id");
  s.bind(1, prompt_id);
  std::vector<Candidate> out;
  while (s.step()) out.push_back({s.int64(0), s.int64(1), s.text(2), s.int64(3) != 0, s.text(4), from_text(s.text(5))});
  return out;
}

std::optional<int64_t> LabelStore::add_comparison(int64_t prompt_id, const std::vector<int64_t>& candidates,
                                                  int required_raters, bool is_gold, const Json& gold_answer) {
  RLHF_CHECK(candidates.size() >= 2, "a comparison needs two or more candidates");
  sql::Transaction tx(db_);
  sql::Statement ins(db_,
                     "INSERT OR IGNORE INTO comparisons(prompt_id, candidates, candidate_key, required_raters, is_gold, "
                     "gold_answer, created_at) VALUES(?,?,?,?,?,?,?)");
  ins.bind(1, prompt_id).bind(2, list_json(candidates)).bind(3, candidate_key(candidates))
      .bind(4, int64_t{required_raters}).bind(5, int64_t{is_gold}).bind(6, to_text(gold_answer)).bind(7, utc_now());
  ins.run();
  if (db_.changes() == 0) return std::nullopt;
  const int64_t id = db_.last_insert_id();
  tx.commit();
  return id;
}

std::optional<int64_t> LabelStore::comparison_with(const std::vector<int64_t>& candidates) {
  sql::Statement s(db_, "SELECT id FROM comparisons WHERE candidate_key = ?");
  s.bind(1, candidate_key(candidates));
  if (!s.step()) return std::nullopt;
  return s.int64(0);
}

namespace {
Comparison read_comparison(sql::Statement& s) {
  Comparison c;
  c.id = s.int64(0);
  c.prompt_id = s.int64(1);
  c.candidates = list_from<int64_t>(s.text(2));
  c.required_raters = static_cast<int>(s.int64(3));
  c.is_gold = s.int64(4) != 0;
  c.gold_answer = from_text(s.text(5));
  c.priority = s.real(6);
  c.selection = s.text(7);
  if (!s.is_null(8)) c.selection_score = s.real(8);
  return c;
}
constexpr const char* kComparisonColumns =
    "id, prompt_id, candidates, required_raters, is_gold, gold_answer, priority, selection, selection_score";
// Open comparisons are served in this order.
constexpr const char* kServeOrder = " ORDER BY c.priority DESC, c.id";
}  // namespace

Comparison LabelStore::comparison(int64_t id) {
  sql::Statement s(db_, (std::string("SELECT ") + kComparisonColumns + " FROM comparisons WHERE id = ?").c_str());
  s.bind(1, id);
  if (!s.step()) fail(ErrorKind::kData, "label store '", db_.path(), "': no comparison ", id);
  return read_comparison(s);
}

void LabelStore::set_selection(const std::vector<SelectionMark>& marks) {
  sql::Transaction tx(db_);
  sql::Statement s(db_, "UPDATE comparisons SET priority = ?, selection = ?, selection_score = ? WHERE id = ?");
  for (const SelectionMark& m : marks) {
    s.reset();
    s.bind(1, m.priority).bind(2, m.strategy).bind(3, m.score).bind(4, m.comparison_id);
    s.run();
    if (db_.changes() != 1) fail(ErrorKind::kData, "label store '", db_.path(), "': no comparison ", m.comparison_id);
  }
  tx.commit();
}

void LabelStore::set_gold(int64_t id, const Json& answer) {
  sql::Transaction tx(db_);
  sql::Statement s(db_, "UPDATE comparisons SET is_gold = 1, gold_answer = ? WHERE id = ?");
  s.bind(1, to_text(answer)).bind(2, id);
  s.run();
  if (db_.changes() != 1) fail(ErrorKind::kData, "label store '", db_.path(), "': no comparison ", id);
  tx.commit();
}

std::vector<Comparison> LabelStore::comparisons() {
  sql::Statement s(db_, (std::string("SELECT ") + kComparisonColumns + " FROM comparisons ORDER BY id").c_str());
  std::vector<Comparison> out;
  while (s.step()) out.push_back(read_comparison(s));
  return out;
}

std::vector<Comparison> LabelStore::open_comparisons() {
  sql::Statement s(db_, (std::string("SELECT ") + kComparisonColumns +
                         " FROM comparisons c WHERE c.label_count < c.required_raters AND c.is_gold = 0" + kServeOrder)
                            .c_str());
  std::vector<Comparison> out;
  while (s.step()) out.push_back(read_comparison(s));
  return out;
}

std::vector<Comparison> LabelStore::open_comparisons_for(int64_t rater_id, size_t limit) {
  sql::Statement s(db_, (std::string("SELECT ") + kComparisonColumns +
                         " FROM comparisons c WHERE (c.is_gold = 1 OR c.label_count < c.required_raters) AND NOT EXISTS "
                         "(SELECT 1 FROM labels l WHERE l.comparison_id = c.id AND l.rater_id = ?)" + kServeOrder)
                            .c_str());
  s.bind(1, rater_id);
  std::vector<Comparison> out;
  while (out.size() < limit && s.step()) out.push_back(read_comparison(s));
  return out;
}

namespace {
// Regular comparisons rater ?1 may take at time ?2: still short of labels,
// not labelled by them, and with room left beside other raters' live offers.
// `label_count < required_raters AND is_gold = 0` is written as in the
// comparisons_open index so SQLite walks only the open ones.
constexpr const char* kOpenRegular = "label_count < required_raters AND is_gold = 0";
constexpr const char* kAvailable =
    " FROM comparisons c WHERE label_count < required_raters AND is_gold = 0"
    " AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.comparison_id = c.id AND l.rater_id = ?1)"
    " AND c.label_count + (SELECT COUNT(*) FROM offers o WHERE o.comparison_id = c.id AND o.rater_id != ?1"
    " AND o.expires_at > ?2) < c.required_raters";
}  // namespace

std::optional<Comparison> LabelStore::next_available(int64_t rater_id, double now, const std::set<int64_t>& skip) {
  sql::Statement s(db_, (std::string("SELECT c.id, c.prompt_id, c.candidates, c.required_raters, c.is_gold, "
                                     "c.gold_answer, c.priority, c.selection, c.selection_score") + kAvailable + kServeOrder).c_str());
  s.bind(1, rater_id).bind(2, now);
  while (s.step()) {
    if (!skip.count(s.int64(0))) return read_comparison(s);
  }
  return std::nullopt;
}

size_t LabelStore::count_open_for(int64_t rater_id) {
  // Two index counts instead of a per-comparison test (which cost 50-100 ms
  // at 30,000 open comparisons on every task request).
  sql::Statement open(db_, (std::string("SELECT COUNT(*) FROM comparisons WHERE ") + kOpenRegular).c_str());
  open.step();
  sql::Statement mine(db_, (std::string("SELECT COUNT(*) FROM labels l JOIN comparisons c ON c.id = l.comparison_id "
                                        "WHERE l.rater_id = ? AND c.") + "label_count < c.required_raters AND c.is_gold = 0")
                               .c_str());
  mine.bind(1, rater_id);
  mine.step();
  return static_cast<size_t>(std::max<int64_t>(0, open.int64(0) - mine.int64(0)));
}

bool LabelStore::is_available(int64_t comparison_id, int64_t rater_id, double now) {
  sql::Statement s(db_, (std::string("SELECT 1") + kAvailable + " AND c.id = ?3").c_str());
  s.bind(1, rater_id).bind(2, now).bind(3, comparison_id);
  return s.step();
}

std::vector<int64_t> LabelStore::open_gold_for(int64_t rater_id) {
  sql::Statement s(db_,
                   "SELECT c.id FROM comparisons c WHERE c.is_gold = 1 AND NOT EXISTS (SELECT 1 FROM labels l WHERE "
                   "l.comparison_id = c.id AND l.rater_id = ?) ORDER BY c.id");
  s.bind(1, rater_id);
  std::vector<int64_t> out;
  while (s.step()) out.push_back(s.int64(0));
  return out;
}

void LabelStore::offer(int64_t comparison_id, int64_t rater_id, double now, double expires_at) {
  sql::Transaction tx(db_);
  sql::Statement ins(db_, "INSERT OR REPLACE INTO offers(comparison_id, rater_id, expires_at) VALUES(?,?,?)");
  ins.bind(1, comparison_id).bind(2, rater_id).bind(3, expires_at);
  ins.run();
  // Offers a day past their expiry are forgotten: a label for one is refused
  // and the rater fetches the task again.
  sql::Statement old(db_, "DELETE FROM offers WHERE expires_at < ?");
  old.bind(1, now - 86400.0);
  old.run();
  tx.commit();
}

bool LabelStore::was_offered(int64_t comparison_id, int64_t rater_id) {
  sql::Statement s(db_, "SELECT 1 FROM offers WHERE comparison_id = ? AND rater_id = ?");
  s.bind(1, comparison_id).bind(2, rater_id);
  return s.step();
}

bool LabelStore::has_labelled(int64_t comparison_id, int64_t rater_id) {
  sql::Statement s(db_, "SELECT 1 FROM labels WHERE comparison_id = ? AND rater_id = ?");
  s.bind(1, comparison_id).bind(2, rater_id);
  return s.step();
}

size_t LabelStore::label_count(int64_t comparison_id) {
  sql::Statement s(db_, "SELECT label_count FROM comparisons WHERE id = ?");
  s.bind(1, comparison_id);
  return s.step() ? static_cast<size_t>(s.int64(0)) : 0;
}

RaterCounts LabelStore::rater_counts(int64_t rater_id) {
  RaterCounts out;
  sql::Statement n(db_, "SELECT COUNT(*) FROM labels WHERE rater_id = ?");
  n.bind(1, rater_id);
  n.step();
  out.labels = static_cast<size_t>(n.int64(0));
  sql::Statement g(db_,
                   "SELECT COUNT(*), COALESCE(SUM(json_extract(c.gold_answer, '$.choice') = l.choice), 0) FROM labels l "
                   "JOIN comparisons c ON c.id = l.comparison_id WHERE l.rater_id = ? AND c.is_gold = 1 AND "
                   "json_valid(c.gold_answer) AND json_extract(c.gold_answer, '$.choice') IS NOT NULL");
  g.bind(1, rater_id);
  g.step();
  out.gold_seen = static_cast<size_t>(g.int64(0));
  out.gold_correct = static_cast<size_t>(g.int64(1));
  return out;
}

void LabelStore::record_served(const std::string& completion_id, const std::vector<int64_t>& candidates) {
  sql::Transaction tx(db_);
  sql::Statement ins(db_, "INSERT OR IGNORE INTO served(completion_id, choice, candidate_id, created_at) VALUES(?,?,?,?)");
  for (size_t i = 0; i < candidates.size(); ++i) {
    ins.reset();
    ins.bind(1, completion_id).bind(2, static_cast<int64_t>(i)).bind(3, candidates[i]).bind(4, utc_now());
    ins.run();
  }
  tx.commit();
}

std::vector<int64_t> LabelStore::served_candidates(const std::string& completion_id) {
  sql::Statement s(db_, "SELECT candidate_id FROM served WHERE completion_id = ? ORDER BY choice");
  s.bind(1, completion_id);
  std::vector<int64_t> out;
  while (s.step()) out.push_back(s.int64(0));
  return out;
}

int64_t LabelStore::set_feedback(const Feedback& f) {
  RLHF_CHECK(f.thumb >= -1 && f.thumb <= 1, "a thumb is -1, 0 or 1");
  sql::Transaction tx(db_);
  sql::Statement up(db_,
                    "INSERT INTO feedback(candidate_id, rater_id, thumb, comment, created_at) VALUES(?,?,?,?,?) "
                    "ON CONFLICT(candidate_id, rater_id) DO UPDATE SET thumb = excluded.thumb, "
                    "comment = CASE WHEN excluded.comment = '' THEN comment ELSE excluded.comment END, "
                    "created_at = excluded.created_at");
  up.bind(1, f.candidate_id).bind(2, f.rater_id).bind(3, int64_t{f.thumb}).bind(4, f.comment).bind(5, utc_now());
  up.run();
  sql::Statement id(db_, "SELECT id FROM feedback WHERE candidate_id = ? AND rater_id = ?");
  id.bind(1, f.candidate_id).bind(2, f.rater_id);
  id.step();
  const int64_t out = id.int64(0);
  tx.commit();
  return out;
}

std::vector<Feedback> LabelStore::feedback(std::optional<int64_t> prompt_id) {
  sql::Statement s(db_, prompt_id ? "SELECT f.id, f.candidate_id, f.rater_id, f.thumb, f.comment, f.created_at "
                                    "FROM feedback f JOIN candidates c ON c.id = f.candidate_id "
                                    "WHERE c.prompt_id = ? ORDER BY f.id"
                                  : "SELECT id, candidate_id, rater_id, thumb, comment, created_at FROM feedback ORDER BY id");
  if (prompt_id) s.bind(1, *prompt_id);
  std::vector<Feedback> out;
  while (s.step()) {
    out.push_back({s.int64(0), s.int64(1), s.int64(2), static_cast<int>(s.int64(3)), s.text(4), s.text(5)});
  }
  return out;
}

int64_t LabelStore::add_rater(const std::string& name, const std::string& token_hash, const std::string& kind) {
  if (name.empty()) fail(ErrorKind::kUsage, "a rater needs a name");
  sql::Transaction tx(db_);
  sql::Statement find(db_, "SELECT id FROM raters WHERE name = ?");
  find.bind(1, name);
  if (find.step()) fail(ErrorKind::kUsage, "a rater named '", name, "' already exists in ", db_.path());
  sql::Statement ins(db_, "INSERT INTO raters(name, token_hash, kind, created_at) VALUES(?,?,?,?)");
  ins.bind(1, name).bind(2, token_hash).bind(3, kind).bind(4, utc_now());
  ins.run();
  const int64_t id = db_.last_insert_id();
  tx.commit();
  return id;
}

void LabelStore::set_token_hash(const std::string& name, const std::string& token_hash) {
  sql::Statement s(db_, "UPDATE raters SET token_hash = ? WHERE name = ?");
  s.bind(1, token_hash).bind(2, name);
  s.run();
  if (db_.changes() == 0) fail(ErrorKind::kUsage, "no rater named '", name, "' in ", db_.path(), " (see `rlhf raters list`)");
}

std::optional<Rater> LabelStore::rater_by_name(const std::string& name) {
  sql::Statement s(db_, "SELECT id, name, kind FROM raters WHERE name = ?");
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return Rater{s.int64(0), s.text(1), s.text(2)};
}

std::optional<Rater> LabelStore::rater_by_token_hash(const std::string& token_hash) {
  if (token_hash.empty()) return std::nullopt;
  sql::Statement s(db_, "SELECT id, name, kind FROM raters WHERE token_hash = ?");
  s.bind(1, token_hash);
  if (!s.step()) return std::nullopt;
  return Rater{s.int64(0), s.text(1), s.text(2)};
}

std::vector<Rater> LabelStore::raters() {
  sql::Statement s(db_, "SELECT id, name, kind FROM raters ORDER BY id");
  std::vector<Rater> out;
  while (s.step()) out.push_back({s.int64(0), s.text(1), s.text(2)});
  return out;
}

namespace {
constexpr const char* kLabelColumns =
    "id, comparison_id, rater_id, choice, ranking, ratings, strength, margin, rationale, shown_order, created_at, "
    "client_id, selection, selection_score";

// A resend carries the label as first sent; anything else under the same
// client id is a different label.
bool same_label(const Label& a, const Label& b) {
  return a.comparison_id == b.comparison_id && a.choice == b.choice && a.ranking == b.ranking &&
         a.ratings == b.ratings && a.strength == b.strength && a.rationale == b.rationale &&
         a.shown_order == b.shown_order;
}
}  // namespace

std::optional<Label> LabelStore::label_by_client_id(int64_t rater_id, const std::string& client_id) {
  if (client_id.empty()) return std::nullopt;
  sql::Statement find(db_, (std::string("SELECT ") + kLabelColumns + " FROM labels WHERE rater_id = ? AND client_id = ?").c_str());
  find.bind(1, rater_id).bind(2, client_id);
  if (!find.step()) return std::nullopt;
  return read_label(find);
}

int64_t LabelStore::add_label(Label l) {
  if (l.created_at.empty()) l.created_at = utc_now();
  sql::Transaction tx(db_);
  if (auto first = label_by_client_id(l.rater_id, l.client_id)) {
    if (!same_label(*first, l))
      fail(ErrorKind::kData, "client id '", l.client_id, "' was already used for a different label (on comparison ",
           first->comparison_id, "); nothing was stored: give each new label its own client id");
    return first->id;  // a resend: already committed
  }
  if (has_labelled(l.comparison_id, l.rater_id))
    fail(ErrorKind::kData, "rater ", l.rater_id, " has already labelled comparison ", l.comparison_id);
  // The label keeps the selection that served its comparison (an imported
  // label brings its own).
  if (l.selection.empty()) {
    const Comparison c = comparison(l.comparison_id);
    l.selection = c.selection;
    l.selection_score = c.selection_score;
  }
  sql::Statement ins(db_,
                     "INSERT INTO labels(comparison_id, rater_id, choice, ranking, ratings, strength, margin, rationale, "
                     "shown_order, created_at, client_id, selection, selection_score) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)");
  ins.bind(1, l.comparison_id).bind(2, l.rater_id).bind(3, std::string(choice_name(l.choice)));
  ins.bind(4, l.ranking.empty() ? std::optional<std::string>() : list_json(l.ranking));
  ins.bind(5, l.ratings.empty() ? std::optional<std::string>() : list_json(l.ratings));
  ins.bind(6, int64_t{l.strength});
  if (l.margin) ins.bind(7, *l.margin); else ins.bind_null(7);
  ins.bind(8, l.rationale).bind(9, list_json(l.shown_order)).bind(10, l.created_at);
  ins.bind(11, l.client_id.empty() ? std::optional<std::string>() : l.client_id);
  ins.bind(12, l.selection.empty() ? std::optional<std::string>() : l.selection);
  if (l.selection_score) ins.bind(13, *l.selection_score); else ins.bind_null(13);
  ins.run();
  const int64_t id = db_.last_insert_id();
  // The label ends its rater's offer of the comparison.
  sql::Statement done(db_, "DELETE FROM offers WHERE comparison_id = ? AND rater_id = ?");
  done.bind(1, l.comparison_id).bind(2, l.rater_id);
  done.run();
  tx.commit();
  return id;
}


Label LabelStore::read_label(sql::Statement& s) {
  Label l;
  l.id = s.int64(0);
  l.comparison_id = s.int64(1);
  l.rater_id = s.int64(2);
  l.choice = parse_choice(s.text(3)).value_or(Choice::kTie);
  l.ranking = list_from<int>(s.text(4));
  l.ratings = list_from<int>(s.text(5));
  l.strength = static_cast<int>(s.int64(6));
  if (!s.is_null(7)) l.margin = s.real(7);
  l.rationale = s.text(8);
  l.shown_order = list_from<int64_t>(s.text(9));
  l.created_at = s.text(10);
  l.client_id = s.text(11);
  l.selection = s.text(12);
  if (!s.is_null(13)) l.selection_score = s.real(13);
  return l;
}

std::vector<Label> LabelStore::labels() {
  sql::Statement s(db_, (std::string("SELECT ") + kLabelColumns + " FROM labels ORDER BY id").c_str());
  std::vector<Label> out;
  while (s.step()) out.push_back(read_label(s));
  return out;
}

std::vector<Label> LabelStore::labels_of_comparison(int64_t comparison_id) {
  sql::Statement s(db_, (std::string("SELECT ") + kLabelColumns + " FROM labels WHERE comparison_id = ? ORDER BY id").c_str());
  s.bind(1, comparison_id);
  std::vector<Label> out;
  while (s.step()) out.push_back(read_label(s));
  return out;
}

std::optional<int64_t> LabelStore::undo_last_label(int64_t rater_id) {
  sql::Transaction tx(db_);
  sql::Statement find(db_, "SELECT id, comparison_id FROM labels WHERE rater_id = ? ORDER BY id DESC LIMIT 1");
  find.bind(1, rater_id);
  if (!find.step()) return std::nullopt;
  const int64_t id = find.int64(0), comparison = find.int64(1);
  sql::Statement del(db_, "DELETE FROM labels WHERE id = ?");
  del.bind(1, id);
  del.run();
  tx.commit();
  return comparison;
}

size_t LabelStore::count_labels() {
  sql::Statement s(db_, "SELECT COUNT(*) FROM labels");
  s.step();
  return static_cast<size_t>(s.int64(0));
}

ImportStats LabelStore::import_jsonl(const std::string& path, const std::string& rater_name) {
  // Validate every line before writing anything: a bad file imports nothing.
  std::vector<std::pair<Json, size_t>> rows;
  read_jsonl(path, [&](const Json& row, size_t line) {
    check_prompt(row, path, line);
    check_preference_record(row, path, line);
    if (row.contains("responses")) {
      for (const Json& r : row["responses"]) response_text(r, path, line, "responses");
    } else {
      response_text(row["chosen"], path, line, "chosen");
      response_text(row["rejected"], path, line, "rejected");
    }
    if (row.contains("selection")) {
      const Json& sel = row["selection"];
      if (!sel.is_object() || !sel.contains("strategy") || !sel["strategy"].is_string() ||
          (sel.contains("score") && !sel["score"].is_number())) {
        jsonl_error(path, line, "\"selection\" must be {\"strategy\": name, \"score\": number} as `rlhf labels export` writes it");
      }
    }
    rows.emplace_back(row, line);
  });

  // One transaction for the whole file: a killed import leaves nothing
  // half-done (a comparison without its label), and running it again
  // imports everything.
  sql::Transaction file_tx(db_);
  ImportStats stats;
  int64_t rater_id;
  if (auto r = rater_by_name(rater_name)) rater_id = r->id;
  else rater_id = add_rater(rater_name, "", "imported");
  for (const auto& [row, line] : rows) {
    const Json metadata = row.value("metadata", Json());
    const int64_t prompt_id = add_prompt(row["prompt"], metadata);
    ++stats.prompts;
    std::vector<std::string> texts;
    if (row.contains("responses")) {
      for (const auto& r : row["responses"]) texts.push_back(response_text(r, path, line, "responses"));
    } else {
      texts = {response_text(row["chosen"], path, line, "chosen"), response_text(row["rejected"], path, line, "rejected")};
    }
    std::vector<int64_t> ids;
    const std::vector<bool> finished = preference_finished_flags(row, path, line);
    for (size_t i = 0; i < texts.size(); ++i) ids.push_back(add_candidate(prompt_id, texts[i], finished[i], "imported", nullptr));
    stats.candidates += ids.size();
    // The same replies compared before (by this file or another) share one
    // comparison; each rater's label on it is kept, once.
    std::optional<int64_t> comparison_id = add_comparison(prompt_id, ids);
    if (!comparison_id) comparison_id = comparison_with(ids);
    RLHF_CHECK(comparison_id.has_value(), "a comparison that exists was not found");
    const std::vector<Label> existing = labels_of_comparison(*comparison_id);
    if (std::any_of(existing.begin(), existing.end(), [&](const Label& e) { return e.rater_id == rater_id; })) {
      ++stats.already_there;
      continue;
    }
    // The file's order is the shown order; the label is stored relative to
    // the comparison's own candidate order (an earlier import may have
    // stored the pair the other way round).
    const std::vector<int64_t> stored = comparison(*comparison_id).candidates;
    Label l;
    l.comparison_id = *comparison_id;
    l.rater_id = rater_id;
    l.shown_order = ids;
    if (row.contains("selection")) {
      l.selection = row["selection"]["strategy"].get<std::string>();
      if (row["selection"].contains("score")) l.selection_score = row["selection"]["score"].get<double>();
    }
    if (row.contains("responses")) {
      l.choice = Choice::kRanking;
      const std::vector<int64_t> ranks = row["ranking"].get<std::vector<int64_t>>();
      for (int64_t id : stored) {
        l.ranking.push_back(static_cast<int>(ranks[std::find(ids.begin(), ids.end(), id) - ids.begin()]));
      }
      ++stats.rankings;
    } else {
      l.choice = row.value("tie", false) ? Choice::kTie : stored.front() == ids.front() ? Choice::kA : Choice::kB;
      if (row.contains("margin")) l.margin = row["margin"].get<double>();
      ++stats.pairs;
    }
    stats.disagreements += std::any_of(existing.begin(), existing.end(), [&](const Label& e) {
      return e.choice != l.choice || (l.choice == Choice::kRanking && e.ranking != l.ranking);
    });
    add_label(l);
  }
  file_tx.commit();
  return stats;
}

std::vector<Json> LabelStore::export_records(int64_t since_label_id) {
  std::vector<Json> out;
  sql::Statement s(db_, (std::string("SELECT ") + kLabelColumns + " FROM labels WHERE id > ? ORDER BY id").c_str());
  s.bind(1, since_label_id);
  std::vector<Label> labels;
  while (s.step()) labels.push_back(read_label(s));
  for (const Label& l : labels) {
    if (l.choice == Choice::kBothBad) continue;
    const Comparison c = comparison(l.comparison_id);
    sql::Statement p(db_, "SELECT source, metadata FROM prompts WHERE id = ?");
    p.bind(1, c.prompt_id);
    p.step();
    Json row = {{"prompt", parse_json(p.text(0), "the label store")}};
    const Json metadata = from_text(p.text(1));
    if (l.choice == Choice::kRanking) {
      Json responses = Json::array();
      Json finished = Json::array();
      bool all_finished = true;
      for (int64_t id : c.candidates) {
        const Candidate cand = candidate(id);
        responses.push_back(cand.text);
        finished.push_back(cand.finished);
        all_finished = all_finished && cand.finished;
      }
      row["responses"] = responses;
      if (!all_finished) row["finished"] = finished;
      row["ranking"] = l.ranking;
    } else {
      const bool b_wins = l.choice == Choice::kB;
      const Candidate chosen = candidate(c.candidates[b_wins ? 1 : 0]);
      const Candidate rejected = candidate(c.candidates[b_wins ? 0 : 1]);
      row["chosen"] = chosen.text;
      row["rejected"] = rejected.text;
      // Cut off at the length limit: scored without the end-of-turn token.
      if (!chosen.finished) row["chosen_finished"] = false;
      if (!rejected.finished) row["rejected_finished"] = false;
      if (l.choice == Choice::kTie) row["tie"] = true;
      if (l.margin) row["margin"] = *l.margin;
    }
    if (!metadata.is_null()) row["metadata"] = metadata;
    if (!l.selection.empty()) {
      row["selection"] = Json{{"strategy", l.selection}};
      if (l.selection_score) row["selection"]["score"] = *l.selection_score;
    }
    out.push_back(row);
  }
  return out;
}

size_t LabelStore::export_jsonl(const std::string& path, int64_t since_label_id) {
  const std::vector<Json> rows = export_records(since_label_id);
  JsonlWriter w(path, /*append=*/false);
  for (const auto& r : rows) w.write(r);
  return rows.size();
}

}  // namespace rlhf::labels
