#include "control/analysis/judge.h"

#include <algorithm>
#include <memory>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace shroud {
namespace {

bool IsNative(const RunFlows& r) { return r.spec.mode == "native"; }

struct TrainingSet {
  std::vector<LabelledFlow> flows;  // is_migration = the training label
  size_t runs = 0;
  bool has_positive = false, has_negative = false;
};

// The paper's adversary learns from native migrations: the flows of every
// native run but `skip`. Chaff (none in native runs) is left out.
TrainingSet NativeTraining(const std::vector<RunFlows>& runs, const RunFlows* skip) {
  TrainingSet t;
  for (const RunFlows& r : runs) {
    if (&r == skip || !IsNative(r)) continue;
    ++t.runs;
    for (const JudgedFlow& f : r.flows) {
      if (f.label == FlowLabel::kChaff) continue;
      t.flows.push_back(f.flow);
      t.flows.back().is_migration = f.label == FlowLabel::kMigration;
      (f.label == FlowLabel::kMigration ? t.has_positive : t.has_negative) = true;
    }
  }
  return t;
}

// The adaptive adversary learns from shroud's output: stealth migrations of
// every stealth run but `skip` against all non-migration flows (background
// and chaff) of every run but `skip`.
TrainingSet AdaptiveTraining(const std::vector<RunFlows>& runs, const RunFlows* skip) {
  TrainingSet t;
  for (const RunFlows& r : runs) {
    if (&r == skip) continue;
    if (!IsNative(r)) ++t.runs;
    for (const JudgedFlow& f : r.flows) {
      const bool positive = f.label == FlowLabel::kMigration;
      if (positive && IsNative(r)) continue;
      t.flows.push_back(f.flow);
      t.flows.back().is_migration = positive;
      (positive ? t.has_positive : t.has_negative) = true;
    }
  }
  return t;
}

absl::StatusOr<TimingAttack> TrainTimingAttack(const TrainingSet& t, const JudgeOptions& o,
                                               const std::string& name) {
  std::vector<std::vector<double>> x;
  std::vector<bool> y;
  for (const LabelledFlow& f : t.flows) {
    x.push_back(TimingFeatures(f.view(o.config)));
    y.push_back(f.is_migration);
  }
  absl::StatusOr<TimingModel> model =
      TrainTiming(x, y, TimingFeatureNames(o.config), o.timing_training);
  if (!model.ok()) return model.status();
  return TimingAttack::Create(*std::move(model), o.config, name);
}

std::string Describe(const TrainingSet& t, const char* what) {
  size_t pos = 0;
  for (const LabelledFlow& f : t.flows) pos += f.is_migration ? 1 : 0;
  return absl::StrCat(what, " (", t.runs, " runs: ", pos, " migration, ", t.flows.size() - pos,
                      " other flows)");
}

}  // namespace

const char* FlowLabelName(FlowLabel label) {
  switch (label) {
    case FlowLabel::kMigration: return "migration";
    case FlowLabel::kBackground: return "background";
    case FlowLabel::kChaff: return "chaff";
  }
  return "?";
}

bool Ipv4Net::Contains(const std::array<uint8_t, 16>& addr) const {
  for (int bit = 0; bit < prefix; ++bit) {
    const uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    if ((addr[bit / 8] & mask) != (address[bit / 8] & mask)) return false;
  }
  return true;
}

absl::StatusOr<std::vector<Ipv4Net>> ParseIpv4Nets(const std::string& text) {
  std::vector<Ipv4Net> nets;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    std::vector<absl::string_view> parts = absl::StrSplit(item, '/');
    std::vector<absl::string_view> octets =
        parts.empty() ? std::vector<absl::string_view>{} : absl::StrSplit(parts[0], '.');
    Ipv4Net net;
    bool ok = parts.size() <= 2 && octets.size() == 4;
    for (size_t i = 0; ok && i < 4; ++i) {
      int v = 0;
      ok = absl::SimpleAtoi(octets[i], &v) && v >= 0 && v <= 255;
      net.address[i] = static_cast<uint8_t>(v);
    }
    if (ok && parts.size() == 2) {
      ok = absl::SimpleAtoi(parts[1], &net.prefix) && net.prefix >= 0 && net.prefix <= 32;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", item, "' is not an IPv4 network (like 192.0.2.128/25)"));
    }
    nets.push_back(net);
  }
  return nets;
}

RunFlows LabelFlows(const JudgeRunSpec& spec, const std::vector<LabelledFlow>& flows,
                    uint64_t stream_packets, const FlowLabelRules& rules) {
  RunFlows run;
  run.spec = spec;
  run.stream_packets = stream_packets;
  absl::flat_hash_map<FlowKey, uint64_t> bytes_by_key;
  for (const LabelledFlow& f : flows) {
    if (f.features.packets >= rules.min_packets) bytes_by_key[f.key] += f.features.bytes;
  }
  for (const LabelledFlow& f : flows) {
    if (f.features.packets < rules.min_packets) continue;
    JudgedFlow j;
    j.flow = f;
    const FlowKey& k = f.key;
    bool chaff = false;
    for (const Ipv4Net& net : rules.chaff_nets) {
      chaff = chaff || (k.ip_version == 4 && (net.Contains(k.src_addr) || net.Contains(k.dst_addr)));
    }
    // Chaff first: the gateways may give chaff the migration's ports.
    j.label = chaff ? FlowLabel::kChaff
                    : (f.is_migration ? FlowLabel::kMigration : FlowLabel::kBackground);
    j.flow.is_migration = j.label == FlowLabel::kMigration;
    auto in_bulk = [&](uint16_t p) { return p >= rules.bulk_port_lo && p <= rules.bulk_port_hi; };
    j.bulk = j.label == FlowLabel::kBackground && k.protocol == kProtoTcp &&
             (in_bulk(k.src_port) || in_bulk(k.dst_port));
    if (k.protocol == kProtoTcp) {
      auto reverse = bytes_by_key.find(k.Reversed());
      j.ack_direction = reverse != bytes_by_key.end() &&
                        reverse->second >= kAckDirectionByteRatio * f.features.bytes;
    }
    run.flows.push_back(std::move(j));
  }
  return run;
}

absl::StatusOr<RunFlows> LoadRun(const JudgeRunSpec& spec, const FlowLabelRules& rules,
                                 const CaptureOptions& options) {
  // CollectLabelledFlows reads exact gaps and leaves the migration's ACK
  // direction out, as Table III and the detectors want.
  LabelledCaptures captures;
  captures.migration = {spec.capture};
  captures.migration_filter = rules.migration_filter;
  captures.min_packets = rules.min_packets;
  absl::StatusOr<std::vector<LabelledFlow>> flows = CollectLabelledFlows(captures, options);
  if (!flows.ok()) {
    return absl::Status(flows.status().code(),
                        absl::StrCat("run ", spec.id, ": ", flows.status().message()));
  }
  // The stream's length is the same for every flow of the capture; a
  // capture without long flows has none to judge anyway.
  const uint64_t stream = flows->empty() ? 0 : flows->front().stream_packets;
  return LabelFlows(spec, *flows, stream, rules);
}

std::string MaxEntDetectorName(const MaxEntWindows& windows) {
  return absl::StrCat("maxent_w", absl::StrJoin(windows, "_"));
}

std::vector<std::string> JudgeDetectorNames(const JudgeOptions& options) {
  std::vector<std::string> names = {"pattern", "maxent", "maxent_shipped", "timing", "timing_adaptive"};
  for (const MaxEntWindows& w : options.more_maxent_windows) names.push_back(MaxEntDetectorName(w));
  return names;
}

absl::Status JudgeOptionsError(const JudgeOptions& o) {
  std::set<MaxEntWindows> triples = {o.maxent_windows};
  for (const MaxEntWindows& w : o.more_maxent_windows) {
    const std::string name = absl::StrJoin(w, ",");
    for (size_t i = 0; i < w.size(); ++i) {
      if (w[i] == 0 || (i > 0 && w[i] <= w[i - 1])) {
        return absl::InvalidArgumentError(
            absl::StrCat("maxent window triple ", name, ": must be three ascending positive sizes"));
      }
      if (o.config.WindowSlot(w[i]) < 0) {
        return absl::InvalidArgumentError(absl::StrCat("maxent window triple ", name, ": ", w[i],
                                                       " is not one of the feature windows"));
      }
    }
    if (!triples.insert(w).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("maxent window triple ", name, " is given twice or is maxent's own"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JudgeResult> JudgeRuns(const std::vector<RunFlows>& runs, const JudgeOptions& o) {
  std::set<std::string> ids;
  for (const RunFlows& r : runs) {
    if (r.spec.mode != "native" && r.spec.mode != "stealth") {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", r.spec.id, ": mode must be \"native\" or \"stealth\", got \"", r.spec.mode, "\""));
    }
    if (!ids.insert(r.spec.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("run id ", r.spec.id, " appears twice"));
    }
  }
  if (absl::Status s = JudgeOptionsError(o); !s.ok()) return s;
  std::vector<std::string> more_names;  // per o.more_maxent_windows
  for (const MaxEntWindows& w : o.more_maxent_windows) more_names.push_back(MaxEntDetectorName(w));
  absl::StatusOr<std::unique_ptr<MaxEntAttack>> shipped = MaxEntAttack::Create(o.shipped, o.config);
  if (!shipped.ok()) return shipped.status();
  const PatternAttack pattern;

  // The paper's adversary, trained on native runs but `skip` (nullptr: all).
  using MaxEntOrWhy = absl::StatusOr<std::shared_ptr<const MaxEntAttack>>;
  struct NativeModels {
    MaxEntOrWhy maxent = absl::UnknownError("");
    std::vector<MaxEntOrWhy> more_maxent;  // per o.more_maxent_windows
    absl::StatusOr<std::shared_ptr<const TimingAttack>> timing = absl::UnknownError("");
    std::string desc;
  };
  auto train_native = [&](const RunFlows* skip) {
    const TrainingSet t = NativeTraining(runs, skip);
    NativeModels m;
    m.desc = Describe(t, skip ? "trained on the other native runs" : "trained on all native runs");
    if (!t.has_positive || !t.has_negative) {
      const absl::Status none = absl::FailedPreconditionError(
          "no other native run with a migration flow and background flows");
      m.maxent = none;
      m.more_maxent.assign(o.more_maxent_windows.size(), none);
      m.timing = none;
      return m;
    }
    auto train_maxent = [&](const MaxEntWindows& windows) -> MaxEntOrWhy {
      absl::StatusOr<MaxEntModel> model = TrainOnFlows(t.flows, o.config, windows, o.maxent_training);
      absl::StatusOr<std::unique_ptr<MaxEntAttack>> attack =
          model.ok() ? MaxEntAttack::Create(*model, o.config) : model.status();
      if (!attack.ok()) return attack.status();
      return std::shared_ptr<const MaxEntAttack>(*std::move(attack));
    };
    m.maxent = train_maxent(o.maxent_windows);
    for (const MaxEntWindows& w : o.more_maxent_windows) m.more_maxent.push_back(train_maxent(w));
    absl::StatusOr<TimingAttack> timing = TrainTimingAttack(t, o, "timing");
    if (timing.ok()) {
      m.timing = std::make_shared<const TimingAttack>(*std::move(timing));
    } else {
      m.timing = timing.status();
    }
    return m;
  };
  // Models trained on all native runs serve every stealth run alike.
  std::optional<NativeModels> all_native;

  JudgeResult result;
  for (const RunFlows& run : runs) {
    JudgedRun jr;
    jr.run = &run;
    const bool native = IsNative(run);
    if (!native && !all_native.has_value()) all_native = train_native(nullptr);
    const NativeModels trained = native ? train_native(&run) : *all_native;
    const auto& maxent = trained.maxent;
    const auto& timing = trained.timing;
    const std::string& desc = trained.desc;
    jr.models["pattern"] = "no training (Algorithm 1)";
    jr.models["maxent_shipped"] = "the given model";
    auto model_desc = [&desc](const MaxEntOrWhy& m) {
      return m.ok() ? desc : absl::StrCat("none: ", m.status().message());
    };
    jr.models["maxent"] = model_desc(maxent);
    for (size_t k = 0; k < more_names.size(); ++k) {
      jr.models[more_names[k]] = model_desc(trained.more_maxent[k]);
    }
    jr.models["timing"] = timing.ok() ? desc : absl::StrCat("none: ", timing.status().message());
    auto keep_weights = [&jr](const std::string& name, const TimingAttack& a) {
      for (size_t i = 0; i < a.model().names.size(); ++i) {
        jr.weights[name].emplace_back(a.model().names[i], a.model().weights[i]);
      }
    };
    if (timing.ok()) keep_weights("timing", **timing);

    absl::StatusOr<TimingAttack> adaptive = absl::FailedPreconditionError("native run");
    if (native) {
      jr.models["timing_adaptive"] = "not applicable (native run)";
    } else {
      TrainingSet t = AdaptiveTraining(runs, &run);
      adaptive = t.has_positive && t.has_negative
                     ? TrainTimingAttack(t, o, "timing_adaptive")
                     : absl::FailedPreconditionError("no other stealth run with a migration flow");
      jr.models["timing_adaptive"] =
          adaptive.ok() ? Describe(t, "trained on the other stealth runs' migrations")
                        : absl::StrCat("none: ", adaptive.status().message());
      if (adaptive.ok()) keep_weights("timing_adaptive", *adaptive);
    }

    for (const JudgedFlow& f : run.flows) {
      const FlowView view = f.flow.view(o.config);
      std::map<std::string, std::optional<DetectorResult>> v;
      v["pattern"] = pattern.Evaluate(view);
      v["maxent_shipped"] = (*shipped)->Evaluate(view);
      auto judged_by = [&view](const MaxEntOrWhy& m) {
        return m.ok() ? std::optional<DetectorResult>((*m)->Evaluate(view)) : std::nullopt;
      };
      v["maxent"] = judged_by(maxent);
      for (size_t k = 0; k < more_names.size(); ++k) v[more_names[k]] = judged_by(trained.more_maxent[k]);
      v["timing"] = timing.ok() ? std::optional<DetectorResult>((*timing)->Evaluate(view)) : std::nullopt;
      v["timing_adaptive"] =
          adaptive.ok() ? std::optional<DetectorResult>(adaptive->Evaluate(view)) : std::nullopt;
      jr.verdicts.push_back(std::move(v));
    }
    result.runs.push_back(std::move(jr));
  }

  // Table III groups, pooled over the runs of a mode: a migration is
  // compared with the background flows that crossed the same network at the
  // same time (with the gateways and chaff of that mode), as in the paper.
  // ACK directions are left out on both sides: the migration's is never
  // judged, and a stream of 66-byte ACKs differs from any data flow in its
  // inter-packet times (7 us apart back to back at 100 Mbit/s, a full frame
  // 123 us) whether or not a migration is hidden.
  std::vector<const LabelledFlow*> native_mig, stealth_mig, chaff;
  std::vector<const LabelledFlow*> native_bg, native_bulk, stealth_bg, stealth_bulk;
  for (const RunFlows& r : runs) {
    const bool native = IsNative(r);
    for (const JudgedFlow& f : r.flows) {
      switch (f.label) {
        case FlowLabel::kMigration: (native ? native_mig : stealth_mig).push_back(&f.flow); break;
        case FlowLabel::kChaff:
          if (!f.ack_direction) chaff.push_back(&f.flow);
          break;
        case FlowLabel::kBackground:
          if (f.ack_direction) break;
          (native ? native_bg : stealth_bg).push_back(&f.flow);
          if (f.bulk) (native ? native_bulk : stealth_bulk).push_back(&f.flow);
          break;
      }
    }
  }
  const std::vector<std::tuple<std::string, std::string, const std::vector<const LabelledFlow*>*,
                               const std::vector<const LabelledFlow*>*>>
      pairs = {{"native migration", "background", &native_mig, &native_bg},
               {"native migration", "bulk", &native_mig, &native_bulk},
               {"stealth migration", "background", &stealth_mig, &stealth_bg},
               {"stealth migration", "bulk", &stealth_mig, &stealth_bulk},
               {"chaff", "background", &chaff, &stealth_bg}};
  for (const auto& [a, b, ga, gb] : pairs) {
    NamedComparison c{a, b};
    // CompareGroups uses each flow's exact IPT histogram (LoadRun has them).
    c.result = CompareGroups(*ga, *gb, o.config, o.ks_window);
    result.comparisons.push_back(std::move(c));
  }
  return result;
}

}  // namespace shroud
