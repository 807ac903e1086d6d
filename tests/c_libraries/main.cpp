// Calls both C libraries the core links, so that a link without them fails.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <sqlite3.h>

#include <cstdio>

int main() {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("\\p{L}+"), PCRE2_ZERO_TERMINATED, PCRE2_UTF, &error,
                                 &offset, nullptr);
  if (re == nullptr) return 1;
  pcre2_code_free(re);
  sqlite3* db = nullptr;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) return 2;
  const int rc = sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  std::printf("pcre2 and sqlite %s linked\n", sqlite3_libversion());
  return rc == SQLITE_OK ? 0 : 3;
}
