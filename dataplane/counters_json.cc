#include "dataplane/counters_json.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shroud {
namespace {

nlohmann::json DirectionJson(const DirectionCounters& d) {
  return {{"rx_packets", d.rx_packets},           {"rx_bytes", d.rx_bytes},
          {"forwarded_packets", d.forwarded_packets}, {"forwarded_bytes", d.forwarded_bytes},
          {"shaped_packets", d.shaped_packets},   {"tx_packets", d.tx_packets},
          {"tx_bytes", d.tx_bytes},               {"tx_dropped", d.tx_dropped},
          {"tx_retried", d.tx_retried}};
}

nlohmann::json ClassJson(const ShaperClassCounters& s) {
  return {{"enqueued_packets", s.enqueued_packets},
          {"enqueued_bytes", s.enqueued_bytes},
          {"sent_packets", s.sent_packets},
          {"sent_bytes", s.sent_bytes},
          {"dropped_packets", s.dropped_packets},
          {"dropped_bytes", s.dropped_bytes},
          {"oversize_packets", s.oversize_packets},
          {"borrowed_bytes", s.borrowed_bytes},
          {"backlog_packets", s.backlog_packets},
          {"sojourn_ns_max", s.sojourn_ns_max},
          {"lane_turns", s.lane_turns},
          {"sojourn_ns_mean", s.sent_packets == 0 ? 0 : s.sojourn_ns_total / s.sent_packets}};
}

nlohmann::json PortsJson(const std::vector<PortCounters>& ports) {
  nlohmann::json pj = nlohmann::json::array();
  for (const PortCounters& p : ports) {
    pj.push_back({{"port", p.port},           {"name", p.name},
                  {"rx_packets", p.rx_packets}, {"rx_bytes", p.rx_bytes},
                  {"tx_packets", p.tx_packets}, {"tx_bytes", p.tx_bytes},
                  {"rx_missed", p.rx_missed},   {"rx_errors", p.rx_errors},
                  {"tx_errors", p.tx_errors},   {"rx_nombuf", p.rx_nombuf}});
  }
  return pj;
}

}  // namespace

nlohmann::json MirrorJson(const FlowExporterCounters& r, uint64_t ring_dropped) {
  return {{"updates", r.updates},
          {"ends", r.ends},
          {"finals", r.finals},
          {"dropped", r.dropped},
          {"ring_dropped", ring_dropped}};
}

nlohmann::json TapCountersToJson(const std::vector<TapCounters>& workers,
                                 const std::vector<PortCounters>& ports) {
  nlohmann::json j;
  j["version"] = 1;
  j["mode"] = "tap";
  j["ports"] = PortsJson(ports);
  const TapCounters total = SumTapCounters(workers);
  nlohmann::json wj = nlohmann::json::array();
  for (const TapCounters& w : workers) {
    wj.push_back({{"rx_packets", w.rx_packets},
                  {"rx_bytes", w.rx_bytes},
                  {"flows_active", w.flows_active},
                  {"flows_created", w.flows.created},
                  {"flows_evicted_idle", w.flows.evicted_idle},
                  {"flows_table_full", w.flows.table_full},
                  {"mirror", MirrorJson(w.records, w.mirror_ring_dropped)},
                  {"elapsed_s", static_cast<double>(w.elapsed_ns) * 1e-9}});
  }
  j["workers"] = wj;
  j["rx_packets"] = total.rx_packets;
  j["rx_bytes"] = total.rx_bytes;
  j["stream_packets"] = total.stream_packets;
  j["wire_length_from_ip"] = total.wire_length_from_ip;
  nlohmann::json parse = nlohmann::json::object();
  for (size_t i = 0; i < total.parse_status.size(); ++i) {
    parse[std::string(ParseStatusName(static_cast<ParseStatus>(i)))] = total.parse_status[i];
  }
  j["parse"] = parse;
  j["flows"] = {{"active", total.flows_active},
                {"created", total.flows.created},
                {"evicted_idle", total.flows.evicted_idle},
                {"table_full", total.flows.table_full}};
  j["mirror"] = MirrorJson(total.records, total.mirror_ring_dropped);
  return j;
}

nlohmann::json CountersToJson(const GatewayCounters& c, const std::vector<PortCounters>& ports,
                              uint64_t seed) {
  nlohmann::json j;
  j["version"] = 1;
  j["seed"] = seed;
  j["elapsed_s"] = static_cast<double>(c.elapsed_ns) * 1e-9;
  j["runtime_updates"] = c.runtime_updates;
  j["rules_reloaded"] = c.rules_reloaded;
  j["mirror"] = MirrorJson(c.records, c.mirror_ring_dropped);
  j["ports"] = PortsJson(ports);
  j["inside_to_outside"] = DirectionJson(c.direction[kInsideToOutside]);
  j["outside_to_inside"] = DirectionJson(c.direction[kOutsideToInside]);
  nlohmann::json parse = nlohmann::json::object();
  for (size_t i = 0; i < c.parse_status.size(); ++i) {
    parse[std::string(ParseStatusName(static_cast<ParseStatus>(i)))] = c.parse_status[i];
  }
  j["parse"] = parse;
  j["malformed_dropped"] = c.malformed_dropped;
  j["flows"] = {{"active", c.flows_active},
                {"created", c.flows.created},
                {"evicted_idle", c.flows.evicted_idle},
                {"table_full", c.flows.table_full}};
  j["classified"] = {{"rule", c.classified_rule},
                     {"signature", c.classified_signature},
                     {"no_match", c.classified_no_match},
                     {"reclassified_after_reload", c.reclassified}};
  j["scanner_errors"] = c.scanner_errors;
  j["shaper"] = {{"migration", ClassJson(c.migration)},
                 {"chaff", ClassJson(c.chaff)},
                 {"default", {{"packets", c.default_class.packets}, {"bytes", c.default_class.bytes}}},
                 {"discarded_at_exit", c.discarded_at_exit}};
  const ChaffCounters& ch = c.chaff_traffic;
  j["chaff"] = {{"enabled", c.chaff_enabled},
                {"generated_packets", ch.generated_packets},
                {"generated_bytes", ch.generated_bytes},
                {"sent_packets", c.chaff.sent_packets},
                {"sent_bytes", c.chaff.sent_bytes},
                {"absorbed_peer_packets", ch.absorbed_peer_packets},
                {"absorbed_answer_packets", ch.absorbed_answer_packets},
                {"absorbed_bytes", ch.absorbed_bytes},
                {"answered_packets", ch.answered_packets},
                {"answered_bytes", ch.answered_bytes},
                {"unverified_forwarded", ch.unverified_forwarded},
                {"no_mbuf", ch.no_mbuf},
                {"connections", ch.connections},
                {"syn_retransmits", ch.syn_retransmits},
                {"abandoned", ch.abandoned},
                {"policy_steps", ch.policy_steps},
                {"generating", ch.generating},
                {"class_rate_bytes_per_sec", ch.class_rate_bytes_per_sec}};
  j["rate_variation"] = {{"steps", c.rate_steps},
                         {"rate_bytes_per_sec", c.rate_bytes_per_sec},
                         {"min_applied_bytes_per_sec", c.rate_min_applied},
                         {"max_applied_bytes_per_sec", c.rate_max_applied},
                         {"window_cov", c.rate_window_cov},
                         {"sessions", c.rate_sessions},
                         {"session_min_rate_bytes_per_sec", c.rate_session_min_rate},
                         {"session_window", c.rate_session_window},
                         {"paused_steps", c.rate_paused_steps}};
  return j;
}

absl::Status WriteCountersJson(const std::string& path, const GatewayCounters& c,
                               const std::vector<PortCounters>& ports, uint64_t seed) {
  return WriteJsonFile(path, CountersToJson(c, ports, seed));
}

absl::Status WriteJsonFile(const std::string& path, const nlohmann::json& j) {
  // Written next to the target and renamed, so a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::UnavailableError(absl::StrCat("--counters_json: cannot write ", tmp));
    out << j.dump(2) << "\n";
    if (!out.flush()) return absl::DataLossError(absl::StrCat("--counters_json: write failed: ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("--counters_json: cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

std::vector<std::string> FormatCounters(const GatewayCounters& c,
                                        const std::vector<PortCounters>& ports) {
  std::vector<std::string> lines;
  lines.push_back(absl::StrFormat("final counters after %.3f s:", static_cast<double>(c.elapsed_ns) * 1e-9));
  for (const PortCounters& p : ports) {
    lines.push_back(absl::StrFormat(
        "  port %u (%s): rx %u pkts %u B, tx %u pkts %u B, missed %u, rx errors %u, tx errors %u, "
        "no mbuf %u",
        p.port, p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, p.rx_missed,
        p.rx_errors, p.tx_errors, p.rx_nombuf));
  }
  for (Direction d : {kInsideToOutside, kOutsideToInside}) {
    const DirectionCounters& x = c.direction[d];
    lines.push_back(absl::StrFormat(
        "  %s: rx %u pkts, forwarded %u, shaped %u, tx %u pkts %u B, tx refused %u (retried %u)",
        d == kInsideToOutside ? "inside->outside" : "outside->inside", x.rx_packets,
        x.forwarded_packets, x.shaped_packets, x.tx_packets, x.tx_bytes, x.tx_dropped,
        x.tx_retried));
  }
  uint64_t malformed = 0;
  for (size_t i = 0; i < c.parse_status.size(); ++i) {
    if (IsMalformed(static_cast<ParseStatus>(i))) malformed += c.parse_status[i];
  }
  lines.push_back(absl::StrFormat(
      "  parse: ok %u, not ip %u, malformed %u (dropped %u)",
      c.parse_status[static_cast<size_t>(ParseStatus::kOk)],
      c.parse_status[static_cast<size_t>(ParseStatus::kNotIp)], malformed, c.malformed_dropped));
  lines.push_back(absl::StrFormat(
      "  flows: active %u, created %u, evicted idle %u, table full %u; classified by rule %u, "
      "signature %u, no match %u; again after a reload %u",
      c.flows_active, c.flows.created, c.flows.evicted_idle, c.flows.table_full, c.classified_rule,
      c.classified_signature, c.classified_no_match, c.reclassified));
  for (const auto& [name, s] : {std::pair{"migration", c.migration}, std::pair{"chaff", c.chaff}}) {
    lines.push_back(absl::StrFormat(
        "  %s class: enqueued %u, sent %u pkts %u B, tail-dropped %u, max queueing %.1f ms",
        name, s.enqueued_packets, s.sent_packets, s.sent_bytes, s.dropped_packets,
        static_cast<double>(s.sojourn_ns_max) * 1e-6));
  }
  lines.push_back(absl::StrFormat(
      "  default class: %u pkts; discarded from queues at exit: %u", c.default_class.packets,
      c.discarded_at_exit));
  lines.push_back(absl::StrFormat(
      "  Algorithm 3: %u steps, rate now %.3f MB/s, applied [%.3f, %.3f] MB/s, window CoV %.3f",
      c.rate_steps, static_cast<double>(c.rate_bytes_per_sec) * 1e-6,
      static_cast<double>(c.rate_min_applied) * 1e-6,
      static_cast<double>(c.rate_max_applied) * 1e-6, c.rate_window_cov));
  if (c.rate_sessions > 0) {
    lines.push_back(absl::StrFormat(
        "  migration sessions: %u, the latest walking with minR %.3f MB/s, win %u; %u steps "
        "paused",
        c.rate_sessions, static_cast<double>(c.rate_session_min_rate) * 1e-6,
        c.rate_session_window, c.rate_paused_steps));
  }
  if (c.chaff_enabled) {
    const ChaffCounters& ch = c.chaff_traffic;
    lines.push_back(absl::StrFormat(
        "  chaff: generated %u pkts %u B (sent %u, %u connections, %u abandoned), absorbed %u "
        "from the peer + %u answers, answered %u, unverified in the pools (forwarded) %u, "
        "no mbuf %u; chaff class own rate %.3f MB/s plus what migration leaves unused%s",
        ch.generated_packets, ch.generated_bytes, c.chaff.sent_packets, ch.connections,
        ch.abandoned, ch.absorbed_peer_packets, ch.absorbed_answer_packets, ch.answered_packets,
        ch.unverified_forwarded, ch.no_mbuf,
        static_cast<double>(ch.class_rate_bytes_per_sec) * 1e-6,
        ch.generating ? "" : " (not generating)"));
  } else {
    lines.push_back("  chaff: off (no [chaff] key)");
  }
  return lines;
}

}  // namespace shroud
