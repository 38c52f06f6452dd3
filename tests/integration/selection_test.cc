// Node selection, over-selection, partial work and FedBuff's staleness weighting, against
// hand-driven edges on a real coordinator over loopback.

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/codec/codec.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"
#include "common/torch/model.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

class SelectionTest : public testing::CloudWithModelTest {
 protected:
  testing::FakeEdge* Connect(const std::string& id, const v1::Hello& hello = v1::Hello()) {
    edges_.push_back(std::make_unique<testing::FakeEdge>(
        channel_, id, std::map<std::string, v1::VersionRef>{}, "", hello));
    return edges_.back().get();
  }

  // Answers every task of `edge` with a zero update in a thread, counting the tasks by node.
  void Answer(testing::FakeEdge* edge) {
    threads_.emplace_back([this, edge] {
      while (true) {
        auto task = edge->NextTask();
        if (!task.ok()) return;
        {
          MutexLock lock(&mu_);
          ++tasks_[edge->node_id()];
        }
        testing::SendUpdate(edge->stub(), edge->node_id(), *task,
                            std::vector<float>(static_cast<size_t>(num_elements_), 0.0f), 10);
      }
    });
  }

  void WaitForNodes(int n) {
    ASSERT_TRUE(testing::WaitUntil([&] {
      v1::ListNodesResponse nodes;
      auto ctx = testing::Context();
      admin_->ListNodes(ctx.get(), {}, &nodes);
      return nodes.nodes_size() == n;
    }));
  }

  v1::Job Start(v1::JobSpec spec) { return StartJob(std::move(spec)); }

  v1::Job Wait(const std::string& id) {
    auto done = testing::WaitForJob(admin_.get(), id, absl::Seconds(60));
    EXPECT_TRUE(done.ok()) << done.status();
    return done.ok() ? *done : v1::Job();
  }

  v1::Job Get(const std::string& id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    auto ctx = testing::Context();
    admin_->GetJob(ctx.get(), req, &job);
    return job;
  }

  FlatTensor VersionFlat(int64_t version) {
    auto archive = testing::DownloadVersion(admin_.get(), "m", version);
    EXPECT_TRUE(archive.ok()) << archive.status();
    if (!archive.ok()) return {};
    auto model = torchlib::Model::Load(*archive);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? (*model)->Flat() : FlatTensor();
  }

  std::map<std::string, int> Tasks() {
    MutexLock lock(&mu_);
    return tasks_;
  }

  Mutex mu_;
  std::map<std::string, int> tasks_ ABSL_GUARDED_BY(mu_);
};

v1::Hello Machine(const std::string& cohort, int cores, int64_t memory_mb) {
  v1::Hello h;
  (*h.mutable_labels())["cohort"] = cohort;
  h.set_cpu_cores(cores);
  h.set_memory_mb(memory_mb);
  return h;
}

TEST_F(SelectionTest, CohortAndCapabilitiesDecideWhoTrains) {
  // Only e-a-big is in cohort a with >= 2 cores and >= 1024 MB.
  Answer(Connect("e-a-big", Machine("a", 4, 4096)));
  Answer(Connect("e-a-few-cores", Machine("a", 1, 4096)));
  Answer(Connect("e-a-little-memory", Machine("a", 4, 512)));
  Answer(Connect("e-b-big", Machine("b", 8, 8192)));
  WaitForNodes(4);
  v1::JobSpec spec;
  spec.set_rounds(3);
  spec.mutable_selection()->set_cohort("a");
  spec.mutable_selection()->set_min_cpu_cores(2);
  spec.mutable_selection()->set_min_memory_mb(1024);
  v1::Job job = Wait(Start(spec).id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  EXPECT_EQ(Tasks(), (std::map<std::string, int>{{"e-a-big", 3}}));
  EXPECT_EQ(job.spec().selector().at("cohort"), "a");

  v1::ListNodesResponse nodes;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->ListNodes(ctx.get(), {}, &nodes).ok());
  for (const auto& n : nodes.nodes()) {
    if (n.node_id() == "e-b-big") {
      EXPECT_EQ(n.cpu_cores(), 8);
      EXPECT_EQ(n.memory_mb(), 8192);
    }
  }
}

TEST_F(SelectionTest, AFractionOfTheEligibleNodesWithAMinimum) {
  for (int i = 0; i < 10; ++i) Answer(Connect(absl::StrCat("e", i)));
  WaitForNodes(10);
  v1::JobSpec spec;
  spec.set_rounds(2);
  spec.mutable_selection()->set_fraction(0.25);  // ceil(2.5) = 3 of 10
  v1::Job job = Wait(Start(spec).id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  for (const auto& r : job.rounds()) {
    EXPECT_EQ(r.selected(), 3);
    EXPECT_EQ(r.participants(), 3);
  }
  spec.set_min_clients(5);  // the minimum lifts the share
  job = Wait(Start(spec).id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  for (const auto& r : job.rounds()) EXPECT_EQ(r.selected(), 5);
}

TEST_F(SelectionTest, OverSelectionClosesTheRoundAtKAndRefusesTheStraggler) {
  Answer(Connect("fast-0"));
  Answer(Connect("fast-1"));
  testing::FakeEdge* slow = Connect("slow");
  WaitForNodes(3);
  v1::JobSpec spec;
  spec.set_rounds(1);
  spec.set_clients_per_round(2);
  spec.set_min_clients(2);
  spec.set_round_timeout_ms(30000);
  spec.mutable_selection()->set_over_selection(0.5);  // ask ceil(2 * 1.5) = 3
  v1::Job started = Start(spec);
  auto task = slow->NextTask();
  ASSERT_TRUE(task.ok()) << task.status();
  v1::Job job = Wait(started.id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  ASSERT_EQ(job.rounds_size(), 1);
  EXPECT_EQ(job.rounds(0).selected(), 3);
  EXPECT_EQ(job.rounds(0).participants(), 2);
  EXPECT_LT(job.rounds(0).seconds(), 20.0);  // it did not wait for the 30 s deadline
  grpc::Status late = testing::SendUpdate(
      slow->stub(), "slow", *task, std::vector<float>(static_cast<size_t>(num_elements_), 0.0f), 10);
  EXPECT_EQ(late.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << late.error_message();
}

// Two nodes; "full" runs all 3 epochs, "partial" stops after 1. Without accept_partial_work
// the partial update is refused and the model moves by the full one alone; with it, both count.
TEST_F(SelectionTest, PartialWorkIsDroppedOrKeptAsTheJobSays) {
  testing::FakeEdge* full = Connect("full");
  testing::FakeEdge* part = Connect("partial");
  WaitForNodes(2);
  const FlatTensor base = VersionFlat(1);
  ASSERT_EQ(static_cast<int64_t>(base.size()), num_elements_);
  const std::vector<float> d_full(base.size(), 0.25f), d_part(base.size(), -0.5f);
  for (bool accept : {false, true}) {
    SCOPED_TRACE(accept ? "accepting partial work" : "dropping partial work");
    v1::JobSpec spec;
    spec.set_rounds(1);
    spec.set_local_epochs(3);
    spec.set_min_clients(1);
    spec.set_base_version(1);
    spec.mutable_selection()->set_accept_partial_work(accept);
    v1::Job started = Start(spec);
    auto t_full = full->NextTask();
    auto t_part = part->NextTask();
    ASSERT_TRUE(t_full.ok() && t_part.ok());
    EXPECT_EQ(t_part->accept_partial_work(), accept);
    grpc::Status st = testing::SendUpdate(part->stub(), "partial", *t_part, d_part, 30, {{"epochs", 1}});
    if (accept) {
      EXPECT_TRUE(st.ok()) << st.error_message();
    } else {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_THAT(st.error_message(), ::testing::HasSubstr("1 of 3 local epochs"));
    }
    ASSERT_TRUE(testing::SendUpdate(full->stub(), "full", *t_full, d_full, 10, {{"epochs", 3}}).ok());
    v1::Job job = Wait(started.id());
    ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
    EXPECT_EQ(job.rounds(0).participants(), accept ? 2 : 1);
    EXPECT_EQ(job.rounds(0).partial(), accept ? 1 : 0);
    EXPECT_EQ(job.rounds(0).dropped(), accept ? 0 : 1);
    const FlatTensor out = VersionFlat(job.result_version());
    ASSERT_EQ(out.size(), base.size());
    // By hand: the sample-weighted mean of what was kept.
    const double moved = accept ? (10 * 0.25 + 30 * -0.5) / 40.0 : 0.25;
    for (size_t i = 0; i < out.size(); i += 97) EXPECT_NEAR(out[i], base[i] + moved, 1e-5);
  }
}

// FedBuff with a buffer of 2 and three nodes training at once. Step 1 folds e0 and e1 (fresh);
// e2's update, trained on the step-0 model, arrives after step 1 and counts 1/sqrt(2) in
// step 2 beside e0's second update.
TEST_F(SelectionTest, FedBuffWeighsStaleUpdatesDown) {
  testing::FakeEdge* e0 = Connect("e0");
  testing::FakeEdge* e1 = Connect("e1");
  testing::FakeEdge* e2 = Connect("e2");
  WaitForNodes(3);
  const FlatTensor base = VersionFlat(1);
  const size_t n = base.size();
  v1::JobSpec spec;
  spec.set_rounds(2);
  spec.set_base_version(1);
  spec.set_round_timeout_ms(30000);
  spec.mutable_async()->set_enabled(true);
  spec.mutable_async()->set_buffer_size(2);
  spec.mutable_async()->set_concurrency(3);
  v1::Job started = Start(spec);
  auto t0 = e0->NextTask(), t1 = e1->NextTask(), t2 = e2->NextTask();
  ASSERT_TRUE(t0.ok() && t1.ok() && t2.ok());
  EXPECT_EQ(t0->round(), 1);
  EXPECT_EQ(t2->round(), 1);
  ASSERT_TRUE(testing::SendUpdate(e0->stub(), "e0", *t0, std::vector<float>(n, 0.1f), 10).ok());
  ASSERT_TRUE(testing::SendUpdate(e1->stub(), "e1", *t1, std::vector<float>(n, 0.3f), 10).ok());
  ASSERT_TRUE(testing::WaitUntil([&] { return Get(started.id()).completed_rounds() == 1; }));
  ASSERT_TRUE(testing::SendUpdate(e2->stub(), "e2", *t2, std::vector<float>(n, 0.4f), 10).ok());
  // e0 was free again once its update was in: its next task is on the model of step 0 or 1,
  // depending on whether e1's update had completed step 1 when the task went out.
  auto t0b = e0->NextTask();
  ASSERT_TRUE(t0b.ok());
  ASSERT_TRUE(t0b->round() == 1 || t0b->round() == 2) << t0b->round();
  ASSERT_TRUE(testing::SendUpdate(e0->stub(), "e0", *t0b, std::vector<float>(n, -0.2f), 30).ok());
  v1::Job job = Wait(started.id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  EXPECT_EQ(job.completed_rounds(), 2);
  const double step1 = (0.1 + 0.3) / 2;
  // Staleness s counts 1/(1+s)^0.5: e2's is 1; e0's second is 2 - its task's round.
  const double e0_scale = t0b->round() == 2 ? 1.0 : 1 / std::sqrt(2.0);
  const double step2 = (10 * 0.4 / std::sqrt(2.0) + 30 * -0.2 * e0_scale) / 40;
  const FlatTensor out = VersionFlat(job.result_version());
  ASSERT_EQ(out.size(), n);
  for (size_t i = 0; i < n; i += 97) EXPECT_NEAR(out[i], base[i] + step1 + step2, 1e-5);
}

TEST_F(SelectionTest, FedBuffRefusesUpdatesStalerThanTheLimit) {
  testing::FakeEdge* e0 = Connect("e0");
  testing::FakeEdge* e1 = Connect("e1");
  WaitForNodes(2);
  const size_t n = static_cast<size_t>(num_elements_);
  v1::JobSpec spec;
  spec.set_rounds(3);
  spec.set_round_timeout_ms(30000);
  spec.mutable_async()->set_enabled(true);
  spec.mutable_async()->set_buffer_size(1);
  spec.mutable_async()->set_max_staleness(1);
  v1::Job started = Start(spec);
  auto old = e1->NextTask();  // trained on the step-0 model, sent after two steps
  ASSERT_TRUE(old.ok());
  for (int step = 1; step <= 2; ++step) {
    auto t = e0->NextTask();
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(testing::SendUpdate(e0->stub(), "e0", *t, std::vector<float>(n, 0.0f), 10).ok());
    ASSERT_TRUE(testing::WaitUntil([&] { return Get(started.id()).completed_rounds() == step; }));
  }
  grpc::Status st = testing::SendUpdate(e1->stub(), "e1", *old, std::vector<float>(n, 0.0f), 10);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("2 server steps stale"));
}

// An int8 job: the task names the encoding, an F32 update is refused, and the int8 update
// folds within one quantization step (max|x|/127 per block) of the original delta.
TEST_F(SelectionTest, CompressedUpdatesAreNegotiatedPerJob) {
  testing::FakeEdge* edge = Connect("e0");
  WaitForNodes(1);
  const FlatTensor base = VersionFlat(1);
  const size_t n = base.size();
  v1::JobSpec spec;
  spec.set_rounds(1);
  spec.set_base_version(1);
  spec.mutable_compression()->set_encoding("int8");
  spec.mutable_compression()->set_block_size(64);
  v1::Job started = Start(spec);
  auto task = edge->NextTask();
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(task->encoding(), v1::INT8);
  EXPECT_EQ(task->block_size(), 64);
  std::vector<float> delta(n);
  for (size_t i = 0; i < n; ++i) delta[i] = 0.01f * static_cast<float>(static_cast<int>(i % 41) - 20);
  grpc::Status wrong = testing::SendUpdate(edge->stub(), "e0", *task, delta, 10);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(wrong.error_message(), ::testing::HasSubstr("int8"));
  codec::CodecParams params;
  params.encoding = codec::Encoding::kInt8;
  params.block_size = 64;
  auto payload = codec::Encode(delta, params, /*seed=*/3);
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_LT(payload->size(), n * 4 / 3);  // about a byte a value, against four
  ASSERT_TRUE(testing::SendPayload(edge->stub(), "e0", *task, *payload, v1::INT8, 10).ok());
  v1::Job job = Wait(started.id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  EXPECT_EQ(job.rounds(0).bytes_up(), static_cast<int64_t>(payload->size()));
  const FlatTensor out = VersionFlat(job.result_version());
  ASSERT_EQ(out.size(), n);
  for (size_t i = 0; i < n; ++i) {
    float block_max = 0;
    for (size_t j = i / 64 * 64; j < std::min(n, i / 64 * 64 + 64); ++j) {
      block_max = std::max(block_max, std::abs(delta[j]));
    }
    ASSERT_NEAR(out[i] - base[i], delta[i], block_max / 127 * 1.001 + 1e-6) << "value " << i;
  }
}

TEST_F(SelectionTest, BadStrategyAndSelectionSpecsAreRefusedByName) {
  struct Case {
    std::function<void(v1::JobSpec*)> set;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](v1::JobSpec* s) { s->mutable_aggregation()->set_rule("average"); }, "average"},
      {[](v1::JobSpec* s) { s->mutable_aggregation()->set_server_optimizer("fedsgd"); }, "fedsgd"},
      {[](v1::JobSpec* s) { s->mutable_aggregation()->set_clip_norm(-1); }, "clip_norm"},
      {[](v1::JobSpec* s) {
         s->mutable_aggregation()->set_rule("trimmed_mean");
         s->mutable_aggregation()->set_trim_fraction(0.7);
       },
       "trim"},
      {[](v1::JobSpec* s) { s->mutable_selection()->set_fraction(1.5); }, "selection.fraction"},
      {[](v1::JobSpec* s) { s->mutable_compression()->set_encoding("zip"); }, "zip"},
      {[](v1::JobSpec* s) {
         s->mutable_compression()->set_encoding("topk");
         s->mutable_compression()->set_topk_fraction(2);
       },
       "compression"},
      {[](v1::JobSpec* s) { s->mutable_selection()->set_over_selection(-1); }, "over_selection"},
      {[](v1::JobSpec* s) {
         (*s->mutable_selector())["cohort"] = "a";
         s->mutable_selection()->set_cohort("b");
       },
       "cohort"},
      {[](v1::JobSpec* s) {
         s->mutable_async()->set_enabled(true);
         s->mutable_aggregation()->set_rule("median");
       },
       "async"},
      {[](v1::JobSpec* s) {
         s->mutable_async()->set_enabled(true);
         s->mutable_async()->set_buffer_size(-2);
       },
       "buffer_size"},
  };
  for (const Case& c : cases) {
    v1::StartJobRequest req;
    req.mutable_spec()->set_model("m");
    c.set(req.mutable_spec());
    v1::Job job;
    auto ctx = testing::Context();
    grpc::Status st = admin_->StartJob(ctx.get(), req, &job);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(st.error_message(), ::testing::HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace fedge
