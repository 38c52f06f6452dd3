#include "cloud/evaluation/federated.h"

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace fedge::cloud::evaluation {

absl::StatusOr<FederatedEvaluator::Result> FederatedEvaluator::Evaluate(
    const v1::VersionRef& version, const std::string& schema_hash, int min_nodes,
    absl::Duration timeout) {
  min_nodes = std::max(1, min_nodes);
  auto pending = std::make_shared<Pending>();
  std::vector<std::pair<std::string, v1::CloudMessage>> sends;
  const std::vector<std::string> nodes = fleet_->Eligible({}, "train");
  {
    MutexLock lock(&mu_);
    for (const std::string& node : nodes) {
      v1::CloudMessage msg;
      v1::EvaluateTask* task = msg.mutable_evaluate();
      task->set_task_id(absl::StrCat("eval-", next_++, "-", node));
      *task->mutable_version() = version;
      task->set_schema_hash(schema_hash);
      task->set_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + timeout));
      pending->tasks[task->task_id()] = node;
      by_task_[task->task_id()] = pending;
      sends.emplace_back(node, std::move(msg));
    }
  }
  for (auto& [node, msg] : sends) {
    if (!fleet_->Send(node, msg)) {
      MutexLock lock(&mu_);  // gone already: do not wait for it
      pending->tasks.erase(msg.evaluate().task_id());
      by_task_.erase(msg.evaluate().task_id());
    }
  }
  Result result;
  {
    MutexLock lock(&mu_);
    const absl::Time until = absl::Now() + timeout;
    while (!shutdown_ && pending->results.size() < pending->tasks.size() && absl::Now() < until) {
      cv_.WaitWithTimeout(&mu_, std::min(absl::Milliseconds(100), until - absl::Now()));
    }
    for (const auto& [task, node] : pending->tasks) by_task_.erase(task);
    double correct = 0, loss = 0;
    for (const auto& [task, r] : pending->results) {
      if (!r.error().empty() || r.num_samples() <= 0) {
        LOG(WARNING) << "node=" << pending->tasks[task] << " could not evaluate "
                     << version.model() << " v" << version.version() << ": " << r.error();
        continue;
      }
      ++result.nodes;
      result.samples += r.num_samples();
      correct += static_cast<double>(r.correct());
      loss += r.loss_sum();
    }
    if (result.samples > 0) {
      result.accuracy = correct / static_cast<double>(result.samples);
      result.loss = loss / static_cast<double>(result.samples);
    }
  }
  if (result.nodes < min_nodes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "federated evaluation of ", version.model(), " v", version.version(), ": ",
        result.nodes, " of ", nodes.size(), " asked node(s) answered; the policy needs ",
        min_nodes));
  }
  return result;
}

void FederatedEvaluator::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  cv_.SignalAll();
}

void FederatedEvaluator::OnResult(const std::string& node_id, const v1::EvaluateResult& result) {
  MutexLock lock(&mu_);
  auto it = by_task_.find(result.task_id());
  if (it == by_task_.end()) return;  // late or unknown
  auto task = it->second->tasks.find(result.task_id());
  if (task == it->second->tasks.end() || task->second != node_id) return;
  it->second->results[result.task_id()] = result;
  cv_.SignalAll();
}

}  // namespace fedge::cloud::evaluation
