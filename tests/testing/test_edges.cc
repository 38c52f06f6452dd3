#include "tests/testing/test_edges.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/net/servers.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "tests/testing/fixtures.h"

namespace fedge::testing {

std::unique_ptr<edge::EdgeNode> StartTestEdge(
    const std::string& cloud_address, const std::string& state_dir, const std::string& node_id,
    int site, int64_t samples, const std::function<void(edge::EdgeNode::Options*)>& tweak) {
  edge::EdgeNode::Options o;
  o.node_id = node_id;
  o.cloud_address = cloud_address;
  o.state_dir = state_dir;
  o.inference_address = "127.0.0.1:0";
  o.metrics_address = "127.0.0.1:0";
  o.synthetic_site = site;
  o.synthetic_samples = samples;
  o.insecure = true;  // TestCloud is plaintext
  o.initial_backoff = absl::Milliseconds(20);
  if (tweak) tweak(&o);
  auto node = edge::EdgeNode::Start(o);
  return node.ok() ? std::move(*node) : nullptr;
}

bool PredictAll(int inference_port, const data::Dataset& rows) {
  auto stub =
      v1::Inference::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", inference_port)));
  const int64_t f = rows.num_features();
  for (int64_t start = 0; start < rows.size(); start += 100) {
    v1::PredictBatchRequest req;
    for (int64_t r = start; r < std::min<int64_t>(start + 100, rows.size()); ++r) {
      req.add_instances()->mutable_features()->Add(rows.features.begin() + r * f,
                                                   rows.features.begin() + (r + 1) * f);
    }
    v1::PredictBatchResponse resp;
    auto ctx = Context();
    if (!stub->PredictBatch(ctx.get(), req, &resp).ok()) return false;
  }
  return true;
}

bool IngestAll(int inference_port, const data::Dataset& rows) {
  auto stub = v1::Inference::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", inference_port)));
  const int64_t f = rows.num_features();
  auto ctx = Context();
  v1::IngestResponse resp;
  auto writer = stub->Ingest(ctx.get(), &resp);
  for (int64_t start = 0; start < rows.size(); start += 100) {
    v1::IngestRequest req;
    for (int64_t r = start; r < std::min<int64_t>(start + 100, rows.size()); ++r) {
      v1::LabelledSample* s = req.add_samples();
      s->mutable_features()->Add(rows.features.begin() + r * f,
                                 rows.features.begin() + (r + 1) * f);
      s->set_label(static_cast<int32_t>(rows.labels[static_cast<size_t>(r)]));
    }
    if (!writer->Write(req)) break;
  }
  writer->WritesDone();
  return writer->Finish().ok() && resp.accepted() == rows.size();
}

bool DeployEverywhere(v1::Admin::Stub* admin, const std::string& model,
                      const std::vector<std::unique_ptr<edge::EdgeNode>>& edges) {
  auto all = [&](const std::function<bool(const edge::EdgeNode&)>& pred) {
    for (const auto& e : edges) {
      if (!pred(*e)) return false;
    }
    return true;
  };
  if (!WaitUntil([&] { return all([](const edge::EdgeNode& e) { return e.connected(); }); })) {
    return false;
  }
  v1::DeployRequest req;
  req.set_model(model);
  v1::DeployResponse resp;
  auto ctx = Context();
  if (!admin->Deploy(ctx.get(), req, &resp).ok()) return false;
  return WaitUntil([&] {
    return all([&](const edge::EdgeNode& e) { return e.ActiveVersions().count(model) > 0; });
  });
}

bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace fedge::testing
