#ifndef FEDGE_CLOUD_MODELS_MODEL_CHECK_PROTOCOL_H_
#define FEDGE_CLOUD_MODELS_MODEL_CHECK_PROTOCOL_H_

namespace fedge::cloud::models {

// Exit codes of fedge-model-check, read by CheckArchiveInSandbox. On anything but success the
// helper's stdout holds a one-line message for the user.
inline constexpr int kModelCheckOk = 0;
inline constexpr int kModelCheckRefused = 2;      // the archive is not a usable model
inline constexpr int kModelCheckOutOfMemory = 3;  // std::bad_alloc under RLIMIT_AS
inline constexpr int kModelCheckUsage = 1;  // bad arguments (as absl flag parsing exits): our bug

// AddressSanitizer and ThreadSanitizer reserve terabytes of address space for their shadow
// memory, so RLIMIT_AS cannot be applied in a sanitizer build (make check): the helper then
// skips that one limit, and the CPU, file and wall-clock limits still hold.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kAddressSpaceLimitApplies = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kAddressSpaceLimitApplies = false;
#else
inline constexpr bool kAddressSpaceLimitApplies = true;
#endif
#else
inline constexpr bool kAddressSpaceLimitApplies = true;
#endif

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_MODEL_CHECK_PROTOCOL_H_
