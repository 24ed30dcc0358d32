// Coordinator config: defaults, relative paths, validation messages.
#include "flotilla/coordinator/config.h"

#include <gtest/gtest.h>

namespace flotilla::coordinator {
namespace {

TEST(ConfigTest, ParsesAFullConfigAndResolvesRelativePaths) {
  auto c = ParseCoordinatorConfig(R"({
    "data_dir": "data", "pki_dir": "/etc/pki",
    "http": {"listen": "0.0.0.0", "port": 9000, "max_upload_bytes": 2048, "public_url": "https://c:9000"},
    "broker": {"uri": "ssl://127.0.0.1:8883"},
    "enrolment": {"require_token": true},
    "round_defaults": {"group": "eu", "min_cohort": 3},
    "metrics_flush_seconds": 5, "store_cache_kib": 4096})",
                                  "/srv/flotilla");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->data_dir, "/srv/flotilla/data");
  EXPECT_EQ(c->pki_dir, "/etc/pki");
  EXPECT_EQ(c->http_listen, "0.0.0.0");
  EXPECT_EQ(c->http_port, 9000);
  EXPECT_EQ(c->max_upload_bytes, 2048u);
  ASSERT_TRUE(c->broker.has_value());
  EXPECT_EQ(c->broker->ca_file, "/etc/pki/ca.crt");
  EXPECT_EQ(c->broker->key_file, "/etc/pki/coordinator.key");
  EXPECT_TRUE(c->enrolment.require_token);
  EXPECT_NE(c->round_defaults_json.find("\"min_cohort\":3"), std::string::npos);
  EXPECT_EQ(c->metrics_flush_seconds, 5);
  EXPECT_EQ(c->store_cache_kib, 4096);
}

TEST(ConfigTest, MinimalConfigHasDefaultsAndNoBroker) {
  auto c = ParseCoordinatorConfig(R"({"data_dir": "/d"})", "/x");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->http_port, 8080);
  EXPECT_FALSE(c->broker.has_value());
  EXPECT_FALSE(c->enrolment.require_token);
  EXPECT_EQ(c->store_cache_kib, 1024);
}

TEST(ConfigTest, RefusesBadInputWithTheKeyInTheMessage) {
  const std::pair<const char*, const char*> cases[] = {
      {"{", "not valid JSON"},
      {"[]", "JSON object"},
      {R"({})", "data_dir"},
      {R"({"data_dir": 5})", "data_dir"},
      {R"({"data_dir": "d", "htttp": {}})", "htttp"},
      {R"({"data_dir": "d", "http": {"port": 70000}})", "http.port"},
      {R"({"data_dir": "d", "http": {"port": "80"}})", "http.port"},
      {R"({"data_dir": "d", "broker": {"uri": "mqtt://x"}})", "broker.uri"},
      {R"({"data_dir": "d", "broker": {"uri": "ssl://x:1"}})", "broker"},
      {R"({"data_dir": "d", "enrolment": {"require_token": "yes"}})", "require_token"},
      {R"({"data_dir": "d", "round_defaults": 3})", "round_defaults"},
      {R"({"data_dir": "d", "store_cache_kib": 10})", "store_cache_kib"},
      {R"({"data_dir": "d", "store_cache_kib": "1M"})", "store_cache_kib"},
  };
  for (const auto& [text, needle] : cases) {
    auto c = ParseCoordinatorConfig(text, "/x");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().ToString();
  }
}

}  // namespace
}  // namespace flotilla::coordinator
