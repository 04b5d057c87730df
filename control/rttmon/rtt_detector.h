// The RTT migration monitor's functional core (issue 6): it turns a stream of
// ICMP echo outcomes into a traffic light and events. No I/O and no clock:
// every time is an argument (int64 nanoseconds on one monotonic clock), so the
// same code runs live (RttMonitor) and in simulated time (the unit tests).
//
// What it detects, after the monitor of König et al. as demonstrated in
// seeds/rtt-migration-monitor-demo.txt: "during online migration the virtual
// machine is not available for a short amount of time ... the round trip time
// of the ICMP is strongly increased when the virtual machine is not
// available". The stealth-migration paper measures that unavailability the
// same way: "sending frequent ping messages (every 10ms) ... the service
// downtime is then calculated as the number of lost ping messages, multiplied
// by the ping interval" (0.81-1.68 s on average for its migrations).
//
//   green   normal: RTTs within the baseline's threshold, replies flowing.
//   yellow  a suspicious RTT peak: at least `peak_min_samples` consecutive RTTs
//           above median + max(peak_k * sigma, peak_floor_ms) of the baseline
//           (e.g. a queue build-up while a migration's pre-copy saturates a
//           link, or any other congestion).
//   red     the migration signature: the target stopped answering for at least
//           the outage threshold (a migration's stop-and-copy downtime), seen
//           as either of
//             - silence: no reply arrived for that long (minus the one interval
//               that normally separates replies) while probes kept going out.
//               Checked live (Advance: the light turns red while the target
//               is still down, before any loss timeout) and when the silence
//               ends. Arrivals, not sequence numbers, so that one reply
//               delayed by cross traffic, while the next ones come back, is
//               no outage, and probes the target held and answered late
//               (the demo paper's "strongly increased" RTT) are one;
//             - a run of consecutive lost probes (lost x interval), for
//               outcomes replayed without arrival order.
//           Optionally the signature also requires an RTT peak shortly before
//           the outage (`require_preceding_peak`), or accepts a large enough RTT
//           peak alone (`red_peak_excess_ms`).
//
// One event per episode: it opens with the first anomalous probe, escalates
// yellow -> red when the signature matches, and closes (back to green) after
// `quiet_s` of probes with no anomaly. A queue build-up whose replies keep
// flowing never matches the signature: its replies keep arriving about one
// interval apart (each probe's RTT only a little larger than the previous
// one's), whereas an outage leaves a hole in the arrivals as long as itself.
//
// Baseline: median and MAD of a window of recent non-peak RTTs (at most
// `baseline_window_s` old and `baseline_max_samples` many). Median/MAD have a
// 50 % breakdown point, so loss bursts, outliers and the peak being judged do
// not drag the baseline (an EWMA of the mean does, and lags after every peak);
// at <= 100 probes/s a windowed selection (nth_element over <= 3000 samples,
// redone every few samples) costs microseconds. sigma = 1.4826 * MAD (the
// normal-consistent scale). Peak samples stay out of the window; if a peak
// lasts `rebaseline_after_s` it is a new normal (a route change), the episode
// closes and the baseline restarts from the recent samples.
#ifndef SHROUD_CONTROL_RTTMON_RTT_DETECTOR_H_
#define SHROUD_CONTROL_RTTMON_RTT_DETECTOR_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud::rttmon {

enum class RttState { kGreen = 0, kYellow = 1, kRed = 2 };
// "green", "yellow", "red".
const char* RttStateName(RttState state);

// Defaults and what they were chosen on (control/rttmon/README.md has the
// measurements):
//   - interval 10 ms: the stealth-migration paper's ping interval; its
//     downtime estimate (lost x interval) is exact to one interval.
//   - min_outage_ms 200: below the downtimes migrations show to a 10 ms ping
//     (the paper's means: 0.81-1.68 s at 4 and 8 MB/s) and below QEMU's
//     default downtime-limit (300 ms), so a stop-and-copy is red; and twice
//     the longest reply silence we measured without an outage: 15 ms in 5 min
//     from a kernel responder on an idle veth, 93 ms in 5 min from a
//     user-space responder (20 +- 10 ms) on this loaded 2-core machine, whose
//     own scheduling hiccups also made two RTT spikes to 83/149 ms. 100 ms
//     would sit right at that noise.
//   - peak_k 5, peak_floor_ms 10, peak_min_samples 3: the netns veth baseline
//     is ~0.06 ms with sigma ~0.004 ms, and single probes reach ~1.4 ms there
//     (p99 0.09 ms over 30 000 probes); 10 ms absolute and three probes in a
//     row keep those green, while a queue build-up of tens of ms is yellow.
//     For 20 +- 10 ms uniform jitter (sigma ~7.6 ms measured) the threshold
//     is ~58 ms, above any sample, so jitter alone stays green.
//   - outage_spread_k 6: with that sigma the outage threshold stays at
//     min_outage_ms (6 x 7.6 = 46 ms); on a path jittery enough for reply holes
//     of hundreds of ms (sigma > 33 ms) it grows with the jitter.
//   - quiet_s 2: a migration's pre-copy peaks and its stop-and-copy outage
//     follow each other within fractions of a second; two seconds of normal
//     probes end the episode without merging unrelated ones.
struct RttDetectorConfig {
  // Probe spacing (the prober's --interval). Converts lost probes into time.
  int64_t interval_ns = 10'000'000;
  // The prober's loss timeout; only used to date loss decisions (a loss of a
  // probe sent at s is decided at s + loss_timeout).
  int64_t loss_timeout_ns = 1'000'000'000;

  // --- baseline ---
  double baseline_window_s = 30.0;
  uint32_t baseline_max_samples = 3000;
  // Replies needed before peaks are judged (outages are judged from the first
  // reply on: an outage needs no baseline, only a target that answered).
  uint32_t warmup_samples = 20;

  // --- yellow: RTT peaks ---
  double peak_k = 5.0;          // threshold = median + max(peak_k * sigma, floor)
  double peak_floor_ms = 10.0;  // absolute floor of that margin
  uint32_t peak_min_samples = 3;

  // --- red: the migration signature ---
  double min_outage_ms = 200.0;
  // The outage threshold also scales with the path's jitter: on a path whose
  // RTTs spread by sigma, reply holes of a few sigma are ordinary.
  double outage_spread_k = 6.0;  // threshold = max(min_outage_ms, k * sigma)
  // Red only when an RTT peak (yellow) was seen within this window before the
  // outage started; otherwise such an outage is yellow ("outage" reason).
  bool require_preceding_peak = false;
  double preceding_peak_window_s = 30.0;
  // > 0: an RTT peak this far above the baseline is red by itself (for paths
  // where the migration's unavailability shows only as delayed answers and
  // the operator accepts the risk of calling a deep queue a migration).
  double red_peak_excess_ms = 0.0;

  // --- back to green ---
  double quiet_s = 2.0;
  // A peak lasting this long is a level shift, not a migration symptom.
  double rebaseline_after_s = 60.0;

  // InvalidArgument naming the field when a value is out of range.
  absl::Status Validate() const;
};

// One episode of non-green state.
struct RttEvent {
  uint64_t id = 0;            // 1, 2, ... in opening order
  RttState state = RttState::kYellow;  // the worst state reached
  // "peak", "outage", "peak+outage", "rtt" (red by red_peak_excess_ms),
  // "level-shift" (closed by rebaselining).
  std::string reason;
  int64_t start_ns = 0;       // send time of the first anomalous probe
  int64_t end_ns = 0;         // when the last anomaly ended (reply seen again)
  int64_t yellow_ns = -1;     // when the light turned yellow (-1: never)
  int64_t red_ns = -1;        // when it turned red (-1: never)
  int64_t outage_start_ns = -1;  // first unanswered probe of the first outage
  // Downtime as the paper defines it: probes lost during the episode x interval.
  double downtime_ms = 0;
  // From the reply gaps: sum over the outage silences of (time between two
  // reply arrivals - one interval). About downtime_ms when the probes were
  // dropped; also right when they were held and answered after the outage
  // (then downtime_ms undercounts: nothing was lost).
  double downtime_gap_ms = 0;
  double max_silence_ms = 0;  // longest time without any reply arriving
  // Time the prober could not send (skipped slots): probes that were never
  // sent are neither lost nor answered, so both downtime estimates can fall
  // short of the truth by up to this much.
  double stall_ms = 0;
  double peak_rtt_ms = 0;     // largest RTT in the episode
  double baseline_ms = 0;     // the baseline median when the episode opened
  double spread_ms = 0;       // its sigma (1.4826 * MAD)
  uint64_t lost = 0;          // probes lost during the episode
  uint64_t late = 0;          // of which answered after the loss timeout
  uint64_t replies = 0;       // replies during the episode
  uint64_t peak_samples = 0;  // replies above the peak threshold
  bool open = false;          // still going when reported (Finish)

  double duration_ms() const { return (end_ns - start_ns) / 1e6; }
};

struct RttTransition {
  int64_t time_ns = 0;
  RttState from = RttState::kGreen;
  RttState to = RttState::kGreen;
  uint64_t event_id = 0;
  std::string reason;
};

// What the detector currently believes (for status lines and the dashboard).
struct RttDetectorStatus {
  RttState state = RttState::kGreen;
  bool baseline_ready = false;
  double baseline_ms = 0;       // median of the window
  double spread_ms = 0;         // sigma = 1.4826 * MAD
  double peak_threshold_ms = 0; // RTTs above this are peak samples
  double outage_threshold_ms = 0;
  uint32_t baseline_samples = 0;
  double silence_ms = 0;        // time since the last reply arrived (at the last Advance)
  double max_silence_ms = 0;    // longest time between two reply arrivals so far
  std::optional<RttEvent> open_event;
};

class RttDetector {
 public:
  static absl::StatusOr<RttDetector> Create(const RttDetectorConfig& config);

  // Each probe is announced once when sent (in sequence order, optional but
  // needed for live silence detection), with the number of send slots the
  // prober skipped just before it (it could not run in time: that time is no
  // silence of the target), then resolved exactly once by OnReply
  // or OnLoss, in any order: outcomes are analysed in sequence order (a reorder
  // buffer holds them until the earlier probes are resolved). The first
  // sequence number seen starts the sequence; numbers must then be
  // consecutive. InvalidArgument for a sequence number resolved twice or
  // before the start.
  void OnSent(uint64_t seq, int64_t sent_ns, uint64_t skipped_slots = 0);
  absl::Status OnReply(uint64_t seq, int64_t sent_ns, int64_t rtt_ns);
  absl::Status OnLoss(uint64_t seq, int64_t sent_ns);
  // A reply to a probe already declared lost (after the loss timeout): the
  // target answered, so the silence ends, but the probe stays lost.
  void OnLateReply(uint64_t seq, int64_t sent_ns, int64_t rtt_ns);
  // The time is now_ns: notices ongoing silence (turns red during an outage).
  void Advance(int64_t now_ns);
  // When Advance would next turn red by silence if nothing arrives (so a
  // live caller can wake exactly then); INT64_MAX when it would not.
  int64_t SilenceDeadlineNs() const;
  // End of the run: analyses what is buffered (unresolved probes are skipped),
  // reports an unfinished episode with open = true.
  void Finish(int64_t now_ns);

  // Outputs since the last call.
  std::vector<RttTransition> TakeTransitions();
  std::vector<RttEvent> TakeEvents();

  RttState state() const { return state_; }
  RttDetectorStatus Status() const;
  const RttDetectorConfig& config() const { return config_; }

 private:
  struct Outcome {
    int64_t sent_ns = 0;
    int64_t rtt_ns = 0;
    bool lost = false;
  };
  struct Sample {
    int64_t sent_ns;
    double rtt_ms;
  };

  explicit RttDetector(const RttDetectorConfig& config);

  absl::Status Resolve(uint64_t seq, const Outcome& outcome);
  void Drain();
  void Process(uint64_t seq, const Outcome& outcome);
  void ProcessLoss(uint64_t seq, const Outcome& outcome);
  void ProcessReply(uint64_t seq, const Outcome& outcome);
  void NoteArrival(int64_t sent_ns, int64_t recv_ns);
  // Time without an arrival until now_ns, minus the prober's stalls.
  int64_t SilenceNs(int64_t now_ns) const;

  void AddBaselineSample(int64_t sent_ns, double rtt_ms);
  void RecomputeBaseline();
  bool BaselineReady() const;
  double PeakThresholdMs() const;
  double OutageThresholdNs() const;

  // Opens an episode if none is open (yellow at least).
  RttEvent& OpenEpisode(int64_t start_ns);
  // An outage starting at outage_start_ns was recognised at time now_ns.
  void Outage(int64_t outage_start_ns, int64_t now_ns);
  void Peak(int64_t start_ns, int64_t now_ns);
  void SetState(RttState to, int64_t time_ns, const std::string& reason);
  void MaybeClose(int64_t sent_ns, int64_t now_ns);
  void CloseEpisode(int64_t now_ns, bool open);
  void Anomaly(int64_t end_ns);

  RttDetectorConfig config_;
  RttState state_ = RttState::kGreen;
  int64_t clock_ns_ = 0;  // latest time seen (dates transitions)

  // Resolution and the reorder buffer.
  bool started_ = false;
  uint64_t next_seq_ = 0;  // next sequence number to analyse
  std::map<uint64_t, Outcome> pending_;

  // Live silence.
  int64_t last_sent_ns_ = -1;
  bool sends_known_ = false;         // OnSent is being called (live use)
  int64_t stall_ns_ = 0;             // prober stalls since the last arrival
  int64_t last_arrival_ns_ = -1;     // latest reply arrival (any probe)
  int64_t last_replied_sent_ns_ = -1;  // latest send time among answered probes
  bool silence_outage_ = false;      // an outage is ongoing by silence
  double silence_ms_ = 0;
  double max_silence_ms_ = 0;

  // Sequence-order analysis.
  bool have_prev_reply_ = false;
  uint32_t loss_run_ = 0;
  int64_t loss_run_start_ns_ = 0;
  bool loss_run_outage_ = false;
  uint32_t peak_run_ = 0;
  int64_t peak_run_start_ns_ = 0;
  double peak_run_max_ms_ = 0;
  // The latest qualifying peak (any episode), for require_preceding_peak.
  int64_t last_peak_start_ns_ = -1;
  int64_t last_peak_end_ns_ = -1;

  // Baseline.
  std::deque<Sample> window_;
  std::deque<Sample> recent_peaks_;  // for rebaselining after a level shift
  uint32_t since_recompute_ = 0;
  uint64_t baseline_total_ = 0;  // samples ever admitted
  double median_ms_ = 0;
  double sigma_ms_ = 0;

  // The open episode.
  std::optional<RttEvent> open_;
  int64_t last_anomaly_ns_ = 0;
  uint64_t next_event_id_ = 1;
  // What the open episode has seen (its reason).
  bool ep_peak_ = false;
  bool ep_outage_ = false;
  bool ep_rtt_red_ = false;
  bool ep_level_shift_ = false;

  std::vector<RttTransition> transitions_;
  std::vector<RttEvent> events_;
};

}  // namespace shroud::rttmon

#endif  // SHROUD_CONTROL_RTTMON_RTT_DETECTOR_H_
