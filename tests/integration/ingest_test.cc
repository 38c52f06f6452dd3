// Labelled samples into the edge's sample store over real gRPC: the Ingest stream (counts,
// precise refusals, all or nothing per message) and Feedback on remembered predictions.

#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "edge/runtime/runtime.h"
#include "edge/samples/sample_store.h"
#include "edge/serving/health.h"
#include "edge/serving/inference_service.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge {
namespace {

const std::vector<std::string>& Labels() { return data::SyntheticLabels(); }
int64_t Width() { return static_cast<int64_t>(data::SyntheticFeatureNames({}).size()); }

// A built-in archive whose contract names the classes `labels`.
std::string Archive(const std::vector<std::string>& labels) {
  torchlib::BuiltinOptions opt;
  opt.num_features = Width();
  opt.num_classes = static_cast<int64_t>(labels.size());
  opt.hidden = {8};
  opt.seed = 1;
  auto model = torchlib::Model::Builtin(opt);
  EXPECT_TRUE(model.ok());
  v1::ModelContract c;
  for (const auto& f : data::SyntheticFeatureNames({})) c.add_feature_names(f);
  for (const auto& l : labels) c.add_labels(l);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c, &json);
  (*model)->SetExtraFile(torchlib::kContractFile, json);
  return *(*model)->Serialize();
}

// Rows of the file by source, read with SQLite itself.
std::map<std::string, int64_t> RowsBySource(const std::string& path) {
  std::map<std::string, int64_t> out;
  for (const auto& row :
       testing::QueryFile(path, "SELECT source, COUNT(*) FROM samples GROUP BY source")) {
    out[row[0]] = std::stoll(row[1]);
  }
  return out;
}

// One IngestRequest holding rows [from, to) of `d`, labelled by index.
v1::IngestRequest Message(const data::Dataset& d, int64_t from, int64_t to) {
  v1::IngestRequest req;
  const int64_t f = d.num_features();
  for (int64_t r = from; r < to; ++r) {
    v1::LabelledSample* s = req.add_samples();
    s->mutable_features()->Add(d.features.begin() + r * f, d.features.begin() + (r + 1) * f);
    s->set_label(static_cast<int32_t>(d.labels[static_cast<size_t>(r)]));
  }
  return req;
}

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(/*with_store=*/true); }

  void Start(bool with_store) {
    torchlib::SetNumThreads(1);
    auto rt = edge::runtime::Runtime::Open({dir_.path() + "/state", {}});
    ASSERT_TRUE(rt.ok());
    runtime_ = std::move(*rt);
    if (with_store) {
      edge::samples::SampleStore::Options o;
      o.path = dir_.path() + "/state/samples.db";
      o.feature_names = data::SyntheticFeatureNames({});
      o.num_classes = static_cast<int64_t>(Labels().size());
      auto store = edge::samples::SampleStore::Open(o);
      ASSERT_TRUE(store.ok()) << store.status();
      store_ = std::move(*store);
    }
    edge::serving::LocalSamples local;
    local.store = store_.get();
    local.label_names = Labels();
    service_ =
        std::make_unique<edge::serving::InferenceService>(runtime_.get(), &health_, nullptr, local);
    auto server = net::StartGrpcServer({"127.0.0.1:0", {{service_.get(), "fedge.v1.Inference"}}});
    ASSERT_TRUE(server.ok());
    server_ = std::move(*server);
    stub_ = v1::Inference::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", server_.port)));
  }

  void TearDown() override { net::StopGrpcServer(&server_, std::chrono::seconds(5)); }

  // Streams the messages; returns the call's status and fills *response.
  grpc::Status Ingest(const std::vector<v1::IngestRequest>& messages,
                      v1::IngestResponse* response) {
    auto ctx = testing::Context();
    auto writer = stub_->Ingest(ctx.get(), response);
    for (const auto& m : messages) {
      if (!writer->Write(m)) break;  // the server has answered already
    }
    writer->WritesDone();
    return writer->Finish();
  }

  void Activate(const std::vector<std::string>& labels) {
    const std::string archive = Archive(labels);
    v1::VersionRef ref;
    ref.set_model("m");
    ref.set_version(1);
    ref.set_sha256(Sha256Hex(archive));
    ASSERT_TRUE(runtime_->Activate(ref, archive).ok());
  }

  testing::TempDir dir_;
  std::unique_ptr<edge::runtime::Runtime> runtime_;
  std::unique_ptr<edge::samples::SampleStore> store_;
  edge::serving::HealthTracker health_{edge::serving::HealthTracker::Options{}};
  std::unique_ptr<edge::serving::InferenceService> service_;
  net::StartedGrpcServer server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(IngestTest, StoresEveryMessageOfAStreamAndAnswersWithTheCounts) {
  const data::Dataset d = data::GenerateSite({}, 1, 157);
  v1::IngestResponse resp;
  grpc::Status st = Ingest({Message(d, 0, 100), Message(d, 100, 150), Message(d, 150, 157)}, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.accepted(), 157);
  EXPECT_EQ(resp.stored(), 157);
  EXPECT_EQ(resp.total_added(), 157);
  // A second stream adds to the totals.
  ASSERT_TRUE(Ingest({Message(d, 0, 3)}, &resp).ok());
  EXPECT_EQ(resp.accepted(), 3);
  EXPECT_EQ(resp.total_added(), 160);
  // What is stored is what was sent, in order.
  auto all = store_->All();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 160);
  EXPECT_TRUE(std::equal(d.features.begin(), d.features.end(), all->features.begin()));
  EXPECT_TRUE(std::equal(d.labels.begin(), d.labels.end(), all->labels.begin()));
  EXPECT_EQ(RowsBySource(dir_.path() + "/state/samples.db"),
            (std::map<std::string, int64_t>{{"ingest", 160}}));
}

TEST_F(IngestTest, LabelNamesResolveThroughTheActiveContractElseTheNodesNames) {
  const data::Dataset d = data::GenerateSite({}, 0, 1);
  v1::IngestRequest req = Message(d, 0, 1);
  req.mutable_samples(0)->set_label(0);
  req.mutable_samples(0)->set_label_name(Labels()[1]);
  v1::IngestResponse resp;
  ASSERT_TRUE(Ingest({req}, &resp).ok());  // no model active: the node's own names
  std::vector<std::string> reversed(Labels().rbegin(), Labels().rend());
  Activate(reversed);
  ASSERT_TRUE(Ingest({req}, &resp).ok());
  auto all = store_->All();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->labels, (std::vector<int64_t>{1, static_cast<int64_t>(Labels().size()) - 2}));
}

TEST_F(IngestTest, ABadSampleRefusesItsMessageNamingIndexAndProblemEarlierMessagesStay) {
  const data::Dataset d = data::GenerateSite({}, 2, 40);
  struct Case {
    std::string name;
    std::function<void(v1::LabelledSample*)> spoil;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"narrow", [](v1::LabelledSample* s) { s->mutable_features()->RemoveLast(); },
       absl::StrCat("sample 3 has ", Width() - 1, " features; this edge's samples have ", Width())},
      {"unknown name", [](v1::LabelledSample* s) { s->set_label_name("exploded"); },
       "sample 3: label 'exploded' is not one of"},
      {"nan",
       [](v1::LabelledSample* s) { s->set_features(2, std::numeric_limits<float>::quiet_NaN()); },
       "sample 3: feature 2 is not a finite number"},
      {"inf",
       [](v1::LabelledSample* s) { s->set_features(0, -std::numeric_limits<float>::infinity()); },
       "sample 3: feature 0 is not a finite number"},
      {"label range", [](v1::LabelledSample* s) { s->set_label(99); },
       "sample 3: label 99 is out of range"},
  };
  int64_t stored = 0;
  for (const Case& c : cases) {
    v1::IngestRequest bad = Message(d, 10, 20);
    c.spoil(bad.mutable_samples(3));
    v1::IngestResponse resp;
    grpc::Status st = Ingest({Message(d, 0, 10), bad, Message(d, 20, 30)}, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_NE(st.error_message().find("message 1: "), std::string::npos)
        << c.name << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(c.expect), std::string::npos)
        << c.name << ": " << st.error_message();
    EXPECT_NE(st.error_message().find("10 samples of earlier messages"), std::string::npos)
        << st.error_message();
    stored += 10;  // the first message only
    EXPECT_EQ(store_->Count(), stored) << c.name;
  }
  EXPECT_EQ(RowsBySource(dir_.path() + "/state/samples.db").at("ingest"), stored);
}

TEST_F(IngestTest, AMessageOverTheLimitIsResourceExhausted) {
  const data::Dataset d =
      data::GenerateSite({}, 0, edge::serving::InferenceService::kMaxIngestBatch + 1);
  v1::IngestResponse resp;
  grpc::Status st = Ingest({Message(d, 0, d.size())}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_EQ(store_->Count(), 0);
}

TEST_F(IngestTest, FeedbackStoresThePredictionsInputWithTheTrueLabel) {
  Activate(Labels());
  const data::Dataset d = data::GenerateSite({}, 3, 20);
  v1::PredictBatchRequest req;
  for (int64_t r = 0; r < d.size(); ++r) {
    req.add_instances()->mutable_features()->Add(d.features.begin() + r * Width(),
                                                 d.features.begin() + (r + 1) * Width());
  }
  v1::PredictBatchResponse predicted;
  auto ctx = testing::Context();
  ASSERT_TRUE(stub_->PredictBatch(ctx.get(), req, &predicted).ok());
  // True labels for rows 4, 9 and 13 (by name for 9), in that order.
  const std::vector<int> rows = {4, 9, 13};
  for (int r : rows) {
    v1::FeedbackRequest fb;
    fb.set_prediction_id(predicted.predictions(r).prediction_id());
    const int64_t label = d.labels[static_cast<size_t>(r)];
    if (r == 9) {
      fb.set_label_name(Labels()[static_cast<size_t>(label)]);
    } else {
      fb.set_label(static_cast<int32_t>(label));
    }
    v1::FeedbackResponse resp;
    auto fctx = testing::Context();
    grpc::Status st = stub_->Feedback(fctx.get(), fb, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  // A second label for row 4 and a label out of range are refused and store nothing.
  v1::FeedbackRequest again;
  again.set_prediction_id(predicted.predictions(4).prediction_id());
  again.set_label(0);
  v1::FeedbackResponse resp;
  auto actx = testing::Context();
  EXPECT_EQ(stub_->Feedback(actx.get(), again, &resp).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  v1::FeedbackRequest out_of_range;
  out_of_range.set_prediction_id(predicted.predictions(5).prediction_id());
  out_of_range.set_label(static_cast<int32_t>(Labels().size()));
  auto octx = testing::Context();
  EXPECT_EQ(stub_->Feedback(octx.get(), out_of_range, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  auto all = store_->All();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3);
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t r = rows[i];
    EXPECT_TRUE(std::equal(d.features.begin() + r * Width(), d.features.begin() + (r + 1) * Width(),
                           all->features.begin() + static_cast<int64_t>(i) * Width()))
        << "row " << r;
    EXPECT_EQ(all->labels[i], d.labels[static_cast<size_t>(r)]) << "row " << r;
  }
  EXPECT_EQ(RowsBySource(dir_.path() + "/state/samples.db"),
            (std::map<std::string, int64_t>{{"feedback", 3}}));
}

class NoStoreTest : public IngestTest {
 protected:
  void SetUp() override { Start(/*with_store=*/false); }
};

TEST_F(NoStoreTest, IngestIsAFailedPreconditionOnANodeWithoutAStore) {
  const data::Dataset d = data::GenerateSite({}, 0, 2);
  v1::IngestResponse resp;
  grpc::Status st = Ingest({Message(d, 0, 2)}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
}

}  // namespace
}  // namespace fedge
