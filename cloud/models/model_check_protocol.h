#ifndef FEDGE_CLOUD_MODELS_MODEL_CHECK_PROTOCOL_H_
#define FEDGE_CLOUD_MODELS_MODEL_CHECK_PROTOCOL_H_

namespace fedge::cloud::models {

// Exit codes of fedge-model-check, read by CheckArchiveInSandbox. On anything but success the
// helper's stdout holds a one-line message for the user.
inline constexpr int kModelCheckOk = 0;
inline constexpr int kModelCheckRefused = 2;      // the archive is not a usable model
inline constexpr int kModelCheckOutOfMemory = 3;  // std::bad_alloc under RLIMIT_AS
inline constexpr int kModelCheckUsage = 1;  // bad arguments (as absl flag parsing exits): our bug

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_MODEL_CHECK_PROTOCOL_H_
