#include "labels/sqlite.h"

#include <sqlite3.h>

#include "common/error.h"

namespace rlhf::sql {

Db::Db(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    fail(ErrorKind::kIo, "cannot open the label store '", path, "': ", why);
  }
  sqlite3_busy_timeout(db_, 10000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("PRAGMA foreign_keys=ON");
}

Db::~Db() {
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

namespace {
// What to do about an error code, when there is something to do.
const char* hint(int code) {
  code &= 0xff;
  return code == SQLITE_BUSY || code == SQLITE_LOCKED ? " (another process holds its write lock; try again shortly)"
                                                      : "";
}
}  // namespace

void Db::fail_sql(const char* what) const {
  fail(ErrorKind::kIo, "label store '", path_, "': ", what, ": ", sqlite3_errmsg(db_), hint(sqlite3_errcode(db_)));
}

void Db::set_busy_timeout(int ms) { sqlite3_busy_timeout(db_, ms); }

void Db::exec(const char* sql) {
  char* err = nullptr;
  if (const int code = sqlite3_exec(db_, sql, nullptr, nullptr, &err); code != SQLITE_OK) {
    const std::string why = err ? err : "unknown error";
    sqlite3_free(err);
    fail(ErrorKind::kIo, "label store '", path_, "': ", why, hint(code));
  }
}

int64_t Db::last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
int Db::changes() const { return sqlite3_changes(db_); }

Statement::Statement(Db& db, const char* sql) : db_(db) {
  if (sqlite3_prepare_v2(db.raw(), sql, -1, &stmt_, nullptr) != SQLITE_OK) db.fail_sql("cannot prepare a statement");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int i, int64_t v) {
  if (sqlite3_bind_int64(stmt_, i, v) != SQLITE_OK) db_.fail_sql("bind");
  return *this;
}
Statement& Statement::bind(int i, double v) {
  if (sqlite3_bind_double(stmt_, i, v) != SQLITE_OK) db_.fail_sql("bind");
  return *this;
}
Statement& Statement::bind(int i, const std::string& v) {
  if (sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT) != SQLITE_OK) db_.fail_sql("bind");
  return *this;
}
Statement& Statement::bind_null(int i) {
  if (sqlite3_bind_null(stmt_, i) != SQLITE_OK) db_.fail_sql("bind");
  return *this;
}
Statement& Statement::bind(int i, const std::optional<std::string>& v) { return v ? bind(i, *v) : bind_null(i); }

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_.fail_sql("query failed");
}

void Statement::run() {
  while (step()) {
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int64_t Statement::int64(int col) const { return sqlite3_column_int64(stmt_, col); }
double Statement::real(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Statement::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}
bool Statement::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

Transaction::Transaction(Db& db) : db_(db), nested_(sqlite3_get_autocommit(db.raw()) == 0) {
  db_.exec(nested_ ? "SAVEPOINT nested" : "BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  if (!done_) {
    try {
      db_.exec(nested_ ? "ROLLBACK TO nested; RELEASE nested" : "ROLLBACK");
    } catch (...) {
    }
  }
}

void Transaction::commit() {
  db_.exec(nested_ ? "RELEASE nested" : "COMMIT");
  done_ = true;
}

}  // namespace rlhf::sql
