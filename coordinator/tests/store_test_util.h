// Shared fixtures for the coordinator unit tests: a Store in a temp dir with a fake clock.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/file.h"
#include "flotilla/core/testing/fake_clock.h"

namespace flotilla::coordinator::testutil {

template <typename T>
T Must(Result<T> r) {
  if (!r.ok()) {
    ADD_FAILURE() << r.status().ToString();
    std::abort();
  }
  return std::move(r).value();
}

class StoreFixture : public ::testing::Test {
 protected:
  StoreFixture()
      : dir_(Must(TempDir::Create("flotilla-coord"))),
        clock_(std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000))) {
    store_ = Must(Store::Open(dir_.path(), {&clock_, nullptr, true}));
  }

  // A stand-in identity key (the store only compares bytes).
  static Bytes Key(int n) { return Bytes(91, static_cast<uint8_t>(n)); }

  static EnrolDeviceRequest Request(const std::string& id, Bytes key) {
    EnrolDeviceRequest r;
    r.device_id = id;
    r.identity_public_key = std::move(key);
    return r;
  }

  DeviceRecord Enrol(const std::string& id, Bytes key = Key(1), std::string cert = "") {
    EnrolDeviceRequest r = Request(id, std::move(key));
    r.certificate_pem = std::move(cert);
    return Must(store_->EnrolDevice(r, "test"));
  }

  TempDir dir_;
  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
};

}  // namespace flotilla::coordinator::testutil
