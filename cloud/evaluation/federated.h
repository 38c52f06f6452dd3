#ifndef FEDGE_CLOUD_EVALUATION_FEDERATED_H_
#define FEDGE_CLOUD_EVALUATION_FEDERATED_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/fleet/fleet.h"
#include "common/sync/mutex.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::evaluation {

// Federated evaluation: asks every alive node that can train (it has labelled local data) to
// score a version on its local holdout, and pools the answers weighted by sample count. No
// data leaves the edges, only counts. Thread-safe; Evaluate blocks its caller until every asked
// node has answered or the timeout passes.
class FederatedEvaluator {
 public:
  explicit FederatedEvaluator(fleet::Fleet* fleet) : fleet_(fleet) {}

  struct Result {
    int nodes = 0;
    int64_t samples = 0;
    double accuracy = 0;
    double loss = 0;
  };
  // FAILED_PRECONDITION if fewer than min_nodes answered with samples by the timeout.
  absl::StatusOr<Result> Evaluate(const v1::VersionRef& version, const std::string& schema_hash,
                                  int min_nodes, absl::Duration timeout);
  // Ends every Evaluate in progress with what has arrived (coordinator shutdown).
  void Shutdown();
  // An EvaluateResult from a node's Session.
  void OnResult(const std::string& node_id, const v1::EvaluateResult& result);

 private:
  struct Pending {
    std::map<std::string, std::string> tasks;  // task id -> node
    std::map<std::string, v1::EvaluateResult> results;
  };
  fleet::Fleet* const fleet_;
  Mutex mu_;
  CondVar cv_;
  std::map<std::string, std::shared_ptr<Pending>> by_task_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fedge::cloud::evaluation

#endif  // FEDGE_CLOUD_EVALUATION_FEDERATED_H_
