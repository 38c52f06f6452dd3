#include <algorithm>
#include <numeric>
#include <utility>

#include "cloud/aggregation/robust.h"
#include "absl/strings/str_cat.h"

namespace fedge::cloud::aggregation {
namespace {

double SquaredDistance(const FlatTensor& a, const FlatTensor& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sum += d * d;
  }
  return sum;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Krum>> Krum::Create(int64_t num_elements, int byzantine,
                                                   int multi) {
  if (num_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a model cannot have ", num_elements, " values"));
  }
  if (byzantine < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("krum's byzantine count is ", byzantine, "; it must be at least 0"));
  }
  if (multi < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("krum selects ", multi, " updates; it must select at least 1"));
  }
  return std::unique_ptr<Krum>(new Krum(num_elements, byzantine, multi));
}

std::string Krum::name() const { return multi_ == 1 ? "krum" : "multi_krum"; }

absl::Status Krum::CheckSameParameters(const KeepingAggregator& other) const {
  const auto& source = static_cast<const Krum&>(other);
  if (source.byzantine_ != byzantine_ || source.multi_ != multi_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot merge a ", source.name(), " with f = ", source.byzantine_, ", m = ",
        source.multi_, " into one with f = ", byzantine_, ", m = ", multi_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> Krum::AggregateKept(
    const std::vector<FlatTensor>& updates) const {
  const size_t n = updates.size();
  const auto f = static_cast<size_t>(byzantine_);
  if (n < f + 3) {
    return absl::FailedPreconditionError(
        absl::StrCat(name(), " needs n >= f + 3 updates; n = ", n, ", f = ", f));
  }
  const auto m = static_cast<size_t>(multi_);
  if (m > n) {
    return absl::FailedPreconditionError(
        absl::StrCat(name(), " averages ", m, " updates; only ", n, " were folded"));
  }

  std::vector<double> distance(n * n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      distance[i * n + j] = distance[j * n + i] = SquaredDistance(updates[i], updates[j]);
    }
  }

  const size_t neighbours = n - f - 2;
  std::vector<double> score(n);
  std::vector<double> others;
  others.reserve(n - 1);
  for (size_t i = 0; i < n; ++i) {
    others.clear();
    for (size_t j = 0; j < n; ++j) {
      if (j != i) others.push_back(distance[i * n + j]);
    }
    std::partial_sort(others.begin(), others.begin() + neighbours, others.end());
    score[i] = std::accumulate(others.begin(), others.begin() + neighbours, 0.0);
  }

  // Lowest score first; equal scores in fold order.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&score](size_t a, size_t b) { return score[a] < score[b]; });

  std::vector<double> out(static_cast<size_t>(num_elements_), 0.0);
  for (size_t r = 0; r < m; ++r) {
    const FlatTensor& chosen = updates[order[r]];
    for (size_t k = 0; k < out.size(); ++k) out[k] += chosen[k];
  }
  for (double& v : out) v /= static_cast<double>(m);
  return out;
}

}  // namespace fedge::cloud::aggregation
