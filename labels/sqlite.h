// A thin RAII layer over SQLite: a connection and prepared statements with
// bound parameters (no SQL is ever built from data), and transactions that
// roll back unless committed. Errors throw rlhf::Error naming the database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace rlhf::sql {

class Db;

class Statement {
 public:
  Statement(Db& db, const char* sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Bind by 1-based index; returns *this for chaining.
  Statement& bind(int i, int64_t v);
  Statement& bind(int i, double v);
  Statement& bind(int i, const std::string& v);
  Statement& bind_null(int i);
  Statement& bind(int i, const std::optional<std::string>& v);
  // Steps once: true while a row is available.
  bool step();
  // Runs to completion (for statements without results).
  void run();
  void reset();

  int64_t int64(int col) const;
  double real(int col) const;
  std::string text(int col) const;
  bool is_null(int col) const;

 private:
  Db& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

class Db {
 public:
  // Opens (creating if needed) with WAL, synchronous=FULL (a committed write
  // survives power loss), foreign keys and a busy timeout for concurrent
  // writers.
  explicit Db(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const char* sql);  // trusted, constant SQL only (schema, pragmas)
  // How long a statement waits for another connection's lock before it
  // fails (10 s from the constructor).
  void set_busy_timeout(int ms);
  int64_t last_insert_id() const;
  int changes() const;
  const std::string& path() const { return path_; }
  sqlite3* raw() { return db_; }
  [[noreturn]] void fail_sql(const char* what) const;

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back if destroyed uncommitted.
// BEGIN IMMEDIATE ... COMMIT, rolled back unless committed. Inside another
// transaction it is a savepoint, so a bulk operation (an import) can hold one
// transaction around many calls that each open their own.
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  void commit();

 private:
  Db& db_;
  bool nested_ = false;
  bool done_ = false;
};

}  // namespace rlhf::sql
