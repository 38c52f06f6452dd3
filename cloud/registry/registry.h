#ifndef FEDGE_CLOUD_REGISTRY_REGISTRY_H_
#define FEDGE_CLOUD_REGISTRY_REGISTRY_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"
#include "fedge/v1/model.pb.h"

namespace fedge::cloud::registry {

// The model registry and the coordinator's durable state: SQLite metadata (`registry.db`,
// WAL, schema versioned by PRAGMA user_version with forward migrations) plus content-addressed
// blobs (`blobs/<first two hex>/<sha256>`) under one data directory.
//
// Each logical change is one transaction. Blobs are written to a temporary name, fsynced and
// renamed into place, so a crash never leaves a partial blob under its digest. Thread-safe.
class Registry {
 public:
  struct Options {
    std::string data_dir;
    Clock* clock = Clock::Real();
  };

  // Creates the directory layout and the database if missing and migrates an older schema.
  static absl::StatusOr<std::unique_ptr<Registry>> Open(Options options);
  ~Registry();

  // The schema version this build writes.
  static int CurrentSchemaVersion();
  int SchemaVersion() const;

  // --- Blobs -------------------------------------------------------------------------------
  // Stores bytes, returns their sha256. Idempotent.
  absl::StatusOr<std::string> PutBlob(absl::string_view bytes);
  // Moves a finished file (for instance a staged upload) into the store after checking that
  // its content has the digest `sha256`. DATA_LOSS on a mismatch (the file is left alone).
  absl::Status AdoptBlobFile(const std::string& path, const std::string& sha256);
  absl::StatusOr<std::string> ReadBlob(const std::string& sha256) const;
  bool HasBlob(const std::string& sha256) const;
  // The file holding the blob (which may not exist).
  std::string BlobPath(const std::string& sha256) const;
  // A directory under data_dir for temporary and staged files; same filesystem as the blobs.
  std::string StagingDir() const;

  // --- Models and versions -----------------------------------------------------------------
  // Adds a new version of `version.model()`, creating the model on first use (with
  // `model_description`). Fills in the version number (latest + 1) and created time, unless
  // created_unix_ms is already set. FAILED_PRECONDITION if the blob is missing; NOT_FOUND if
  // parent_version is set but does not exist.
  absl::StatusOr<v1::Version> AddVersion(v1::Version version,
                                         const std::string& model_description = "");
  // version 0 means the latest. NOT_FOUND names the model and version.
  absl::StatusOr<v1::Version> GetVersion(const std::string& model, int64_t version) const;
  absl::StatusOr<std::vector<v1::Model>> ListModels() const;
  // Ascending by number. NOT_FOUND for an unknown model.
  absl::StatusOr<std::vector<v1::Version>> ListVersions(const std::string& model) const;

  // --- Jobs --------------------------------------------------------------------------------
  // Inserts or replaces the job, with the digest of its current global model (the base
  // version's blob before round 1, then each completed round's aggregate).
  absl::Status PutJob(const v1::Job& job, const std::string& global_sha256);
  // Marks the job succeeded with `version` as its result: adds the version and stores the job
  // (result_version filled in) in one transaction.
  absl::StatusOr<v1::Version> FinishJob(v1::Job job, v1::Version version);
  struct JobRecord {
    v1::Job job;
    std::string global_sha256;
  };
  absl::StatusOr<JobRecord> GetJob(const std::string& id) const;
  // Newest first.
  absl::StatusOr<std::vector<JobRecord>> ListJobs() const;
  // Jobs in JOB_PENDING or JOB_RUNNING, to resume after a restart.
  absl::StatusOr<std::vector<JobRecord>> UnfinishedJobs() const;

  // --- Deployment ----------------------------------------------------------------------------
  absl::Status SetDesiredVersion(const std::string& node_id, const v1::VersionRef& version);
  // The node has no desired version of the model any more (idempotent).
  absl::Status ClearDesiredVersion(const std::string& node_id, const std::string& model);
  // Keyed by model name.
  absl::StatusOr<std::vector<v1::VersionRef>> DesiredVersions(const std::string& node_id) const;

  // --- Governance (schema version 2) ---------------------------------------------------------
  // Who did a transition, and why. Every governance change below appends an audit entry built
  // from it in the same transaction as the change itself, timed by the injected clock. An empty
  // principal is recorded as "anonymous".
  // Bounds on what operators write into the registry, checked before anything is stored:
  // INVALID_ARGUMENT names the one passed. Versions stored before a bound existed are cut to
  // it when read, so that no record can make a read or a list fail.
  static constexpr size_t kMaxTags = 64;
  static constexpr size_t kMaxTagKey = 128;
  static constexpr size_t kMaxTagValue = 1024;
  static constexpr size_t kMaxReason = 1024;       // audit reasons
  static constexpr size_t kMaxDescription = 4096;  // model descriptions

  struct Audit {
    std::string principal;
    std::string reason;
  };

  absl::StatusOr<v1::Model> GetModel(const std::string& name) const;
  // Changes only what is set; the policy, when set, replaces the stored one whole. NOT_FOUND
  // for an unknown model. INVALID_ARGUMENT, naming the field, for keep_versions < 0 or a policy
  // threshold out of range (min_accuracy and max_regression in [0, 1], max_loss >= 0). Audit
  // action "update_model" (none when nothing is set).
  absl::StatusOr<v1::Model> UpdateModel(const std::string& name,
                                        const std::optional<std::string>& description,
                                        const std::optional<v1::GatePolicy>& policy,
                                        const std::optional<int32_t>& keep_versions,
                                        const Audit& audit);
  // Points `alias` at a version, moving it if it exists. Alias names follow the model name rule.
  // INVALID_ARGUMENT for version < 1; NOT_FOUND for an unknown version; FAILED_PRECONDITION for
  // an archived one. Audit action "alias" (or `action` if given, e.g. "promote",
  // "promote_forced"), detail "alias=<name> from=<old version or none>".
  absl::StatusOr<v1::Version> SetAlias(const std::string& model, const std::string& alias,
                                       int64_t version, const Audit& audit,
                                       const std::string& action = "alias");
  // NOT_FOUND if the alias does not exist. Audit action "unalias".
  absl::StatusOr<v1::Model> DeleteAlias(const std::string& model, const std::string& alias,
                                        const Audit& audit);
  // The version an alias points at; NOT_FOUND names the model and alias.
  absl::StatusOr<int64_t> ResolveAlias(const std::string& model, const std::string& alias) const;
  // Merges tags into the version's; an empty value deletes that tag. Audit action "tags",
  // detail "key=value -deleted_key ...". Versions are numbers >= 1 here and below (no "latest").
  absl::StatusOr<v1::Version> SetTags(const std::string& model, int64_t version,
                                      const std::map<std::string, std::string>& tags,
                                      const Audit& audit);
  // Stores a gate result on the version, filling validated_unix_ms (clock) and principal (the
  // audit's) when unset. Audit action "validate", detail "passed"/"failed: why".
  absl::StatusOr<v1::Version> SetValidation(const std::string& model, int64_t version,
                                            const v1::Validation& validation, const Audit& audit);
  // The version (0: the latest), its ancestors (parent first, archived ones included) and the
  // job that produced it (if any).
  absl::StatusOr<v1::Lineage> GetLineage(const std::string& model, int64_t version) const;
  // Archives every version of `model` except the newest `keep` ones, the aliased ones and those
  // in `protect` (deployed somewhere). Archiving keeps the metadata and deletes the artifact
  // unless another live version (of any model) or a job still references its digest. One audit
  // entry per archived version (action "archive"). Returns the versions archived, ascending.
  // keep == 0 keeps every version (as Model.keep_versions); keep < 0 is INVALID_ARGUMENT;
  // NOT_FOUND for an unknown model. Artifacts are removed after the archive commits; if removal
  // fails (UNAVAILABLE), the versions stay archived and the next call retries the removal.
  absl::StatusOr<std::vector<int64_t>> ApplyRetention(const std::string& model, int keep,
                                                      const std::set<int64_t>& protect,
                                                      const Audit& audit);
  // Appends a free-form audit entry (job and deployment transitions use this). Fills the time
  // from the clock when 0 and principal "anonymous" when empty; the id is assigned.
  // INVALID_ARGUMENT without an action.
  absl::Status AppendAudit(v1::AuditEntry entry);
  // Newest first. model / deployment_id filter when not empty; limit 0 means 100.
  absl::StatusOr<std::vector<v1::AuditEntry>> ListAudit(const std::string& model,
                                                        const std::string& deployment_id,
                                                        int limit) const;

  // --- Retraining policies (schema version 3) ------------------------------------------------
  // Stores the model's policy (replacing it) with an audit entry, in one transaction.
  absl::Status PutRetrainPolicy(const std::string& model, const v1::RetrainPolicy& policy,
                                const Audit& audit);
  // Every stored policy, by model.
  absl::StatusOr<std::map<std::string, v1::RetrainPolicy>> RetrainPolicies() const;

  // Deployments are stored whole; `audit`, when set, is appended in the same transaction (its
  // deployment_id, model and version default to the deployment's).
  absl::Status PutDeployment(const v1::Deployment& deployment,
                             const std::optional<v1::AuditEntry>& audit = std::nullopt);
  absl::StatusOr<v1::Deployment> GetDeployment(const std::string& id) const;
  // Newest first (created_unix_ms descending, then id).
  absl::StatusOr<std::vector<v1::Deployment>> ListDeployments() const;

 private:
  struct Impl;
  explicit Registry(std::unique_ptr<Impl> impl);
  // Sets fedge_cloud_registry_versions and fedge_cloud_deployment_state from the stored state.
  void PublishGauges() const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::cloud::registry

#endif  // FEDGE_CLOUD_REGISTRY_REGISTRY_H_
