#ifndef FEDGE_TESTS_TESTING_TEST_EDGES_H_
#define FEDGE_TESTS_TESTING_TEST_EDGES_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "common/data/dataset.h"
#include "edge/server/edge_node.h"
#include "fedge/v1/admin.grpc.pb.h"

namespace fedge::testing {

// A real edge on 127.0.0.1 port 0 serving synthetic site `site`, dialling `cloud_address`.
// `tweak` may change any option before the node starts.
std::unique_ptr<edge::EdgeNode> StartTestEdge(
    const std::string& cloud_address, const std::string& state_dir, const std::string& node_id,
    int site, int64_t samples,
    const std::function<void(edge::EdgeNode::Options*)>& tweak = nullptr);

// Scores every row of `rows` through the edge's PredictBatch, 100 rows a call; false if any
// call fails.
bool PredictAll(int inference_port, const data::Dataset& rows);

// Streams every row of `rows`, with its label, through the edge's Ingest in messages of 100
// samples; false if the call fails.
bool IngestAll(int inference_port, const data::Dataset& rows);

// Waits until every edge is connected, deploys the latest version of `model` to all nodes
// (Admin.Deploy) and waits until every edge serves it; false on a refusal or a timeout.
bool DeployEverywhere(v1::Admin::Stub* admin, const std::string& model,
                      const std::vector<std::unique_ptr<edge::EdgeNode>>& edges);

// Polls `done` every 10 ms until it holds or the timeout passes; returns its last value.
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10));

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TESTING_TEST_EDGES_H_
