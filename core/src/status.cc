#include "flotilla/core/status.h"

#include <cstdio>
#include <cstdlib>

namespace flotilla {

std::string_view ToString(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN_CODE";
}

Status::Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

Status Status::WithContext(std::string ctx) const& {
  Status copy = *this;
  return std::move(copy).WithContext(std::move(ctx));
}

Status Status::WithContext(std::string ctx) && {
  if (!ok()) context_.push_back(std::move(ctx));
  return std::move(*this);
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(flotilla::ToString(code_));
  out += ": ";
  out += message_;
  if (!context_.empty()) {
    out += " [";
    for (size_t i = 0; i < context_.size(); ++i) {
      if (i) out += "; ";
      out += "while ";
      out += context_[i];
    }
    out += "]";
  }
  return out;
}

#define FLT_DEFINE_ERROR(Name, Code) \
  Status Name(std::string message) { return Status(StatusCode::Code, std::move(message)); }
FLT_DEFINE_ERROR(CancelledError, kCancelled)
FLT_DEFINE_ERROR(UnknownError, kUnknown)
FLT_DEFINE_ERROR(InvalidArgumentError, kInvalidArgument)
FLT_DEFINE_ERROR(DeadlineExceededError, kDeadlineExceeded)
FLT_DEFINE_ERROR(NotFoundError, kNotFound)
FLT_DEFINE_ERROR(AlreadyExistsError, kAlreadyExists)
FLT_DEFINE_ERROR(PermissionDeniedError, kPermissionDenied)
FLT_DEFINE_ERROR(ResourceExhaustedError, kResourceExhausted)
FLT_DEFINE_ERROR(FailedPreconditionError, kFailedPrecondition)
FLT_DEFINE_ERROR(AbortedError, kAborted)
FLT_DEFINE_ERROR(OutOfRangeError, kOutOfRange)
FLT_DEFINE_ERROR(UnimplementedError, kUnimplemented)
FLT_DEFINE_ERROR(InternalError, kInternal)
FLT_DEFINE_ERROR(UnavailableError, kUnavailable)
FLT_DEFINE_ERROR(DataLossError, kDataLoss)
FLT_DEFINE_ERROR(UnauthenticatedError, kUnauthenticated)
#undef FLT_DEFINE_ERROR

void DieBadResultAccess(const Status& status) {
  std::fprintf(stderr, "flotilla: value() called on a failed Result: %s\n", status.ToString().c_str());
  std::abort();
}

}  // namespace flotilla
