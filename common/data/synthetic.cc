// The built-in synthetic IoT task: machine-health classification for pump stations.
//
// Design (tuned in a numpy + torch simulation of central, single-site and FedAvg training):
// - Five machine states. Each plant (site) runs mostly the normal state plus two fault types,
//   and sees the other two only in ~1% of samples, so no site alone learns the whole task.
//   Every fault is common at exactly two sites and normal is common everywhere, so the fleet
//   together covers all states.
// - Plants differ in ambient temperature, supply voltage (motor current scales with 400 V/V),
//   grid frequency (50/60 Hz, so shaft speed) and pump set point (pressure, flow). A model has
//   to read faults relative to those, e.g. bearing temperature against ambient and load.
// - Each sample has a load factor and, for a fault, a severity in [0.25, 1]. Bearing wear
//   shows first as impulsiveness (kurtosis, crest factor) that fades as the damage spreads while
//   the vibration level grows, the way real bearing defects evolve.
// - Drift is a sensor calibration shift (vibration, bearing temperature, pressure, acoustic) of
//   about one fleet-wide standard deviation per unit, the same for every machine state.
//
// All randomness comes from explicitly seeded generators; the same arguments give the same
// bytes on every run.

#include "common/data/synthetic.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"

namespace fedge::data {
namespace {

constexpr int kNumClasses = 5;
enum State { kNormal = 0, kBearingWear = 1, kMisalignment = 2, kOverheating = 3, kCavitation = 4 };

// A plant: its operating conditions and its mix of machine states.
struct SiteProfile {
  double ambient_c;
  double supply_v;
  double grid_hz;
  double pressure_bar;
  double flow_m3h;
  std::array<double, kNumClasses> mix;  // share per state, before kLeak is added
};

constexpr std::array<SiteProfile, 4> kArchetypes = {{
    {12.0, 400.0, 50.0, 4.0, 60.0, {0.40, 0.35, 0.25, 0.00, 0.00}},
    {24.0, 380.0, 60.0, 5.5, 45.0, {0.35, 0.00, 0.35, 0.30, 0.00}},
    {33.0, 415.0, 50.0, 3.0, 75.0, {0.30, 0.00, 0.00, 0.35, 0.35}},
    {18.0, 460.0, 60.0, 6.5, 35.0, {0.30, 0.35, 0.00, 0.00, 0.35}},
}};
// Every state can occur at every site, but a plant sees its two uncommon faults about once per
// thousand samples: too few to learn them alone, which is why federation matters.
constexpr double kLeak = 0.001;

constexpr double kPi = 3.14159265358979323846;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Domains keep the site stream, the holdout and the site profiles from ever sharing a seed.
constexpr uint64_t kDomainSite = 0x5173;
constexpr uint64_t kDomainHoldout = 0x401D;
constexpr uint64_t kDomainProfile = 0x9F0F;

uint64_t MixSeed(uint64_t seed, uint64_t site, uint64_t stream, uint64_t domain) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ site);
  h = SplitMix64(h ^ stream);
  return SplitMix64(h ^ domain);
}

// Uniform and normal draws written out here, so the data does not depend on how a standard
// library implements its distributions.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  // In [0, 1).
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  double Normal(double mean, double sd) {
    if (has_spare_) {
      has_spare_ = false;
      return mean + sd * spare_;
    }
    // Box-Muller; 1 - Uniform() is in (0, 1], so the log is finite.
    const double r = std::sqrt(-2.0 * std::log(1.0 - Uniform()));
    const double theta = 2.0 * kPi * Uniform();
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return mean + sd * r * std::cos(theta);
  }
  int Categorical(const std::array<double, kNumClasses>& p) {
    double u = Uniform();
    for (int k = 0; k < kNumClasses - 1; ++k) {
      if (u < p[k]) return k;
      u -= p[k];
    }
    return kNumClasses - 1;
  }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

SiteProfile ProfileFor(const SyntheticOptions& options, int site) {
  SiteProfile p = kArchetypes[static_cast<size_t>(site) % kArchetypes.size()];
  if (site >= static_cast<int>(kArchetypes.size())) {
    // Fleets larger than four plants repeat the archetypes with plant-to-plant variation.
    Rng rng(MixSeed(options.seed, static_cast<uint64_t>(site), 0, kDomainProfile));
    p.ambient_c += rng.Uniform(-4.0, 4.0);
    p.supply_v += rng.Uniform(-10.0, 10.0);
    p.pressure_bar *= rng.Uniform(0.9, 1.1);
    p.flow_m3h *= rng.Uniform(0.9, 1.1);
  }
  double total = 0.0;
  for (double& m : p.mix) {
    m += kLeak;
    total += m;
  }
  for (double& m : p.mix) m /= total;
  return p;
}

// What a sample's sensors would report, before measurement noise, for both feature modes.
struct Machine {
  int state = kNormal;
  double load = 1.0;
  double ambient_c = 20.0;
  // Fault severity per state, zero for all but the sample's state.
  double bearing_wear = 0, misalignment = 0, overheating = 0, cavitation = 0;
  // Bearing wear: early impulsiveness that fades, and late broadband growth.
  double wear_early = 0, wear_late = 0;
};

Machine DrawMachine(const SiteProfile& site, Rng& rng) {
  Machine m;
  m.state = rng.Categorical(site.mix);
  const double severity = m.state == kNormal ? 0.0 : rng.Uniform(0.25, 1.0);
  m.load = std::clamp(rng.Normal(1.0, 0.12), 0.6, 1.4);
  m.ambient_c = site.ambient_c + rng.Normal(0.0, 3.0);
  switch (m.state) {
    case kBearingWear:
      m.bearing_wear = severity;
      break;
    case kMisalignment:
      m.misalignment = severity;
      break;
    case kOverheating:
      m.overheating = severity;
      break;
    case kCavitation:
      m.cavitation = severity;
      break;
    default:
      break;
  }
  m.wear_early = 4.0 * m.bearing_wear * (1.0 - m.bearing_wear);
  m.wear_late = m.bearing_wear * m.bearing_wear;
  return m;
}

double Slip(const Machine& m, Rng& rng) {
  return 0.015 * m.load + 0.012 * m.overheating + 0.004 * m.misalignment + rng.Normal(0.0, 0.002);
}

constexpr int kSummaryFeatures = 12;

void SummaryRow(const SiteProfile& site, const Machine& m, double drift, Rng& rng, float* out) {
  const double vib_rms = 1.8 * m.load + rng.Normal(0, 0.35) + 0.9 * m.wear_late +
                         2.2 * m.misalignment + 1.0 * m.cavitation + 0.2 * m.overheating;
  const double crest = 3.0 + rng.Normal(0, 0.35) + 2.0 * m.wear_early + 0.8 * m.cavitation;
  const double kurtosis =
      3.0 + rng.Normal(0, 0.5) + 3.5 * m.wear_early + 1.5 * m.cavitation + 0.3 * m.misalignment;
  const double bearing_temp = m.ambient_c + 22.0 * m.load + rng.Normal(0, 3.0) +
                              8.0 * m.bearing_wear + 6.0 * m.misalignment + 22.0 * m.overheating;
  const double current = (400.0 / site.supply_v) * 28.0 * m.load + rng.Normal(0, 1.2) +
                         2.5 * m.misalignment + 4.0 * m.overheating;
  const double thd =
      3.0 + rng.Normal(0, 0.6) + 3.0 * m.overheating + 1.0 * m.misalignment + 0.5 * m.bearing_wear;
  const double pressure = site.pressure_bar * m.load + rng.Normal(0, 0.25) -
                          1.6 * m.cavitation * (site.pressure_bar / 4.5);
  const double flow =
      site.flow_m3h * m.load + rng.Normal(0, 3.0) - 0.25 * site.flow_m3h * m.cavitation;
  const double rpm = site.grid_hz * 30.0 * (1.0 - Slip(m, rng));
  const double acoustic = 68.0 + 6.0 * m.load + rng.Normal(0, 2.0) + 6.0 * m.bearing_wear +
                          9.0 * m.cavitation + 3.0 * m.misalignment + 1.0 * m.overheating;
  const double ambient = m.ambient_c + rng.Normal(0, 0.5);
  const double voltage = site.supply_v + rng.Normal(0, 4.0);
  const std::array<double, kSummaryFeatures> row = {vib_rms + 0.9 * drift,
                                                    vib_rms * crest,
                                                    kurtosis,
                                                    bearing_temp + 9.0 * drift,
                                                    current,
                                                    thd,
                                                    pressure - 1.2 * drift,
                                                    flow,
                                                    rpm,
                                                    acoustic + 4.0 * drift,
                                                    ambient,
                                                    voltage};
  for (int j = 0; j < kSummaryFeatures; ++j) out[j] = static_cast<float>(row[j]);
}

constexpr int kChannels = 4;

// Raw signals, one step = one sample of a ~1 kHz acquisition. The grid frequency sets the line
// frequency of the motor current; a four-pole motor turns at half of it less the slip.
void WindowRow(const SiteProfile& site, const Machine& m, double drift, int window, Rng& rng,
               float* out) {
  const double f_line = 0.06 * site.grid_hz / 50.0;  // cycles per step
  const double f_rot = 0.5 * f_line * (1.0 - Slip(m, rng));
  const double f_bearing = 3.58 * f_rot;  // outer-race defect frequency
  const double f_ring = 0.35;             // structural resonance the impacts excite
  const double phase = rng.Uniform(0.0, 2.0 * kPi);
  const double bearing_phase = rng.Uniform(0.0, 1.0);

  float* vib = out;
  float* cur = out + window;
  float* temp = out + 2 * window;
  float* acou = out + 3 * window;

  // Vibration (mm/s): 1x unbalance, 2x from misalignment, bearing impacts, cavitation noise.
  const double a1 = std::sqrt(2.0) * (1.8 * m.load + 0.2 * m.overheating);
  const double a2 = std::sqrt(2.0) * (0.3 + 2.2 * m.misalignment);
  const double impact = 6.0 * m.wear_early + 1.5 * m.wear_late;
  const double broadband = 0.35 + 0.9 * m.wear_late + 1.0 * m.cavitation;
  // Current (A): fundamental with 3rd and 5th harmonics (THD), misalignment sidebands.
  const double i_pk = std::sqrt(2.0) * ((400.0 / site.supply_v) * 28.0 * m.load +
                                        2.5 * m.misalignment + 4.0 * m.overheating);
  const double thd = (3.0 + 3.0 * m.overheating + 1.0 * m.misalignment) / 100.0;
  const double sideband = 0.04 * m.misalignment * i_pk;
  // Bearing temperature (C): a level plus a trend over the window; overheating climbs.
  const double t0 = m.ambient_c + 22.0 * m.load + 8.0 * m.bearing_wear + 6.0 * m.misalignment +
                    12.0 * m.overheating + rng.Normal(0, 2.0) + 9.0 * drift;
  const double slope = rng.Normal(0.0, 0.3) + 6.0 * m.overheating;
  // Acoustic pressure (relative): a level from dB, motor hum, cavitation crackle, impacts.
  const double level_db = 68.0 + 6.0 * m.load + 3.0 * m.misalignment + 1.0 * m.overheating;
  const double a_noise = std::pow(10.0, (level_db - 70.0) / 20.0) * (1.0 + 0.5 * drift);
  const double crackle = 3.0 * m.cavitation;

  double ring = 0.0;  // decaying resonance state from the last bearing impact
  for (int t = 0; t < window; ++t) {
    const double x = static_cast<double>(t);
    const double rot = 2.0 * kPi * f_rot * x + phase;
    // An impact each time the defect passes the load zone.
    const double cycle = f_bearing * x + bearing_phase;
    if (impact > 0 && cycle - std::floor(cycle) < f_bearing) ring = impact;
    const double impact_signal = ring * std::sin(2.0 * kPi * f_ring * x);
    ring *= 0.6;
    vib[t] = static_cast<float>(a1 * std::sin(rot) + a2 * std::sin(2.0 * rot + 0.7) +
                                impact_signal + rng.Normal(0.0, broadband) + 0.9 * drift);

    const double line = 2.0 * kPi * f_line * x;
    cur[t] = static_cast<float>(i_pk * (std::sin(line) + 0.8 * thd * std::sin(3.0 * line) +
                                        0.6 * thd * std::sin(5.0 * line)) +
                                sideband * (std::sin(line - rot) + std::sin(line + rot)) +
                                rng.Normal(0.0, 1.0));

    temp[t] = static_cast<float>(t0 + slope * x / std::max(window - 1, 1) + rng.Normal(0.0, 0.2));

    const double burst = rng.Uniform() < 0.1 ? crackle * rng.Normal(0.0, 1.0) : 0.0;
    acou[t] = static_cast<float>(a_noise * (rng.Normal(0.0, 1.0) + 0.3 * std::sin(2.0 * line)) +
                                 burst + 0.3 * impact_signal);
  }
}

int64_t RowWidth(const SyntheticOptions& options) {
  return options.window > 0 ? int64_t{kChannels} * options.window : kSummaryFeatures;
}

Dataset Generate(const SyntheticOptions& options, int site, int64_t count, uint64_t seed) {
  Dataset data;
  data.feature_names = SyntheticFeatureNames(options);
  if (count <= 0) return data;
  const SiteProfile profile = ProfileFor(options, site);
  const int64_t width = RowWidth(options);
  data.features.resize(static_cast<size_t>(count * width));
  data.labels.resize(static_cast<size_t>(count));
  Rng rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    const Machine m = DrawMachine(profile, rng);
    data.labels[static_cast<size_t>(i)] = m.state;
    float* row = data.features.data() + i * width;
    if (options.window > 0) {
      WindowRow(profile, m, options.drift, options.window, rng, row);
    } else {
      SummaryRow(profile, m, options.drift, rng, row);
    }
  }
  return data;
}

}  // namespace

const std::vector<std::string>& SyntheticLabels() {
  static const auto* const kLabels = new std::vector<std::string>{
      "normal", "bearing_wear", "misalignment", "overheating", "cavitation"};
  return *kLabels;
}

int SyntheticChannels() { return kChannels; }

std::vector<std::string> SyntheticFeatureNames(const SyntheticOptions& options) {
  if (options.window <= 0) {
    return {"vibration_rms_mm_s",     "vibration_peak_mm_s", "vibration_kurtosis",
            "bearing_temp_c",         "motor_current_a",     "current_thd_pct",
            "discharge_pressure_bar", "flow_m3_h",           "shaft_speed_rpm",
            "acoustic_level_db",      "ambient_temp_c",      "supply_voltage_v"};
  }
  static constexpr std::array<const char*, kChannels> kChannelNames = {"vibration", "motor_current",
                                                                       "bearing_temp", "acoustic"};
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(kChannels) * options.window);
  for (const char* channel : kChannelNames) {
    for (int t = 0; t < options.window; ++t) {
      char step[16];
      std::snprintf(step, sizeof(step), "_t%03d", t);
      names.push_back(absl::StrCat(channel, step));
    }
  }
  return names;
}

Dataset GenerateSite(const SyntheticOptions& options, int site, int64_t count, uint64_t stream) {
  return Generate(options, site, count,
                  MixSeed(options.seed, static_cast<uint64_t>(site), stream, kDomainSite));
}

Dataset GenerateHoldout(const SyntheticOptions& options, int64_t count) {
  const int sites = std::max(options.num_sites, 1);
  Dataset all;
  all.feature_names = SyntheticFeatureNames(options);
  for (int s = 0; s < sites; ++s) {
    // Spread the remainder over the first sites so the total is exactly `count`.
    const int64_t n = count / sites + (s < count % sites ? 1 : 0);
    Dataset part =
        Generate(options, s, n, MixSeed(options.seed, static_cast<uint64_t>(s), 0, kDomainHoldout));
    all.features.insert(all.features.end(), part.features.begin(), part.features.end());
    all.labels.insert(all.labels.end(), part.labels.begin(), part.labels.end());
  }
  return all;
}

}  // namespace fedge::data
