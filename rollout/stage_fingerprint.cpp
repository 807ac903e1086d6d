#include "rollout/stage_fingerprint.h"

#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"

namespace rlhf {
namespace {

std::string hex16(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// 8 bytes a step; not cryptographic, only a change detector.
uint64_t hash_bytes(const uint8_t* data, size_t n, uint64_t h) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = splitmix64(h ^ w);
  }
  uint64_t tail = 0;
  if (n > i) std::memcpy(&tail, data + i, n - i);
  return splitmix64(h ^ tail ^ (static_cast<uint64_t>(n) << 56));
}

uint64_t file_hash(const std::string& path, uint64_t h) {
  MappedFile f(path);
  return hash_bytes(f.data(), f.size(), h);
}

bool under(const std::string& path, const std::string& dir) {
  if (dir.empty()) return false;
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return path == d || path.rfind(d + "/", 0) == 0;
}

void collect_inputs(const Json& value, const std::string& run_dir, Json& out) {
  if (value.is_object() || value.is_array()) {
    for (const auto& v : value) collect_inputs(v, run_dir, out);
  } else if (value.is_string()) {
    const std::string p = value.get<std::string>();
    if (!p.empty() && !under(p, run_dir) && path_exists(p) && !out.contains(p)) out[p] = path_content_hash(p);
  }
}

std::string short_value(const Json& v) {
  std::string s = v.is_null() ? "(none)" : v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

void diff_settings(const Json& a, const Json& b, const std::string& prefix, std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      diff_settings(it.value(), b.contains(it.key()) ? b[it.key()] : Json(), prefix + it.key() + ".", out);
    }
    for (auto it = b.begin(); it != b.end(); ++it) {
      if (!a.contains(it.key())) diff_settings(Json(), it.value(), prefix + it.key() + ".", out);
    }
    return;
  }
  if (a != b) {
    out.push_back("setting " + prefix.substr(0, prefix.size() - 1) + ": " + short_value(a) + " -> " + short_value(b));
  }
}

}  // namespace

std::string path_content_hash(const std::string& path) {
  if (!is_directory(path)) return hex16(file_hash(path, 0x5eedu));
  uint64_t h = 0x5eedu;
  for (const std::string& f : list_files(path, {})) {
    const std::string rel = f.substr(path.size());
    h = fnv1a64(rel, h);
    h = file_hash(f, h);
  }
  return hex16(h);
}

Json input_hashes(const Json& config, const std::string& run_dir) {
  Json out = Json::object();
  collect_inputs(config, run_dir, out);
  return out;
}

std::string StageFingerprint::hash() const {
  const Json j = {{"stage", stage}, {"program", program}, {"config", config}, {"inputs", inputs}, {"upstream", upstream}};
  return hex16(fnv1a64(j.dump()));
}

Json StageFingerprint::to_json() const {
  return Json{{"stage", stage},   {"program", program},   {"config", config},
              {"inputs", inputs}, {"upstream", upstream}, {"hash", hash()}};
}

StageFingerprint StageFingerprint::from_json(const Json& j, const std::string& source) {
  StageFingerprint f;
  for (const char* key : {"stage", "program", "config", "inputs", "upstream"}) {
    if (!j.is_object() || !j.contains(key)) {
      fail(ErrorKind::kData, source, ": a stage fingerprint without \"", key, "\"; delete the file to run the stage again");
    }
  }
  f.stage = j["stage"];
  f.program = j["program"];
  f.config = j["config"];
  f.inputs = j["inputs"];
  f.upstream = j["upstream"];
  return f;
}

std::vector<std::string> fingerprint_changes(const StageFingerprint& recorded, const StageFingerprint& now) {
  std::vector<std::string> out;
  if (recorded.program != now.program) out.push_back("program " + recorded.program + " -> " + now.program);
  diff_settings(recorded.config, now.config, "", out);
  for (auto it = now.inputs.begin(); it != now.inputs.end(); ++it) {
    if (!recorded.inputs.contains(it.key())) out.push_back("new input " + it.key());
    else if (recorded.inputs[it.key()] != it.value()) out.push_back("input " + it.key() + " changed");
  }
  for (auto it = recorded.inputs.begin(); it != recorded.inputs.end(); ++it) {
    if (!now.inputs.contains(it.key())) out.push_back("input " + it.key() + " no longer read");
  }
  for (auto it = now.upstream.begin(); it != now.upstream.end(); ++it) {
    if (!recorded.upstream.contains(it.key()) || recorded.upstream[it.key()] != it.value()) {
      out.push_back("upstream stage " + it.key() + " changed");
    }
  }
  return out;
}

}  // namespace rlhf
