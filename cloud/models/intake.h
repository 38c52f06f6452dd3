#ifndef FEDGE_CLOUD_MODELS_INTAKE_H_
#define FEDGE_CLOUD_MODELS_INTAKE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cloud/models/contract.h"
#include "cloud/models/sandbox.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/model.pb.h"

namespace fedge::cloud::models {

// A checked model ready for the registry: its archive (with the contract inside as an extra
// file) and the version metadata derived from it.
struct Intake {
  std::string archive;
  v1::Version version;  // model, schema, schema_hash, contract, reason filled; no number yet
};

// Builds a version from a RegisterModel header: a built-in architecture compiled from
// TorchScript source, or a user's torch.jit.save archive. Checks the contract (feature names,
// labels, normalization sizes) and that the module maps [1, features] to [1, labels].
// A user archive is first checked against the header's archive_sha256 and tried in the
// fedge-model-check helper under `model_check` (CheckArchiveInSandbox); only an archive the
// helper accepts is loaded in this process, to be saved again with its contract, and its
// contract's architecture is kUserArchitecture. INVALID_ARGUMENT names what is wrong and how to fix
// it; FAILED_PRECONDITION if the helper is not installed.
absl::StatusOr<Intake> BuildVersion(const v1::RegisterModelHeader& header,
                                    absl::string_view user_archive,
                                    const SandboxLimits& model_check);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_INTAKE_H_
