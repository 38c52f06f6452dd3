// Round handling against hand-driven edges: selection of K nodes, stragglers at the deadline,
// retries with a reason, and a clean end of every Session with UNAVAILABLE at shutdown.

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/net/servers.h"
#include "common/tensor/flat.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

class RoundsTest : public testing::CloudWithModelTest {
 protected:
  // Connects n fake edges; each answers every task it gets with a zero update unless it is
  // listed as silent. Counts the tasks each receives.
  void ConnectEdges(int n, std::set<int> silent = {}) {
    tasks_ = std::vector<std::atomic<int>>(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      edges_.push_back(std::make_unique<testing::FakeEdge>(channel_, absl::StrCat("e", i)));
    }
    for (int i = 0; i < n; ++i) {
      testing::FakeEdge* edge = edges_[static_cast<size_t>(i)].get();
      const bool answer = silent.count(i) == 0;
      threads_.emplace_back([this, edge, answer, i] {
        while (true) {
          auto task = edge->NextTask();
          if (!task.ok()) return;
          ++tasks_[static_cast<size_t>(i)];
          if (answer) {
            testing::SendUpdate(edge->stub(), edge->node_id(), *task,
                                std::vector<float>(static_cast<size_t>(num_elements_), 0.0f), 10);
          }
        }
      });
    }
    // Wait until the fleet sees them all.
    for (int i = 0; i < 200; ++i) {
      v1::ListNodesResponse nodes;
      auto ctx = testing::Context();
      admin_->ListNodes(ctx.get(), {}, &nodes);
      if (nodes.nodes_size() == n) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  v1::Job RunJob(v1::JobSpec spec) {
    const v1::Job job = StartJob(std::move(spec));
    auto done = testing::WaitForJob(admin_.get(), job.id(), absl::Seconds(60));
    EXPECT_TRUE(done.ok()) << done.status();
    return done.ok() ? *done : v1::Job();
  }

  std::vector<std::atomic<int>> tasks_;
};

TEST_F(RoundsTest, EachRoundSelectsKOfTheConnectedNodes) {
  ConnectEdges(3);
  v1::JobSpec spec;
  spec.set_rounds(4);
  spec.set_clients_per_round(2);
  spec.set_min_clients(2);
  spec.set_seed(5);
  v1::Job job = RunJob(spec);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  int total = 0;
  for (auto& t : tasks_) total += t;
  EXPECT_EQ(total, 4 * 2);  // exactly K tasks per round
  for (const auto& r : job.rounds()) EXPECT_EQ(r.participants(), 2);
}

TEST_F(RoundsTest, AtTheDeadlineARoundAggregatesIfTheMinimumArrived) {
  ConnectEdges(2, /*silent=*/{1});
  v1::JobSpec spec;
  spec.set_rounds(1);
  spec.set_clients_per_round(2);
  spec.set_min_clients(1);
  spec.set_round_timeout_ms(500);
  v1::Job job = RunJob(spec);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  ASSERT_EQ(job.rounds_size(), 1);
  EXPECT_EQ(job.rounds(0).state(), "done");
  EXPECT_EQ(job.rounds(0).participants(), 1);  // the straggler is left out
  EXPECT_GE(job.rounds(0).seconds(), 0.5);     // it waited for the deadline
}

TEST_F(RoundsTest, ARoundShortOfItsMinimumIsRetriedThenFailsWithTheReason) {
  ConnectEdges(2, /*silent=*/{1});
  v1::JobSpec spec;
  spec.set_rounds(3);
  spec.set_clients_per_round(2);
  spec.set_min_clients(2);
  spec.set_round_timeout_ms(300);
  spec.set_max_round_retries(1);
  v1::Job job = RunJob(spec);
  ASSERT_EQ(job.state(), v1::JOB_FAILED);
  EXPECT_NE(job.error().find("only 1 of the minimum 2"), std::string::npos) << job.error();
  ASSERT_EQ(job.rounds_size(), 2);
  EXPECT_EQ(job.rounds(0).state(), "retrying");
  EXPECT_EQ(job.rounds(0).attempt(), 1);
  EXPECT_EQ(job.rounds(1).state(), "failed");
  EXPECT_EQ(job.rounds(1).attempt(), 2);
  EXPECT_EQ(job.completed_rounds(), 0);
  // No version was registered for a failed job.
  v1::ListVersionsRequest req;
  req.set_model("m");
  v1::ListVersionsResponse resp;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->ListVersions(ctx.get(), req, &resp).ok());
  EXPECT_EQ(resp.versions_size(), 1);
}

TEST_F(RoundsTest, TooFewNodesConnectedFailsTheRoundWithTheReason) {
  v1::JobSpec spec;
  spec.set_rounds(1);
  spec.set_min_clients(2);
  spec.set_wait_for_clients_ms(200);
  v1::Job job = RunJob(spec);
  ASSERT_EQ(job.state(), v1::JOB_FAILED);
  EXPECT_NE(job.error().find("eligible node"), std::string::npos) << job.error();
}

TEST_F(RoundsTest, ShutdownEndsSessionsWithUnavailable) {
  testing::FakeEdge edge(channel_, "e-shutdown");
  v1::CloudMessage ack;
  ASSERT_TRUE(edge.Next(&ack));
  EXPECT_TRUE(ack.has_hello_ack());
  EXPECT_GT(ack.hello_ack().cloud_time_unix_ms(), 0);
  cloud_->Shutdown();
  v1::CloudMessage msg;
  while (edge.Next(&msg)) {
  }
  EXPECT_EQ(edge.Close().error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace fedge
