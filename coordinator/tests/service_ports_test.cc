// EnrolledDeviceKeys: the coordinator's device-signature verifier over the Store.
#include <gtest/gtest.h>

#include "../src/service/service_ports.h"
#include "flotilla/security/identity.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;

class EnrolledDeviceKeysTest : public testutil::StoreFixture {
 protected:
  struct Device {
    std::string id;
    std::shared_ptr<const security::EcdsaPrivateKey> key;
  };
  Device Make(const std::string& id) {
    auto key = std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate()));
    Enrol(id, key->public_key().der());
    return {id, key};
  }
  static Bytes Sign(const Device& d, ByteSpan message) {
    return Must(security::EcdsaSigner(d.id, d.key).Sign(message));
  }
};

TEST_F(EnrolledDeviceKeysTest, VerifiesEveryDeviceWithABoundedCacheAndRefusesTheRevoked) {
  // Capacity 2, four devices used round-robin: every verification misses the cache and
  // must still give the right answer, with the right key.
  internal::EnrolledDeviceKeys keys(*store_, 2);
  std::vector<Device> devices;
  for (int i = 0; i < 4; ++i) devices.push_back(Make("dev-" + std::to_string(i)));
  const Bytes message = {1, 2, 3, 4};
  for (int pass = 0; pass < 3; ++pass) {
    for (size_t i = 0; i < devices.size(); ++i) {
      const Bytes sig = Sign(devices[i], message);
      EXPECT_TRUE(keys.Verify(devices[i].id, message, sig).ok()) << devices[i].id;
      // Another device's signature never verifies as this one's.
      const Bytes other = Sign(devices[(i + 1) % devices.size()], message);
      EXPECT_EQ(keys.Verify(devices[i].id, message, other).code(), StatusCode::kUnauthenticated);
    }
  }
  EXPECT_EQ(keys.Verify("nobody", message, Sign(devices[0], message)).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->RevokeDevice("dev-1", "lost", "test").ok());
  EXPECT_EQ(keys.Verify("dev-1", message, Sign(devices[1], message)).code(), StatusCode::kPermissionDenied);
  EXPECT_FALSE(keys.Allowed("dev-1"));
  EXPECT_TRUE(keys.Allowed("dev-2"));
}

}  // namespace
}  // namespace flotilla::coordinator
