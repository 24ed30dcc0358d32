// FLT_CHECK: invariants that only a bug can break. Aborts with file:line and message.
// Never use for untrusted input: that gets a Status.
#pragma once

namespace flotilla::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const char* msg);
}  // namespace flotilla::internal

#define FLT_CHECK(cond)                                                          \
  do {                                                                           \
    if (!(cond)) [[unlikely]]                                                    \
      ::flotilla::internal::CheckFailed(__FILE__, __LINE__, #cond, nullptr);    \
  } while (0)

#define FLT_CHECK_MSG(cond, msg)                                                 \
  do {                                                                           \
    if (!(cond)) [[unlikely]]                                                    \
      ::flotilla::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg));      \
  } while (0)

// Aborts if a Status/Result is not OK (for setup code in tools and tests).
#define FLT_CHECK_OK(expr)                                                                     \
  do {                                                                                         \
    ::flotilla::Status flt_check_status_ = ::flotilla::internal::AsStatus((expr));             \
    if (!flt_check_status_.ok()) [[unlikely]]                                                  \
      ::flotilla::internal::CheckFailed(__FILE__, __LINE__, #expr,                            \
                                        flt_check_status_.ToString().c_str());                 \
  } while (0)

#ifdef NDEBUG
#define FLT_DCHECK(cond) \
  do {                   \
  } while (0)
#else
#define FLT_DCHECK(cond) FLT_CHECK(cond)
#endif
