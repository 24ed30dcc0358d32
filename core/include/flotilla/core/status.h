// Status and Result<T>: the one error model of Flotilla.
//
// Nothing throws across a module boundary. Functions that can fail return a
// [[nodiscard]] Status (or Result<T>); untrusted input always yields a Status whose
// message says what was wrong and where. Broken invariants use FLT_CHECK (check.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace flotilla {

// Append-only: values are persisted (SQLite) and sent over the wire.
enum class StatusCode : uint8_t {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

std::string_view ToString(StatusCode code);

// A success or an error: code, message, and a chain of context strings added as the
// error travels up ("while loading model.gguf"). Cheap to copy when OK. Not thread-safe
// to mutate concurrently; immutable use from several threads is fine.
class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::vector<std::string>& context() const { return context_; }

  // Returns a copy with `ctx` appended to the context chain (no-op when OK).
  Status WithContext(std::string ctx) const&;
  Status WithContext(std::string ctx) &&;

  // "INVALID_ARGUMENT: bad magic [while reading header; while opening x.gguf]" or "OK".
  std::string ToString() const;

  // Explicitly discards a status whose failure the caller has decided not to handle.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::vector<std::string> context_;
};

Status CancelledError(std::string message);
Status UnknownError(std::string message);
Status InvalidArgumentError(std::string message);
Status DeadlineExceededError(std::string message);
Status NotFoundError(std::string message);
Status AlreadyExistsError(std::string message);
Status PermissionDeniedError(std::string message);
Status ResourceExhaustedError(std::string message);
Status FailedPreconditionError(std::string message);
Status AbortedError(std::string message);
Status OutOfRangeError(std::string message);
Status UnimplementedError(std::string message);
Status InternalError(std::string message);
Status UnavailableError(std::string message);
Status DataLossError(std::string message);
Status UnauthenticatedError(std::string message);

[[noreturn]] void DieBadResultAccess(const Status& status);

// Result<T>: a T or a non-OK Status. Accessing the value of an error aborts with the
// status message (a programming error, like dereferencing an empty optional).
template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cvref_t<T>, Status>, "Result<Status> is meaningless");

 public:
  // NOLINTNEXTLINE(google-explicit-constructor): implicit from a value or an error.
  Result(T value) : v_(std::in_place_index<1>, std::move(value)) {}
  // NOLINTNEXTLINE(google-explicit-constructor)
  Result(Status status) : v_(std::in_place_index<0>, std::move(status)) {
    if (std::get<0>(v_).ok()) v_.template emplace<0>(InternalError("Result constructed from OK status"));
  }
  template <typename U,
            typename = std::enable_if_t<std::is_constructible_v<T, U&&> && !std::is_same_v<std::remove_cvref_t<U>, T> &&
                                        !std::is_same_v<std::remove_cvref_t<U>, Status>>>
  // NOLINTNEXTLINE(google-explicit-constructor)
  Result(U&& value) : v_(std::in_place_index<1>, T(std::forward<U>(value))) {}

  bool ok() const { return v_.index() == 1; }
  Status status() const& { return ok() ? Status() : std::get<0>(v_); }
  Status status() && { return ok() ? Status() : std::move(std::get<0>(v_)); }

  T& value() & {
    if (!ok()) DieBadResultAccess(std::get<0>(v_));
    return std::get<1>(v_);
  }
  const T& value() const& {
    if (!ok()) DieBadResultAccess(std::get<0>(v_));
    return std::get<1>(v_);
  }
  T&& value() && {
    if (!ok()) DieBadResultAccess(std::get<0>(v_));
    return std::move(std::get<1>(v_));
  }
  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? std::get<1>(v_) : static_cast<T>(std::forward<U>(fallback));
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> v_;
};

namespace internal {
inline Status AsStatus(Status s) { return s; }
template <typename T>
Status AsStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace internal

}  // namespace flotilla

#define FLT_INTERNAL_CONCAT2(a, b) a##b
#define FLT_INTERNAL_CONCAT(a, b) FLT_INTERNAL_CONCAT2(a, b)

// Returns the status from the enclosing function if `expr` (Status or Result) failed.
#define FLT_RETURN_IF_ERROR(expr)                                              \
  do {                                                                         \
    ::flotilla::Status flt_status_ = ::flotilla::internal::AsStatus((expr));   \
    if (!flt_status_.ok()) return flt_status_;                                 \
  } while (0)

// FLT_ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns on success, returns on error.
#define FLT_ASSIGN_OR_RETURN(lhs, expr) \
  FLT_INTERNAL_ASSIGN_OR_RETURN(FLT_INTERNAL_CONCAT(flt_result_, __LINE__), lhs, expr)
#define FLT_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
