// A strict-enough parser of the Prometheus text exposition format (0.0.4) for tests:
// every line is a comment (# HELP / # TYPE) or `name{labels} value`, and every sample's
// family was declared by # TYPE. Returns the samples by "name{labels}" as written.
// Hand-written (no std::regex: GCC 12 warns inside <regex> under the sanitizers).
#pragma once

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

#include "flotilla/core/status.h"

namespace flotilla::coordinator::testutil {

namespace prometheus_internal {

inline bool NameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'; }
inline bool NameChar(char c) { return NameStart(c) || (c >= '0' && c <= '9'); }

// Reads a metric or label name at `i`; empty on failure.
inline std::string Name(const std::string& s, size_t& i, bool allow_colon = true) {
  const size_t start = i;
  if (i >= s.size() || !NameStart(s[i]) || (!allow_colon && s[i] == ':')) return {};
  while (i < s.size() && NameChar(s[i]) && (allow_colon || s[i] != ':')) ++i;
  return s.substr(start, i - start);
}

// `{a="x",b="y\"z"}` at `i`; false if malformed.
inline bool Labels(const std::string& s, size_t& i) {
  if (i >= s.size() || s[i] != '{') return true;
  ++i;
  for (bool first = true;; first = false) {
    if (i < s.size() && s[i] == '}' && first) return ++i, true;
    if (Name(s, i, false).empty()) return false;
    if (i + 1 >= s.size() || s[i] != '=' || s[i + 1] != '"') return false;
    i += 2;
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\') {
        if (i + 1 >= s.size() || (s[i + 1] != '\\' && s[i + 1] != '"' && s[i + 1] != 'n')) return false;
        ++i;
      }
      ++i;
    }
    if (i >= s.size()) return false;
    ++i;  // closing quote
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') return ++i, true;
    return false;
  }
}

inline bool Value(const std::string& v, double* out) {
  if (v == "+Inf" || v == "Inf") return *out = 1e308, true;
  if (v == "-Inf") return *out = -1e308, true;
  if (v == "NaN") return *out = 0, true;
  if (v.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(v.c_str(), &end);
  return end == v.c_str() + v.size();
}

}  // namespace prometheus_internal

inline Result<std::map<std::string, double>> ParsePrometheusText(const std::string& text) {
  namespace p = prometheus_internal;
  std::map<std::string, std::string> types;
  std::map<std::string, double> samples;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  auto bad = [&](const std::string& why) { return InvalidArgumentError("line " + std::to_string(n) + ": " + why + ": " + line); };
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      size_t i = 7;
      const std::string name = p::Name(line, i);
      if (name.empty() || i >= line.size() || line[i] != ' ') return bad("bad TYPE");
      const std::string type = line.substr(i + 1);
      if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" && type != "untyped") {
        return bad("bad TYPE");
      }
      if (!types.emplace(name, type).second) return bad("duplicate TYPE");
      continue;
    }
    if (line[0] == '#') return bad("bad comment");
    size_t i = 0;
    const std::string name = p::Name(line, i);
    if (name.empty()) return bad("bad metric name");
    if (!p::Labels(line, i)) return bad("bad labels");
    const std::string key = line.substr(0, i);
    if (i >= line.size() || line[i] != ' ') return bad("missing value");
    double value = 0;
    if (!p::Value(line.substr(i + 1), &value)) return bad("bad value");
    std::string family = name;
    for (const std::string suffix : {"_bucket", "_sum", "_count"}) {
      if (!types.count(family) && family.size() > suffix.size() &&
          family.compare(family.size() - suffix.size(), suffix.size(), suffix) == 0) {
        family = family.substr(0, family.size() - suffix.size());
      }
    }
    if (!types.count(family)) return bad("no TYPE for " + name);
    if (!samples.emplace(key, value).second) return bad("duplicate sample");
  }
  return samples;
}

}  // namespace flotilla::coordinator::testutil
