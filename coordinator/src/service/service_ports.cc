#include "service_ports.h"

#include "flotilla/v1/device.pb.h"

namespace flotilla::coordinator::internal {

Status EnrolledDeviceKeys::Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const {
  FLT_ASSIGN_OR_RETURN(DeviceIdentity d, store_.GetDeviceIdentity(identity));
  if (d.status != DeviceStatus::kActive) return PermissionDeniedError("device '" + std::string(identity) + "' is revoked");
  std::lock_guard<std::mutex> lock(mu_);  // held through Verify: an eviction must not race it
  auto it = cached_.find(identity);
  if (it != cached_.end() && it->second.der == d.identity_public_key) {
    lru_.splice(lru_.begin(), lru_, it->second.use);
  } else {
    FLT_RETURN_IF_ERROR(ring_.AddDer(std::string(identity), d.identity_public_key));
    if (it != cached_.end()) {
      it->second.der = d.identity_public_key;
      lru_.splice(lru_.begin(), lru_, it->second.use);
    } else {
      while (cached_.size() >= capacity_) {
        ring_.Remove(lru_.back());
        cached_.erase(lru_.back());
        lru_.pop_back();
      }
      lru_.push_front(std::string(identity));
      cached_.emplace(std::string(identity), Cached{d.identity_public_key, lru_.begin()});
    }
  }
  return ring_.Verify(identity, message, signature);
}

bool EnrolledDeviceKeys::Allowed(std::string_view device_id) const {
  Result<DeviceIdentity> d = store_.GetDeviceIdentity(device_id);
  return d.ok() && d->status == DeviceStatus::kActive;
}

Result<std::vector<FleetDevice>> StoreFleetView::ListDevices() {
  std::vector<FleetDevice> out;
  DeviceFilter f;
  f.status = DeviceStatus::kActive;
  f.limit = 1000;
  for (;;) {
    FLT_ASSIGN_OR_RETURN(std::vector<DeviceRecord> page, store_.ListDevices(f));
    for (const DeviceRecord& d : page) {
      v1::HardwareInfo hw;
      if (!d.hardware.empty()) (void)hw.ParseFromArray(d.hardware.data(), static_cast<int>(d.hardware.size()));
      out.push_back({d.id, hw.hardware_class()});
    }
    if (static_cast<int>(page.size()) < f.limit) break;
    f.after_id = page.back().id;
  }
  return out;
}

}  // namespace flotilla::coordinator::internal
