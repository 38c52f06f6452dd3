#include "cloud/aggregation/server_optimizer.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace fedge::cloud::aggregation {
namespace {

using Kind = AdaptiveServerOptimizer::Kind;

std::unique_ptr<AdaptiveServerOptimizer> MakeAdaptive(Kind kind, int64_t n,
                                                      const AdaptiveOptions& options = {}) {
  auto opt = AdaptiveServerOptimizer::Create(kind, n, options);
  EXPECT_TRUE(opt.ok()) << opt.status();
  return opt.ok() ? std::move(*opt) : nullptr;
}

// Algorithm 2 of Reddi et al. written out coordinate by coordinate, apart from the code
// under test.
class ReferenceOptimizer {
 public:
  ReferenceOptimizer(Kind kind, size_t n, AdaptiveOptions o)
      : kind_(kind), o_(o), m_(n, 0.0), v_(n, o.tau * o.tau) {}

  FlatTensor Step(const FlatTensor& x, const std::vector<double>& delta) {
    FlatTensor next(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      double d = delta[i];
      m_[i] = o_.beta1 * m_[i] + (1 - o_.beta1) * d;
      if (kind_ == Kind::kAdagrad) {
        v_[i] = v_[i] + d * d;
      } else if (kind_ == Kind::kAdam) {
        v_[i] = o_.beta2 * v_[i] + (1 - o_.beta2) * d * d;
      } else {
        double s = 0;
        if (v_[i] - d * d > 0) s = 1;
        if (v_[i] - d * d < 0) s = -1;
        v_[i] = v_[i] - (1 - o_.beta2) * d * d * s;
      }
      double step = o_.server_lr * m_[i] / (std::sqrt(v_[i]) + o_.tau);
      next[i] = static_cast<float>(x[i] + step);
    }
    return next;
  }
  const std::vector<double>& m() const { return m_; }
  const std::vector<double>& v() const { return v_; }

 private:
  Kind kind_;
  AdaptiveOptions o_;
  std::vector<double> m_, v_;
};

// Four rounds of deltas over four coordinates: signs flip, magnitudes shrink and grow, and one
// coordinate sees a zero delta.
const std::vector<std::vector<double>> kRounds = {
    {0.5, -1.0, 0.02, 0.0},
    {0.4, 0.8, -0.03, 0.0},
    {-0.1, -0.05, 0.5, 1e-4},
    {0.01, 2.0, 0.0, -0.3},
};

void ExpectMatchesReference(Kind kind, const AdaptiveOptions& options) {
  auto opt = MakeAdaptive(kind, 4, options);
  ASSERT_NE(opt, nullptr);
  ReferenceOptimizer ref(kind, 4, options);
  FlatTensor x = {1.0f, -2.0f, 0.25f, 3.0f};
  for (size_t r = 0; r < kRounds.size(); ++r) {
    FlatTensor want = ref.Step(x, kRounds[r]);
    auto got = opt->Apply(x, kRounds[r]);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_FLOAT_EQ((*got)[i], want[i]) << opt->name() << " round " << r << " coord " << i;
      EXPECT_DOUBLE_EQ(opt->first_moment()[i], ref.m()[i]) << "round " << r << " coord " << i;
      EXPECT_DOUBLE_EQ(opt->second_moment()[i], ref.v()[i]) << "round " << r << " coord " << i;
    }
    x = *got;
  }
  EXPECT_EQ(opt->rounds(), 4);
}

TEST(AdaptiveServerOptimizerTest, FedAdagradMatchesReferenceOverFourRounds) {
  ExpectMatchesReference(Kind::kAdagrad, {});
}

TEST(AdaptiveServerOptimizerTest, FedAdamMatchesReferenceOverFourRounds) {
  ExpectMatchesReference(Kind::kAdam, {});
}

TEST(AdaptiveServerOptimizerTest, FedYogiMatchesReferenceOverFourRounds) {
  ExpectMatchesReference(Kind::kYogi, {});
}

TEST(AdaptiveServerOptimizerTest, MatchesReferenceWithNonDefaultOptions) {
  AdaptiveOptions o{/*server_lr=*/0.3, /*beta1=*/0.5, /*beta2=*/0.9, /*tau=*/0.05};
  for (Kind kind : {Kind::kAdagrad, Kind::kAdam, Kind::kYogi}) ExpectMatchesReference(kind, o);
}

TEST(AdaptiveServerOptimizerTest, FedAdamFirstRoundKnownAnswer) {
  // Defaults η = 0.01, β1 = 0.9, β2 = 0.99, τ = 1e-3; Δ = 0.5 from x = 1:
  //   m = 0.1 · 0.5                          = 0.05
  //   v = 0.99 · 1e-6 + 0.01 · 0.25          = 0.00250099
  //   √v                                     = 0.0500098990...
  //   x = 1 + 0.01 · 0.05 / (0.0500098990 + 0.001) = 1 + 0.00980201901... = 1.00980202
  auto opt = MakeAdaptive(Kind::kAdam, 1);
  auto x = opt->Apply(FlatTensor{1.0f}, std::vector<double>{0.5});
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_DOUBLE_EQ(opt->first_moment()[0], 0.05);
  EXPECT_NEAR(opt->second_moment()[0], 0.00250099, 1e-15);
  EXPECT_FLOAT_EQ((*x)[0], 1.00980202f);
}

TEST(AdaptiveServerOptimizerTest, FedAdagradAndFedYogiFirstRoundKnownAnswers) {
  // FedAdagrad: v = 1e-6 + 0.25 = 0.250001; step = 0.01 · 0.05 / (0.5000009999 + 0.001)
  //   = 0.000998002. FedYogi from v = τ² < Δ² = 0.25: sign(v − Δ²) = −1, so
  //   v = 1e-6 + 0.01 · 0.25 = 0.002501; step = 0.0005 / (0.0500099990 + 0.001) = 0.00980200.
  auto adagrad = MakeAdaptive(Kind::kAdagrad, 1);
  auto a = adagrad->Apply(FlatTensor{0.0f}, std::vector<double>{0.5});
  ASSERT_TRUE(a.ok());
  EXPECT_NEAR(adagrad->second_moment()[0], 0.250001, 1e-15);
  EXPECT_NEAR((*a)[0], 0.000998002, 1e-9);

  auto yogi = MakeAdaptive(Kind::kYogi, 1);
  auto y = yogi->Apply(FlatTensor{0.0f}, std::vector<double>{0.5});
  ASSERT_TRUE(y.ok());
  EXPECT_NEAR(yogi->second_moment()[0], 0.002501, 1e-15);
  EXPECT_NEAR((*y)[0], 0.0098020, 1e-7);
}

TEST(AdaptiveServerOptimizerTest, FedYogiGrowsVWhenDeltaSquaredExceedsIt) {
  auto yogi = MakeAdaptive(Kind::kYogi, 1);
  double v0 = yogi->second_moment()[0];  // τ² = 1e-6
  ASSERT_TRUE(yogi->Apply(FlatTensor{0.0f}, std::vector<double>{1.0}).ok());
  // Δ² = 1 > v: v + (1 − β2) · Δ² = 1e-6 + 0.01.
  EXPECT_GT(yogi->second_moment()[0], v0);
  EXPECT_NEAR(yogi->second_moment()[0], 0.010001, 1e-15);
}

TEST(AdaptiveServerOptimizerTest, FedYogiShrinksVAdditivelyWhenDeltaSquaredIsBelowIt) {
  auto yogi = MakeAdaptive(Kind::kYogi, 1);
  auto adam = MakeAdaptive(Kind::kAdam, 1);
  for (auto* opt : {yogi.get(), adam.get()}) {
    ASSERT_TRUE(opt->Apply(FlatTensor{0.0f}, std::vector<double>{1.0}).ok());
  }
  const double v1 = yogi->second_moment()[0];
  ASSERT_TRUE(yogi->Apply(FlatTensor{0.0f}, std::vector<double>{0.01}).ok());
  // Δ² = 1e-4 < v1 = 0.010001: Yogi subtracts (1 − β2) · Δ² = 1e-6, however large v is.
  EXPECT_LT(yogi->second_moment()[0], v1);
  EXPECT_NEAR(yogi->second_moment()[0], v1 - 1e-6, 1e-15);
  // Adam instead decays v multiplicatively towards Δ²: 0.99 · v1 + 0.01 · 1e-4, a larger drop.
  const double adam_v1 = adam->second_moment()[0];
  ASSERT_TRUE(adam->Apply(FlatTensor{0.0f}, std::vector<double>{0.01}).ok());
  EXPECT_NEAR(adam->second_moment()[0], 0.99 * adam_v1 + 1e-6, 1e-15);
  EXPECT_LT(adam->second_moment()[0], yogi->second_moment()[0]);
}

TEST(AdaptiveServerOptimizerTest, FedYogiKeepsVWhenDeltaSquaredEqualsIt) {
  // v_{−1} = τ² and Δ = τ give sign(0) = 0.
  auto yogi = MakeAdaptive(Kind::kYogi, 1);
  const double tau = AdaptiveOptions{}.tau;
  ASSERT_TRUE(yogi->Apply(FlatTensor{0.0f}, std::vector<double>{tau}).ok());
  EXPECT_EQ(yogi->second_moment()[0], tau * tau);
}

TEST(AdaptiveServerOptimizerTest, FedAdagradSecondMomentNeverDecreases) {
  auto opt = MakeAdaptive(Kind::kAdagrad, 3);
  std::vector<double> prev = opt->second_moment();
  // A fixed sequence with sign changes, shrinking values and zeros.
  for (int r = 0; r < 12; ++r) {
    std::vector<double> d = {std::sin(r * 1.7), r % 3 == 0 ? 0.0 : -1.0 / (r + 1), 1e-3 * r};
    ASSERT_TRUE(opt->Apply(FlatTensor(3, 0.0f), d).ok());
    std::vector<double> v = opt->second_moment();
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_GE(v[i], prev[i]) << "round " << r << " coord " << i;
      if (d[i] != 0) {
        EXPECT_GT(v[i], prev[i]) << "round " << r << " coord " << i;
      }
    }
    prev = v;
  }
}

TEST(AdaptiveServerOptimizerTest, ResumedFromSavedStateIsBitIdentical) {
  const std::vector<std::vector<double>> rounds = {{0.5, -1.0, 0.02},  {0.4, 0.8, -0.03},
                                                   {-0.1, -0.05, 0.5}, {0.01, 2.0, 0.0},
                                                   {0.3, -0.2, 0.1},   {-0.7, 0.0, 0.25}};
  for (Kind kind : {Kind::kAdagrad, Kind::kAdam, Kind::kYogi}) {
    auto straight = MakeAdaptive(kind, 3);
    auto first = MakeAdaptive(kind, 3);
    FlatTensor x_straight = {1.0f, 2.0f, -3.0f}, x_resumed = x_straight;
    for (size_t r = 0; r < 3; ++r) {
      x_straight = *straight->Apply(x_straight, rounds[r]);
      x_resumed = *first->Apply(x_resumed, rounds[r]);
    }
    const std::string saved = first->SaveState();
    first.reset();
    auto resumed = MakeAdaptive(kind, 3);
    ASSERT_TRUE(resumed->LoadState(saved).ok());
    EXPECT_EQ(resumed->rounds(), 3);
    for (size_t r = 3; r < rounds.size(); ++r) {
      x_straight = *straight->Apply(x_straight, rounds[r]);
      x_resumed = *resumed->Apply(x_resumed, rounds[r]);
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(x_resumed[i], x_straight[i]) << resumed->name() << " round " << r;
      }
    }
    EXPECT_EQ(resumed->SaveState(), straight->SaveState()) << resumed->name();
  }
}

TEST(AdaptiveServerOptimizerTest, StateLayoutIsHeaderThenLittleEndianMoments) {
  auto opt = MakeAdaptive(Kind::kAdam, 2);
  ASSERT_TRUE(opt->Apply(FlatTensor{0, 0}, std::vector<double>{0.5, -0.25}).ok());
  const std::string s = opt->SaveState();
  // "FSVO", u32 version, u32 name length, "fedadam", u64 count, u64 rounds, 2 m, 2 v.
  ASSERT_EQ(s.size(), 4u + 4 + 4 + 7 + 8 + 8 + 16 * 2);
  EXPECT_EQ(s.substr(0, 4), "FSVO");
  EXPECT_EQ(s.substr(12, 7), "fedadam");
  EXPECT_EQ(static_cast<unsigned char>(s[19]), 2);  // element count, low byte first
  EXPECT_EQ(static_cast<unsigned char>(s[27]), 1);  // rounds
  // m[0] = 0.05 as little-endian IEEE-754 binary64.
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) {
    bits |= static_cast<uint64_t>(static_cast<unsigned char>(s[35 + i])) << (8 * i);
  }
  double m0;
  std::memcpy(&m0, &bits, sizeof m0);
  EXPECT_EQ(m0, opt->first_moment()[0]);
}

TEST(AdaptiveServerOptimizerTest, LoadStateRefusesForeignWrongSizeAndDamagedBytes) {
  auto adam = MakeAdaptive(Kind::kAdam, 2);
  ASSERT_TRUE(adam->Apply(FlatTensor{0, 0}, std::vector<double>{0.5, -0.25}).ok());
  const std::string saved = adam->SaveState();
  auto yogi = MakeAdaptive(Kind::kYogi, 2);
  const std::string yogi_before = yogi->SaveState();

  EXPECT_EQ(yogi->LoadState(saved).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeAdaptive(Kind::kAdam, 3)->LoadState(saved).code(),
            absl::StatusCode::kInvalidArgument);
  for (size_t len = 0; len < saved.size(); ++len) {
    EXPECT_EQ(MakeAdaptive(Kind::kAdam, 2)->LoadState(saved.substr(0, len)).code(),
              absl::StatusCode::kInvalidArgument)
        << "prefix of " << len << " bytes";
  }
  EXPECT_EQ(MakeAdaptive(Kind::kAdam, 2)->LoadState(saved + "x").code(),
            absl::StatusCode::kInvalidArgument);
  std::string bad_magic = saved;
  bad_magic[0] = 'X';
  EXPECT_EQ(MakeAdaptive(Kind::kAdam, 2)->LoadState(bad_magic).code(),
            absl::StatusCode::kInvalidArgument);
  std::string bad_version = saved;
  bad_version[4] = 9;
  EXPECT_EQ(MakeAdaptive(Kind::kAdam, 2)->LoadState(bad_version).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(yogi->SaveState(), yogi_before);  // refusals leave the state alone
}

TEST(AdaptiveServerOptimizerTest, ApplyRefusesWrongSizesAndNonFiniteDeltas) {
  auto opt = MakeAdaptive(Kind::kAdam, 2);
  const std::string before = opt->SaveState();
  EXPECT_EQ(opt->Apply(FlatTensor{0, 0, 0}, std::vector<double>{1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt->Apply(FlatTensor{0, 0}, std::vector<double>{1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt->Apply(FlatTensor{0, 0}, std::vector<double>{0.1, std::nan("")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt->Apply(FlatTensor{0, 0},
                       std::vector<double>{std::numeric_limits<double>::infinity(), 0.1})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt->SaveState(), before);
  EXPECT_EQ(opt->rounds(), 0);
}

TEST(AdaptiveServerOptimizerTest, CreateRefusesBadOptionsNamingTheField) {
  struct Case {
    AdaptiveOptions options;
    std::string field;
  };
  const double nan = std::nan("");
  const std::vector<Case> cases = {
      {{0.0, 0.9, 0.99, 1e-3}, "server_lr"}, {{-1, 0.9, 0.99, 1e-3}, "server_lr"},
      {{nan, 0.9, 0.99, 1e-3}, "server_lr"}, {{0.01, 1.0, 0.99, 1e-3}, "beta1"},
      {{0.01, -0.1, 0.99, 1e-3}, "beta1"},   {{0.01, 0.9, 1.0, 1e-3}, "beta2"},
      {{0.01, 0.9, nan, 1e-3}, "beta2"},     {{0.01, 0.9, 0.99, 0.0}, "tau"},
      {{0.01, 0.9, 0.99, -1e-3}, "tau"},
  };
  for (const Case& c : cases) {
    auto opt = AdaptiveServerOptimizer::Create(Kind::kAdam, 2, c.options);
    ASSERT_EQ(opt.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(opt.status().message().find(c.field), std::string::npos) << opt.status();
  }
  EXPECT_EQ(AdaptiveServerOptimizer::Create(Kind::kAdam, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
  // β = 0 is a valid decay (no momentum).
  EXPECT_TRUE(AdaptiveServerOptimizer::Create(Kind::kAdam, 2, {0.01, 0.0, 0.0, 1e-3}).ok());
}

TEST(AdaptiveServerOptimizerTest, FedAdamApproachesTheMinimumOfAQuadratic) {
  // f(x) = ½ Σ a_i (x_i − c_i)²; each round's delta is what clients taking one gradient step
  // of size 0.1 would report: −0.1 · a_i (x_i − c_i).
  const std::vector<double> a = {1.0, 4.0, 0.25}, c = {3.0, -2.0, 0.5};
  auto opt = MakeAdaptive(Kind::kAdam, 3, {/*server_lr=*/0.05, 0.9, 0.99, 1e-3});
  FlatTensor x = {0.0f, 0.0f, 0.0f};
  auto loss = [&](const FlatTensor& p) {
    double f = 0;
    for (size_t i = 0; i < p.size(); ++i) f += 0.5 * a[i] * (p[i] - c[i]) * (p[i] - c[i]);
    return f;
  };
  const double initial = loss(x);
  for (int r = 0; r < 400; ++r) {
    std::vector<double> delta(3);
    for (size_t i = 0; i < 3; ++i) delta[i] = -0.1 * a[i] * (x[i] - c[i]);
    auto next = opt->Apply(x, delta);
    ASSERT_TRUE(next.ok()) << next.status();
    x = *next;
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(x[i], c[i], 1e-3) << "coord " << i;
  EXPECT_LT(loss(x), 1e-8 * initial);
}

TEST(PlainServerOptimizerTest, UnitStepAddsTheDelta) {
  PlainServerOptimizer opt;
  EXPECT_EQ(opt.name(), "none");
  auto x = opt.Apply(FlatTensor{1.0f, -2.0f}, std::vector<double>{0.5, 0.25});
  ASSERT_TRUE(x.ok());
  EXPECT_FLOAT_EQ((*x)[0], 1.5f);
  EXPECT_FLOAT_EQ((*x)[1], -1.75f);
}

TEST(PlainServerOptimizerTest, ScaledStepIsNamedSgd) {
  PlainServerOptimizer opt(0.5);
  EXPECT_EQ(opt.name(), "sgd");
  auto x = opt.Apply(FlatTensor{1.0f}, std::vector<double>{-3.0});
  ASSERT_TRUE(x.ok());
  EXPECT_FLOAT_EQ((*x)[0], -0.5f);
}

TEST(PlainServerOptimizerTest, IsStatelessAndRefusesBadInput) {
  PlainServerOptimizer opt;
  EXPECT_EQ(opt.SaveState(), "");
  EXPECT_TRUE(opt.LoadState("").ok());
  EXPECT_EQ(opt.LoadState("x").code(), absl::StatusCode::kInvalidArgument);
  auto adam = MakeAdaptive(Kind::kAdam, 1);
  EXPECT_EQ(opt.LoadState(adam->SaveState()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(adam->LoadState("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt.Apply(FlatTensor{1, 2}, std::vector<double>{1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt.Apply(FlatTensor{1}, std::vector<double>{std::nan("")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlainServerOptimizer::Create(0.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlainServerOptimizer::Create(-1.0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MakeServerOptimizerTest, BuildsEachKnownName) {
  for (const auto& [name, want] :
       std::vector<std::pair<std::string, std::string>>{{"none", "none"},
                                                        {"fedavg", "none"},
                                                        {"fedadagrad", "fedadagrad"},
                                                        {"fedadam", "fedadam"},
                                                        {"fedyogi", "fedyogi"}}) {
    auto opt = MakeServerOptimizer(name, 4);
    ASSERT_TRUE(opt.ok()) << name << ": " << opt.status();
    EXPECT_EQ((*opt)->name(), want);
  }
}

TEST(MakeServerOptimizerTest, FedAvgTakesAUnitStepWhateverTheAdaptiveLearningRate) {
  auto opt = MakeServerOptimizer("fedavg", 1, {/*server_lr=*/0.01, 0.9, 0.99, 1e-3});
  ASSERT_TRUE(opt.ok());
  auto x = (*opt)->Apply(FlatTensor{1.0f}, std::vector<double>{0.5});
  ASSERT_TRUE(x.ok());
  EXPECT_FLOAT_EQ((*x)[0], 1.5f);
}

TEST(MakeServerOptimizerTest, RefusesUnknownNamesAndBadOptions) {
  auto unknown = MakeServerOptimizer("fedprox", 4);
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* known : {"none", "fedavg", "fedadagrad", "fedadam", "fedyogi"}) {
    EXPECT_NE(unknown.status().message().find(known), std::string::npos) << known;
  }
  EXPECT_EQ(MakeServerOptimizer("fedadam", 4, {0.01, 0.9, 0.99, 0.0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeServerOptimizer("none", -1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::cloud::aggregation
