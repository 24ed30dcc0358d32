// The service's round configuration: round_defaults + POST /rounds "config" -> RoundSpec.
#include "service/round_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "flotilla/core/file.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/model_file.h"
#include "store_test_util.h"

namespace flotilla::coordinator::internal {
namespace {

using testutil::Must;

const std::string kBase = R"("base_model": {"version": "base-1", "sha256": ")" + std::string(64, 'a') + R"("})";

TEST(RoundConfigTest, ConfigIsMergedOverTheDefaults) {
  const std::string defaults = "{" + kBase + R"(, "group": "eu", "min_cohort": 3, "target_cohort": 8,
      "lora_rank": 8, "lora_targets": "q,k,v", "profile": "curious", "stage_timeout_seconds": 2.5})";
  const rounds::RoundSpec s = Must(RoundSpecFromConfig(R"({"target_cohort": 5, "local_steps": 7})", defaults, "r-1"));
  EXPECT_EQ(s.round_id, "r-1");
  EXPECT_EQ(s.group, "eu");
  EXPECT_EQ(s.min_cohort, 3u);
  EXPECT_EQ(s.target_cohort, 5u);
  EXPECT_EQ(s.profile, v1::SEC_AGG_PROFILE_CURIOUS);
  EXPECT_EQ(s.stage_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(s.training.rank(), 8u);
  EXPECT_EQ(s.training.lora_targets_size(), 3);
  EXPECT_EQ(s.training.local_steps(), 7u);
  EXPECT_EQ(s.training.mode(), v1::LORA_MODE_FROZEN_A);
  EXPECT_EQ(s.base_model.version(), "base-1");
  EXPECT_EQ(s.base_model.sha256(), std::string(32, '\xaa'));
}

TEST(RoundConfigTest, BadConfigsNameTheKey) {
  const std::string defaults = "{" + kBase + "}";
  struct Case {
    const char* config;
    const char* key;
  };
  for (const Case& c : {Case{R"({"min_cohort": 1})", "min_cohort"}, Case{R"({"rank": 4})", "rank"},
                        Case{R"({"profile": "paranoid"})", "profile"}, Case{R"({"lora_targets": "q,x"})", "lora_targets"},
                        Case{R"({"lora_mode": "fedavg"})", "lora_mode"}, Case{R"({"lora_mode": 2})", "lora_mode"},
                        Case{R"({"min_cohort": 9, "target_cohort": 4})", "min_cohort"},
                        Case{R"({"base_model": {"version": "b", "sha256": "12"}})", "base_model.sha256"},
                        Case{R"({"base_model_path": "/m.gguf"})", "base_model_path"}, Case{"[1]", "config"}}) {
    auto s = RoundSpecFromConfig(c.config, defaults, "r");
    ASSERT_FALSE(s.ok()) << c.config;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.key), std::string::npos) << s.status().ToString();
  }
  EXPECT_NE(RoundSpecFromConfig("{}", "{}", "r").status().message().find("base_model"), std::string::npos);
}

TEST(RoundConfigTest, DefaultsCarryTheInitialAdapterLength) {
  const RoundDefaults d = Must(ResolveRoundDefaults("{" + kBase + R"(, "initial_adapter_length": 96})"));
  EXPECT_EQ(d.initial_adapter_length, 96u);
  EXPECT_EQ(d.json.find("initial_adapter_length"), std::string::npos);  // start-time only
  EXPECT_TRUE(RoundSpecFromConfig("{}", d.json, "r").ok());
  EXPECT_EQ(ResolveRoundDefaults(R"({"base_model_path": "/nonexistent.gguf"})").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveRoundDefaults(R"({"typo": 1})").status().code(), StatusCode::kInvalidArgument);
}

TEST(RoundConfigTest, ABaseModelPathGivesTheBaseHashAndTheLoraBLength) {
  TempDir dir = Must(TempDir::Create("round-config"));
  model::ModelConfig mc;
  mc.dim = 32;
  mc.n_layers = 3;
  mc.n_heads = 4;
  mc.n_kv_heads = 2;  // GQA: v projects to kv_dim = 16
  mc.ffn_dim = 64;
  mc.vocab_size = 259;
  mc.context_length = 32;
  const std::filesystem::path path = dir.path() / "tiny-base.gguf";
  ASSERT_TRUE(model::WriteRandomModel(mc, {}, path).ok());
  const RoundDefaults d = Must(ResolveRoundDefaults(
      nlohmann::json{{"base_model_path", path.string()}, {"lora_rank", 2}, {"lora_targets", "q,v"}}.dump()));
  // B of q is [dim x rank], B of v is [kv_dim x rank], per layer.
  EXPECT_EQ(d.initial_adapter_length, static_cast<size_t>(mc.n_layers * (mc.dim + mc.kv_dim()) * 2));
  const rounds::RoundSpec s = Must(RoundSpecFromConfig("{}", d.json, "r"));
  EXPECT_EQ(s.base_model.version(), "tiny-base");
  EXPECT_EQ(ToHex(AsBytes(s.base_model.sha256())), Must(model::ModelFileSha256(path)));

  // FedIT: A is trainable too, [rank x in] per target and layer (in = dim for q and v).
  const RoundDefaults fedit = Must(ResolveRoundDefaults(nlohmann::json{{"base_model_path", path.string()},
                                                                       {"lora_rank", 2},
                                                                       {"lora_targets", "q,v"},
                                                                       {"lora_mode", "fedit"}}
                                                            .dump()));
  EXPECT_EQ(fedit.initial_adapter_length,
            static_cast<size_t>(mc.n_layers * ((mc.dim + mc.kv_dim()) * 2 + 2 * (2 * mc.dim))));
  EXPECT_EQ(Must(RoundSpecFromConfig("{}", fedit.json, "r")).training.mode(), v1::LORA_MODE_FEDIT);
}

}  // namespace
}  // namespace flotilla::coordinator::internal
