// Pure parts of the OTA fleet simulator: phase and fault-kind parsing, the seeded fault
// decisions, and the faulting proxy in front of a real ArtifactServer (each fault kind
// as the device's HttpFetcher sees it, and faithful pass-through of Range requests).
#include <gtest/gtest.h>

#include "fault_proxy.h"
#include "flotilla/core/file.h"
#include "flotilla/ota/artifact_server.h"
#include "flotilla/ota/fetcher.h"
#include "flotilla/simulator/ota_fleet.h"

namespace flotilla::simulator {
namespace {

TEST(OtaFleetPartsTest, ParsesPhases) {
  auto p = ParseOtaPhases("canary:5,10,50,100");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->canary_devices, 5u);
  EXPECT_EQ(p->percents, (std::vector<double>{10, 50, 100}));
  p = ParseOtaPhases("2.5,100");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->canary_devices, 0u);
  EXPECT_EQ(p->percents, (std::vector<double>{2.5, 100}));
  for (const char* bad : {"", "10,50", "canary:5", "50,10,100", "10,,100", "canary:0,100", "canary:x,100",
                          "10,canary:5,100", "0,100", "101", "nan,100", "10%,100"}) {
    EXPECT_EQ(ParseOtaPhases(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(OtaFleetPartsTest, ParsesDownloadFaultKinds) {
  auto f = ParseDownloadFaults("stall,5xx,stall");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, (std::vector<DownloadFault>{DownloadFault::kStalled, DownloadFault::kServerError}));
  EXPECT_EQ(ParseDownloadFaults("5xx,404").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDownloadFaults("").status().code(), StatusCode::kInvalidArgument);
}

TEST(OtaFleetPartsTest, FaultDecisionsAreSeededAndUniform) {
  int below = 0;
  for (uint64_t n = 0; n < 20000; ++n) below += internal::Unit(7, internal::HashName("dev-1"), n) < 0.25;
  EXPECT_NEAR(below / 20000.0, 0.25, 0.02);
  EXPECT_EQ(internal::Mix(1, 2, 3), internal::Mix(1, 2, 3));
  EXPECT_NE(internal::Mix(1, 2, 3), internal::Mix(2, 2, 3));
  EXPECT_NE(internal::HashName("dev-1"), internal::HashName("dev-2"));
}

class FaultProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("flotilla-fault-proxy");
    ASSERT_TRUE(dir.ok());
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    body_.resize(100000);
    for (size_t i = 0; i < body_.size(); ++i) body_[i] = static_cast<uint8_t>(i * 13 + (i >> 9));
    std::filesystem::create_directories(dir_->path() / "artifacts");
    ASSERT_TRUE(WriteFileAtomic(dir_->path() / "artifacts" / "a", body_).ok());
    ASSERT_TRUE(WriteFileAtomic(dir_->path() / "meta.pb", ToBytes("metadata")).ok());
    auto server = ota::ArtifactServer::Start(dir_->path());
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
  }

  std::unique_ptr<internal::FaultProxy> Proxy(double rate, std::vector<DownloadFault> kinds) {
    internal::FaultProxyOptions o;
    o.upstream = server_->base_url();
    o.rate = rate;
    o.kinds = std::move(kinds);
    o.stall = std::chrono::milliseconds(600);
    auto p = internal::FaultProxy::Start(o);
    EXPECT_TRUE(p.ok());
    return p.ok() ? std::move(p).value() : nullptr;
  }

  Result<ota::RangeResponse> Fetch(const internal::FaultProxy& proxy, uint64_t offset, Bytes* got,
                                   const std::string& if_range = "") {
    ota::HttpFetcherOptions fo;
    fo.base_url = proxy.DeviceBaseUrl("dev-1");
    fo.read_timeout = std::chrono::milliseconds(300);
    fo.min_bytes_per_second = 0;
    auto fetcher = ota::HttpFetcher::Create(fo);
    if (!fetcher.ok()) return fetcher.status();
    ota::RangeRequest req;
    req.path = "artifacts/a";
    req.offset = offset;
    req.if_range = if_range;
    return (*fetcher)->FetchRange(
        req, [](const ota::RangeResponse&) { return Status::Ok(); },
        [got](ByteSpan data) {
          got->insert(got->end(), data.begin(), data.end());
          return Status::Ok();
        });
  }

  std::unique_ptr<TempDir> dir_;
  Bytes body_;
  std::unique_ptr<ota::ArtifactServer> server_;
};

TEST_F(FaultProxyTest, PassesRangeRequestsThroughUnchanged) {
  auto proxy = Proxy(0, {});
  ASSERT_NE(proxy, nullptr);
  Bytes all, tail;
  auto full = Fetch(*proxy, 0, &all);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ(full->http_status, 200);
  EXPECT_EQ(all, body_);
  auto part = Fetch(*proxy, 60000, &tail, full->etag);
  ASSERT_TRUE(part.ok()) << part.status().ToString();
  EXPECT_EQ(part->http_status, 206);
  EXPECT_EQ(tail, Bytes(body_.begin() + 60000, body_.end()));
  EXPECT_EQ(proxy->faults_injected(), 0u);
}

TEST_F(FaultProxyTest, EachFaultKindFailsTheTransferAsTheDeviceSeesIt) {
  for (DownloadFault kind : {DownloadFault::kServerError, DownloadFault::kTruncated, DownloadFault::kStalled}) {
    auto proxy = Proxy(1, {kind});
    ASSERT_NE(proxy, nullptr);
    Bytes got;
    auto r = Fetch(*proxy, 0, &got);
    if (kind == DownloadFault::kServerError) {
      EXPECT_TRUE(!r.ok() || r->http_status == 503) << ToString(kind);
    } else {
      EXPECT_FALSE(r.ok()) << ToString(kind) << ": a cut body must not look complete";
      EXPECT_LT(got.size(), body_.size()) << ToString(kind);
      EXPECT_EQ(Bytes(body_.begin(), body_.begin() + static_cast<std::ptrdiff_t>(got.size())), got)
          << ToString(kind) << ": what arrives is a true prefix";
    }
    EXPECT_EQ(proxy->faults_injected(), 1u) << ToString(kind);
    EXPECT_EQ(proxy->FaultsPerDevice().at("dev-1"), 1u);
  }
}

}  // namespace
}  // namespace flotilla::simulator
