#ifndef FEDGE_CLOUD_INBOX_INBOX_H_
#define FEDGE_CLOUD_INBOX_INBOX_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::cloud::inbox {

// The MetricsReport entry with the labelled samples a node's sample store has taken in total.
inline constexpr char kSamplesTotal[] = "samples_total";

// The cloud's side of the edges' durable outboxes (`inbox.db` under data_dir).
//
// Every outbox message carries (node, epoch, id). Apply() records the message in the report
// log and moves the node's high-water mark in one SQLite transaction, so a message is applied
// exactly once even if the coordinator is killed between the two: either both are on disk or
// neither is, and the edge resends whatever was not acknowledged. The report log is the
// durable history of what the fleet said (deploy and task status, health, drift, evaluation
// results, metrics); it is pruned by age and count.
//
// Thread-safe.
class Inbox {
 public:
  struct Options {
    std::string data_dir;
    Clock* clock = Clock::Real();
    absl::Duration retention = absl::Hours(24 * 30);
    int64_t max_reports = 2000000;
  };

  enum class Result { kApplied, kDuplicate };

  static absl::StatusOr<std::unique_ptr<Inbox>> Open(Options options);
  ~Inbox();

  // The highest id of `epoch` applied for `node` (0 when the node's last epoch differs).
  absl::StatusOr<uint64_t> Applied(const std::string& node_id, const std::string& epoch);

  // Applies `message` (message_id > 0) from `node` of `epoch`: kDuplicate, with nothing
  // written, when its id is at or below the high-water mark; otherwise records it and moves the
  // mark in one transaction. INVALID_ARGUMENT for message_id 0 or an empty epoch.
  absl::StatusOr<Result> Apply(const std::string& node_id, const std::string& epoch,
                               const v1::EdgeMessage& message);

  // The latest value each node reported for `metric` in a MetricsReport.
  absl::StatusOr<std::map<std::string, double>> LatestMetric(const std::string& metric);

  // The data-arrival baseline of `model`: each node's kSamplesTotal when MarkSamples last ran
  // for it, or nullopt if it never did.
  absl::StatusOr<std::optional<std::map<std::string, double>>> SampleMarks(
      const std::string& model);
  // Sets the baseline of `model` to every node's latest kSamplesTotal.
  absl::Status MarkSamples(const std::string& model);

 private:
  struct Impl;
  explicit Inbox(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The message's kind as a short name ("drift", "health", ...), for logs and labels.
std::string KindName(const v1::EdgeMessage& message);

}  // namespace fedge::cloud::inbox

#endif  // FEDGE_CLOUD_INBOX_INBOX_H_
