#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::data {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::Status ParseError(const std::string& text, const CsvOptions& options = {}) {
  absl::StatusOr<Dataset> parsed = ParseCsv(text, options, "plant.csv");
  EXPECT_FALSE(parsed.ok()) << "parsed without error: " << text;
  if (parsed.ok()) return absl::OkStatus();
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  return parsed.status();
}

// ---- CSV: valid input ----

TEST(DataCsvTest, ParsesFeaturesAndLabelsInColumnOrder) {
  absl::StatusOr<Dataset> data =
      ParseCsv("temp,label,rpm\n1.5,0,1480\n-2,3,1500.25\n", {}, "plant.csv");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->feature_names, ElementsAre("temp", "rpm"));
  EXPECT_THAT(data->features, ElementsAre(1.5f, 1480.0f, -2.0f, 1500.25f));
  EXPECT_THAT(data->labels, ElementsAre(0, 3));
  EXPECT_EQ(data->num_features(), 2);
  EXPECT_EQ(data->size(), 2);
}

TEST(DataCsvTest, AcceptsQuotedHeaderNamesCrlfSpacesAndTrailingBlankLines) {
  const std::string text =
      "\"bearing temp, C\" , \"say \"\"hi\"\"\",label\r\n"
      "  12.5 ,\t-1e2 , 1 \r\n"
      "\"3\",4,0\r\n"
      "\r\n"
      "   \n";
  absl::StatusOr<Dataset> data = ParseCsv(text, {}, "plant.csv");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->feature_names, ElementsAre("bearing temp, C", "say \"hi\""));
  EXPECT_THAT(data->features, ElementsAre(12.5f, -100.0f, 3.0f, 4.0f));
  EXPECT_THAT(data->labels, ElementsAre(1, 0));
}

TEST(DataCsvTest, UsesTheLabelColumnNamedByOption) {
  CsvOptions options;
  options.label_column = "state";
  absl::StatusOr<Dataset> data = ParseCsv("label,state\n7,2\n", options, "plant.csv");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->feature_names, ElementsAre("label"));
  EXPECT_THAT(data->features, ElementsAre(7.0f));
  EXPECT_THAT(data->labels, ElementsAre(2));
}

TEST(DataCsvTest, MapsLabelNamesAndIndicesWhenNamesAreGiven) {
  CsvOptions options;
  options.label_names = {"normal", "overheating"};
  absl::StatusOr<Dataset> data = ParseCsv("x,label\n1,overheating\n2,normal\n3,1\n", options, "p");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->labels, ElementsAre(1, 0, 1));
}

// ---- CSV: every error names the line and the column ----

TEST(DataCsvTest, NonNumericCellNamesLineAndColumn) {
  absl::Status s = ParseError("a,temp,label\n1,2,0\n1,abc,0\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:3:"), HasSubstr("column 'temp' (2)"),
                                 HasSubstr("'abc' is not a number")));
}

TEST(DataCsvTest, EmptyFeatureCellIsRefused) {
  absl::Status s = ParseError("a,temp,label\n1,,0\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:2:"), HasSubstr("column 'temp' (2)")));
}

TEST(DataCsvTest, NanFeatureIsRefused) {
  absl::Status s = ParseError("a,temp,label\n1,nan,0\n");
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("plant.csv:2:"), HasSubstr("column 'temp' (2)"), HasSubstr("NaN")));
}

TEST(DataCsvTest, InfAndOverflowFeaturesAreRefused) {
  for (const char* cell : {"inf", "-Infinity", "1e999"}) {
    absl::Status s = ParseError(std::string("label,a\n0,") + cell + "\n");
    EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:2:"), HasSubstr("column 'a' (2)"),
                                   HasSubstr("not a finite number")))
        << cell;
  }
}

TEST(DataCsvTest, TrailingJunkAfterNumberIsRefused) {
  absl::Status s = ParseError("a,label\n1.5x,0\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:2:"), HasSubstr("column 'a' (1)")));
}

TEST(DataCsvTest, RowWithTooFewCellsNamesTheFirstMissingColumn) {
  absl::Status s = ParseError("a,b,label\n1,2,0\n1,2\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:3:"), HasSubstr("too few cells"),
                                 HasSubstr("column 'label' (3)")));
}

TEST(DataCsvTest, RowWithTooManyCellsNamesTheExtraColumn) {
  absl::Status s = ParseError("a,b,label\n1,2,0,9\n");
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("plant.csv:2:"), HasSubstr("too many cells"), HasSubstr("column 4")));
}

TEST(DataCsvTest, MissingLabelColumnListsTheColumnsThatExist) {
  absl::Status s = ParseError("temp,rpm\n1,2\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:1:"), HasSubstr("no label column 'label'"),
                                 HasSubstr("'temp', 'rpm'")));
}

TEST(DataCsvTest, DuplicateColumnNamesAreRefused) {
  absl::Status s = ParseError("temp,label,temp\n1,0,2\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:1:"), HasSubstr("column 'temp' (3)"),
                                 HasSubstr("duplicate"), HasSubstr("column 1")));
}

TEST(DataCsvTest, EmptyFileSaysNoDataRows) {
  EXPECT_THAT(ParseError("").message(), AllOf(HasSubstr("plant.csv"), HasSubstr("no data rows")));
  EXPECT_THAT(ParseError("\n\n").message(), HasSubstr("no data rows"));
}

TEST(DataCsvTest, HeaderOnlySaysNoDataRows) {
  EXPECT_THAT(ParseError("a,label\n").message(),
              AllOf(HasSubstr("plant.csv:1:"), HasSubstr("no data rows")));
}

TEST(DataCsvTest, NegativeOrFractionalLabelIsRefused) {
  for (const char* cell : {"-1", "1.5", "cat"}) {
    absl::Status s = ParseError(std::string("a,label\n1,0\n2,") + cell + "\n");
    EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:3:"), HasSubstr("column 'label' (2)"),
                                   HasSubstr("non-negative integer")))
        << cell;
  }
}

TEST(DataCsvTest, UnknownLabelNameOrOutOfRangeIndexIsRefused) {
  CsvOptions options;
  options.label_names = {"normal", "overheating"};
  for (const char* cell : {"cavitation", "2"}) {
    absl::Status s = ParseError(std::string("label,a\n") + cell + ",1\n", options);
    EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:2:"), HasSubstr("column 'label' (1)"),
                                   HasSubstr("normal, overheating")))
        << cell;
  }
}

TEST(DataCsvTest, BlankLineInsideTheDataIsRefused) {
  absl::Status s = ParseError("a,label\n1,0\n\n2,0\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:3:"), HasSubstr("blank line")));
}

TEST(DataCsvTest, UnterminatedQuoteNamesLineAndColumn) {
  absl::Status s = ParseError("a,label\n\"1,0\n");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("plant.csv:2:"), HasSubstr("column 'a' (1)"),
                                 HasSubstr("unterminated quote")));
}

TEST(DataCsvTest, ReadCsvOfMissingFileIsNotFound) {
  absl::StatusOr<Dataset> data = ReadCsv("/nonexistent/fedge/plant.csv", {});
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
}

TEST(DataCsvTest, ReadCsvNamesThePathInErrors) {
  const std::string path = ::testing::TempDir() + "/fedge_data_test.csv";
  {
    std::ofstream out(path);
    out << "a,label\n1,0\nx,1\n";
  }
  absl::StatusOr<Dataset> data = ReadCsv(path, {});
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(path + ":3:"));
  std::remove(path.c_str());
}

TEST(DataCsvTest, InputOverTheSizeLimitIsRefusedBeforeParsing) {
  const std::string path = ::testing::TempDir() + "/fedge_data_limit.csv";
  const std::string text = "a,label\n1,0\n2,1\n";  // 16 bytes
  {
    std::ofstream out(path);
    out << text;
  }
  CsvOptions options;
  options.max_bytes = 15;
  absl::StatusOr<Dataset> data = ReadCsv(path, options);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(data.status().message(), HasSubstr("is 16 bytes; the limit is 15"));
  EXPECT_EQ(ParseCsv(text, options, "x.csv").status().code(),
            absl::StatusCode::kResourceExhausted);
  options.max_bytes = 16;
  ASSERT_TRUE(ReadCsv(path, options).ok());
  EXPECT_EQ(ReadCsv(path, options)->size(), 2);
  std::remove(path.c_str());
}

// ---- Dataset ----

Dataset Rows(int n) {
  Dataset d;
  d.feature_names = {"x", "y"};
  for (int i = 0; i < n; ++i) {
    d.features.push_back(static_cast<float>(i));
    d.features.push_back(static_cast<float>(-i));
    d.labels.push_back(i % 3);
  }
  return d;
}

TEST(DatasetTest, AppendConcatenatesRows) {
  Dataset a = Rows(2);
  Dataset b = Rows(3);
  ASSERT_TRUE(a.Append(b).ok());
  EXPECT_EQ(a.size(), 5);
  EXPECT_THAT(a.labels, ElementsAre(0, 1, 0, 1, 2));
  EXPECT_EQ(a.features.size(), 10u);
  EXPECT_EQ(a.features[8], 2.0f);
}

TEST(DatasetTest, AppendRefusesDifferentFeatureNames) {
  Dataset a = Rows(2);
  Dataset b = Rows(2);
  b.feature_names = {"x", "z"};
  EXPECT_EQ(a.Append(b).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.size(), 2);
}

TEST(DatasetTest, SplitSizesFollowTheFractionAndCoverEveryRowOnce) {
  Dataset all = Rows(100);
  Dataset train, holdout;
  Split(all, 0.2, 7, &train, &holdout);
  EXPECT_EQ(holdout.size(), 20);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(train.feature_names, all.feature_names);
  std::multiset<float> seen;
  for (const Dataset* part : {&train, &holdout}) {
    for (int64_t i = 0; i < part->size(); ++i) {
      const float x = part->features[i * 2];
      EXPECT_EQ(part->features[i * 2 + 1], -x) << "row split apart";
      EXPECT_EQ(part->labels[i], static_cast<int>(x) % 3) << "label moved off its row";
      seen.insert(x);
    }
  }
  std::multiset<float> expected;
  for (int i = 0; i < 100; ++i) expected.insert(static_cast<float>(i));
  EXPECT_EQ(seen, expected);
}

TEST(DatasetTest, SplitIsDeterministicInTheSeed) {
  Dataset all = Rows(50);
  Dataset t1, h1, t2, h2, t3, h3;
  Split(all, 0.3, 42, &t1, &h1);
  Split(all, 0.3, 42, &t2, &h2);
  Split(all, 0.3, 43, &t3, &h3);
  EXPECT_EQ(h1.features, h2.features);
  EXPECT_EQ(t1.features, t2.features);
  EXPECT_NE(h1.features, h3.features);
}

TEST(DatasetTest, ComputeStatsMatchesHandComputation) {
  Dataset d;
  d.feature_names = {"a", "b"};
  d.features = {1, 5, 2, 5, 3, 5, 6, 5};  // a = 1, 2, 3, 6; b constant
  d.labels = {0, 0, 0, 0};
  FeatureStats stats = ComputeStats(d);
  // mean(a) = 3; squared deviations 4 + 1 + 0 + 9 = 14; population variance 3.5.
  EXPECT_FLOAT_EQ(stats.mean[0], 3.0f);
  EXPECT_FLOAT_EQ(stats.std[0], std::sqrt(3.5f));
  EXPECT_FLOAT_EQ(stats.mean[1], 5.0f);
  EXPECT_FLOAT_EQ(stats.std[1], 1e-6f);  // floored
}

// ---- Synthetic generator ----

std::vector<int64_t> Histogram(const Dataset& d) {
  std::vector<int64_t> h(SyntheticLabels().size(), 0);
  for (int64_t y : d.labels) ++h[static_cast<size_t>(y)];
  return h;
}

std::vector<double> FeatureMeans(const Dataset& d) {
  std::vector<double> mean(static_cast<size_t>(d.num_features()), 0.0);
  for (int64_t i = 0; i < d.size(); ++i) {
    for (int64_t j = 0; j < d.num_features(); ++j) mean[j] += d.features[i * d.num_features() + j];
  }
  for (double& m : mean) m /= static_cast<double>(d.size());
  return mean;
}

TEST(DataSyntheticTest, SameArgumentsGiveIdenticalData) {
  SyntheticOptions options;
  options.seed = 9;
  Dataset a = GenerateSite(options, 2, 300, 5);
  Dataset b = GenerateSite(options, 2, 300, 5);
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(GenerateHoldout(options, 100).features, GenerateHoldout(options, 100).features);
}

TEST(DataSyntheticTest, DifferentStreamGivesDifferentSamples) {
  SyntheticOptions options;
  EXPECT_NE(GenerateSite(options, 0, 100, 0).features, GenerateSite(options, 0, 100, 1).features);
}

TEST(DataSyntheticTest, DifferentSeedGivesDifferentSamples) {
  SyntheticOptions a, b;
  b.seed = a.seed + 1;
  EXPECT_NE(GenerateSite(a, 0, 100).features, GenerateSite(b, 0, 100).features);
}

TEST(DataSyntheticTest, ProducesRequestedCountWithValidFiniteValues) {
  SyntheticOptions options;
  Dataset d = GenerateSite(options, 1, 257);
  EXPECT_EQ(d.size(), 257);
  EXPECT_EQ(d.num_features(), 12);
  EXPECT_EQ(d.features.size(), 257u * 12u);
  for (float v : d.features) ASSERT_TRUE(std::isfinite(v));
  for (int64_t y : d.labels) {
    ASSERT_GE(y, 0);
    ASSERT_LT(y, static_cast<int64_t>(SyntheticLabels().size()));
  }
  EXPECT_EQ(std::set<std::string>(d.feature_names.begin(), d.feature_names.end()).size(), 12u)
      << "feature names must be unique";
}

TEST(DataSyntheticTest, EachSiteSeesMostlyTwoOrThreeStates) {
  SyntheticOptions options;
  for (int site = 0; site < options.num_sites; ++site) {
    std::vector<int64_t> h = Histogram(GenerateSite(options, site, 4000));
    int common = 0, rare = 0;
    for (int64_t count : h) {
      if (count > 4000 / 5) ++common;  // > 20%
      if (count < 4000 / 20) ++rare;   // < 5%
    }
    EXPECT_GE(common, 2) << "site " << site;
    EXPECT_LE(common, 3) << "site " << site;
    EXPECT_EQ(common + rare, static_cast<int>(h.size())) << "site " << site;
  }
}

TEST(DataSyntheticTest, SitesDifferInLabelDistribution) {
  SyntheticOptions options;
  std::vector<std::vector<int64_t>> hist;
  for (int site = 0; site < options.num_sites; ++site) {
    hist.push_back(Histogram(GenerateSite(options, site, 4000)));
  }
  for (int a = 0; a < options.num_sites; ++a) {
    for (int b = a + 1; b < options.num_sites; ++b) {
      // Total variation distance between the two label distributions.
      double tv = 0;
      for (size_t k = 0; k < hist[a].size(); ++k) tv += std::abs(hist[a][k] - hist[b][k]) / 4000.0;
      EXPECT_GT(tv / 2, 0.3) << "sites " << a << " and " << b;
    }
  }
}

TEST(DataSyntheticTest, FleetTogetherCoversEveryState) {
  SyntheticOptions options;
  std::vector<int64_t> h = Histogram(GenerateHoldout(options, 4000));
  for (size_t k = 0; k < h.size(); ++k) {
    EXPECT_GT(h[k], 4000 / 10) << SyntheticLabels()[k];
  }
}

TEST(DataSyntheticTest, HoldoutHasExactCountAndDrawsFromEverySite) {
  SyntheticOptions options;
  Dataset d = GenerateHoldout(options, 1001);
  EXPECT_EQ(d.size(), 1001);
  // Supply voltage is a site constant plus a few volts of noise: four plants, four clusters.
  const auto names = SyntheticFeatureNames(options);
  const int64_t col = std::find(names.begin(), names.end(), "supply_voltage_v") - names.begin();
  ASSERT_LT(col, d.num_features());
  std::set<int> plants;
  for (int64_t i = 0; i < d.size(); ++i) {
    plants.insert(static_cast<int>(std::lround(d.features[i * d.num_features() + col] / 20.0)));
  }
  EXPECT_GE(plants.size(), 4u);
}

TEST(DataSyntheticTest, DriftShiftsFeatureMeansForAllStates) {
  SyntheticOptions calm, drifted;
  drifted.drift = 1.0;
  const Dataset a = GenerateSite(calm, 0, 4000);
  const Dataset b = GenerateSite(drifted, 0, 4000);
  // Drift must not change which machine states a site sees.
  EXPECT_EQ(a.labels, b.labels);
  const std::vector<double> ma = FeatureMeans(a), mb = FeatureMeans(b);
  const FeatureStats sa = ComputeStats(a);
  int shifted = 0;
  for (size_t j = 0; j < ma.size(); ++j) {
    if (std::abs(mb[j] - ma[j]) > 0.5 * sa.std[j]) ++shifted;
  }
  EXPECT_GE(shifted, 3);
  EXPECT_LT(shifted, static_cast<int>(ma.size()));
}

TEST(DataSyntheticTest, WindowModeHasChannelsTimesWindowFeatures) {
  SyntheticOptions options;
  options.window = 64;
  Dataset d = GenerateSite(options, 0, 10);
  EXPECT_EQ(d.num_features(), SyntheticChannels() * 64);
  EXPECT_EQ(d.features.size(), 10u * SyntheticChannels() * 64);
  EXPECT_EQ(d.feature_names.front(), "vibration_t000");
  EXPECT_EQ(d.feature_names[64], "motor_current_t000");
  for (float v : d.features) ASSERT_TRUE(std::isfinite(v));
}

TEST(DataSyntheticTest, WindowModeShowsOverheatingAsATemperatureTrend) {
  SyntheticOptions options;
  options.window = 32;
  Dataset d = GenerateHoldout(options, 2000);
  const int64_t w = options.window;
  const int64_t temp = 2 * w;                      // channel-major: third channel
  std::map<int64_t, std::pair<double, int>> rise;  // label -> (sum, n)
  for (int64_t i = 0; i < d.size(); ++i) {
    const float* row = d.features.data() + i * d.num_features();
    auto& [sum, n] = rise[d.labels[i]];
    sum += row[temp + w - 1] - row[temp];
    ++n;
  }
  const double overheating = rise[3].first / rise[3].second;
  const double normal = rise[0].first / rise[0].second;
  EXPECT_GT(overheating, normal + 2.0);
}

}  // namespace
}  // namespace fedge::data
