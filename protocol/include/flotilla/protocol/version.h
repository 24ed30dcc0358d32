// Protocol version and wire-size constants shared by every Flotilla component.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace flotilla::protocol {

// Version of the flotilla.v1 wire format carried in every EnvelopeBody. Bumped on any
// change old receivers cannot ignore (new optional fields and enum values do not count).
inline constexpr uint32_t kProtocolVersion = 1;

// Root of the MQTT topic tree (topics.h).
inline constexpr std::string_view kTopicPrefix = "fl/v1";

// Domain separation: envelope signatures are over kEnvelopeSignatureContext || body, so
// a signature made by the same identity key for another purpose (SecAgg adverts,
// consistency checks, OTA reports) can never pass as an envelope signature.
inline constexpr std::string_view kEnvelopeSignatureContext{"flotilla/v1/envelope\0", 21};

// MQTT payload policy (ARCHITECTURE.md section 5): aim for <= 64 KiB, hard cap 128 KiB
// (the test broker's message_size_limit). Larger blobs go over HTTP with a ClaimCheck.
inline constexpr size_t kTargetEnvelopeBytes = 64 * 1024;
inline constexpr size_t kMaxEnvelopeBytes = 128 * 1024;
// Room the envelope needs around its payload (ids, timestamp, DER signature <= 72 bytes,
// protobuf framing), so that a payload within kMaxPayloadBytes always seals.
inline constexpr size_t kEnvelopeOverheadBytes = 512;
inline constexpr size_t kMaxPayloadBytes = kMaxEnvelopeBytes - kEnvelopeOverheadBytes;

// Size of EnvelopeBody.message_id.
inline constexpr size_t kMessageIdBytes = 16;

// Identity of the coordinator (its certificate CN) and the recipient of uplink messages.
inline constexpr std::string_view kCoordinatorId = "coordinator";

}  // namespace flotilla::protocol
