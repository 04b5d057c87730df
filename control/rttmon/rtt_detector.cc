#include "control/rttmon/rtt_detector.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"

namespace shroud::rttmon {
namespace {

constexpr double kMadToSigma = 1.4826;  // sigma of a normal distribution = 1.4826 * MAD
// Recompute the median/MAD after this many new samples (and after every
// sample while the window is small): cheap at 100 samples/s, and a baseline
// eight samples old is as good as a fresh one.
constexpr uint32_t kRecomputeEvery = 8;

int64_t SecondsToNs(double s) { return static_cast<int64_t>(std::llround(s * 1e9)); }

}  // namespace

const char* RttStateName(RttState state) {
  switch (state) {
    case RttState::kGreen:
      return "green";
    case RttState::kYellow:
      return "yellow";
    case RttState::kRed:
      return "red";
  }
  return "?";
}

absl::Status RttDetectorConfig::Validate() const {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (interval_ns <= 0) return bad("interval must be positive");
  if (loss_timeout_ns <= 0) return bad("loss timeout must be positive");
  if (!(baseline_window_s > 0)) return bad("baseline_window_s must be positive");
  if (baseline_max_samples < 3) return bad("baseline_max_samples must be at least 3");
  if (warmup_samples < 1 || warmup_samples > baseline_max_samples) {
    return bad(absl::StrFormat("warmup_samples must be between 1 and baseline_max_samples (%d)",
                               baseline_max_samples));
  }
  if (!(peak_k >= 0) || !std::isfinite(peak_k)) return bad("peak_k must be >= 0");
  if (!(peak_floor_ms > 0) || !std::isfinite(peak_floor_ms)) {
    // A zero floor would make a perfectly constant RTT (MAD 0) yellow on a
    // 1 ns wobble.
    return bad("peak_floor_ms must be > 0");
  }
  if (peak_min_samples < 1) return bad("peak_min_samples must be at least 1");
  if (!(min_outage_ms > 0) || !std::isfinite(min_outage_ms)) return bad("min_outage_ms must be > 0");
  if (min_outage_ms * 1e6 < static_cast<double>(interval_ns)) {
    // Shorter than one probe interval: a single lost probe would be an outage.
    return bad(absl::StrFormat("min_outage_ms (%g) must be at least one probe interval (%g ms)",
                               min_outage_ms, interval_ns / 1e6));
  }
  if (!(outage_spread_k >= 0) || !std::isfinite(outage_spread_k)) {
    return bad("outage_spread_k must be >= 0");
  }
  if (!(preceding_peak_window_s > 0)) return bad("preceding_peak_window_s must be positive");
  if (!(red_peak_excess_ms >= 0) || !std::isfinite(red_peak_excess_ms)) {
    return bad("red_peak_excess_ms must be >= 0 (0 turns it off)");
  }
  if (!(quiet_s > 0) || !std::isfinite(quiet_s)) return bad("quiet_s must be > 0");
  if (!(rebaseline_after_s > quiet_s)) return bad("rebaseline_after_s must be larger than quiet_s");
  return absl::OkStatus();
}

absl::StatusOr<RttDetector> RttDetector::Create(const RttDetectorConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return RttDetector(config);
}

RttDetector::RttDetector(const RttDetectorConfig& config) : config_(config) {}

// --- inputs ---

void RttDetector::OnSent(uint64_t seq, int64_t sent_ns, uint64_t skipped_slots) {
  if (!started_) {
    started_ = true;
    next_seq_ = seq;
  }
  // A prober that could not send for a while (descheduled, suspended) leaves a
  // hole in the replies that says nothing about the target: that time does
  // not count as silence.
  if (skipped_slots > 0) {
    const int64_t stall = static_cast<int64_t>(skipped_slots) * config_.interval_ns;
    stall_ns_ += stall;
    if (open_) open_->stall_ms += stall / 1e6;
  }
  last_sent_ns_ = std::max(last_sent_ns_, sent_ns);
  sends_known_ = true;
  clock_ns_ = std::max(clock_ns_, sent_ns);
}

absl::Status RttDetector::OnReply(uint64_t seq, int64_t sent_ns, int64_t rtt_ns) {
  if (rtt_ns < 0) return absl::InvalidArgumentError("negative RTT");
  if (started_ && (seq < next_seq_ || pending_.contains(seq))) {
    return absl::InvalidArgumentError(absl::StrFormat("probe %d resolved twice", seq));
  }
  clock_ns_ = std::max(clock_ns_, sent_ns + rtt_ns);
  NoteArrival(sent_ns, sent_ns + rtt_ns);
  return Resolve(seq, Outcome{sent_ns, rtt_ns, false});
}

absl::Status RttDetector::OnLoss(uint64_t seq, int64_t sent_ns) {
  if (started_ && (seq < next_seq_ || pending_.contains(seq))) {
    return absl::InvalidArgumentError(absl::StrFormat("probe %d resolved twice", seq));
  }
  clock_ns_ = std::max(clock_ns_, sent_ns + config_.loss_timeout_ns);
  return Resolve(seq, Outcome{sent_ns, 0, true});
}

void RttDetector::OnLateReply(uint64_t /*seq*/, int64_t sent_ns, int64_t rtt_ns) {
  clock_ns_ = std::max(clock_ns_, sent_ns + rtt_ns);
  NoteArrival(sent_ns, sent_ns + rtt_ns);
  if (open_) ++open_->late;
}

void RttDetector::NoteArrival(int64_t sent_ns, int64_t recv_ns) {
  if (recv_ns > last_arrival_ns_) {
    if (last_arrival_ns_ >= 0) {
      // The silence this arrival ends. Arrivals, not sequence numbers: one
      // reply delayed by cross traffic while the next ones come back is no
      // outage; a target that answers nothing for a while is, whether it
      // dropped the probes or held them.
      const int64_t silence = SilenceNs(recv_ns);
      const double excess = static_cast<double>(silence - config_.interval_ns);
      if (silence_outage_ || excess >= OutageThresholdNs()) {
        if (!silence_outage_) Outage(last_replied_sent_ns_ + config_.interval_ns, clock_ns_);
        silence_outage_ = false;
        if (open_) open_->downtime_gap_ms += excess / 1e6;
        Anomaly(recv_ns);
      }
      if (open_) open_->max_silence_ms = std::max(open_->max_silence_ms, silence / 1e6);
      max_silence_ms_ = std::max(max_silence_ms_, silence / 1e6);
    }
    last_arrival_ns_ = recv_ns;
    stall_ns_ = 0;
  }
  last_replied_sent_ns_ = std::max(last_replied_sent_ns_, sent_ns);
}

int64_t RttDetector::SilenceNs(int64_t now_ns) const {
  int64_t silence = now_ns - last_arrival_ns_ - stall_ns_;
  if (sends_known_ && last_sent_ns_ >= 0) {
    // A stall in progress: nothing sent for more than an interval.
    silence -= std::max<int64_t>(0, now_ns - last_sent_ns_ - config_.interval_ns);
  }
  return silence;
}

void RttDetector::Advance(int64_t now_ns) {
  clock_ns_ = std::max(clock_ns_, now_ns);
  if (last_arrival_ns_ < 0) return;  // never answered: nothing to lose yet
  const int64_t silence = SilenceNs(now_ns);
  silence_ms_ = std::max<int64_t>(silence, 0) / 1e6;
  if (static_cast<double>(silence - config_.interval_ns) >= OutageThresholdNs()) {
    if (!silence_outage_) {
      silence_outage_ = true;
      // The first unanswered probe is the one after the latest answered one.
      Outage(last_replied_sent_ns_ + config_.interval_ns, now_ns);
    }
    if (open_) open_->max_silence_ms = std::max(open_->max_silence_ms, silence / 1e6);
  }
}

int64_t RttDetector::SilenceDeadlineNs() const {
  if (last_arrival_ns_ < 0 || silence_outage_) return INT64_MAX;
  // SilenceNs(t) = t - last_arrival - stall (while sends keep going), and
  // Advance turns red once that minus one interval reaches the threshold.
  return last_arrival_ns_ + stall_ns_ + config_.interval_ns +
         static_cast<int64_t>(std::ceil(OutageThresholdNs()));
}

void RttDetector::Finish(int64_t now_ns) {
  clock_ns_ = std::max(clock_ns_, now_ns);
  // Probes still in flight are neither lost nor answered: analyse what came
  // back around them.
  while (!pending_.empty()) {
    auto it = pending_.begin();
    next_seq_ = it->first;
    Process(it->first, it->second);
    pending_.erase(it);
    ++next_seq_;
  }
  if (open_) CloseEpisode(clock_ns_, /*open=*/true);
}

absl::Status RttDetector::Resolve(uint64_t seq, const Outcome& outcome) {
  if (!started_) {
    started_ = true;
    next_seq_ = seq;
  }
  pending_.emplace(seq, outcome);
  Drain();
  return absl::OkStatus();
}

void RttDetector::Drain() {
  while (!pending_.empty() && pending_.begin()->first == next_seq_) {
    auto it = pending_.begin();
    Process(it->first, it->second);
    pending_.erase(it);
    ++next_seq_;
  }
}

// --- sequence-order analysis ---

void RttDetector::Process(uint64_t seq, const Outcome& outcome) {
  if (outcome.lost) {
    ProcessLoss(seq, outcome);
  } else {
    ProcessReply(seq, outcome);
  }
}

void RttDetector::ProcessLoss(uint64_t /*seq*/, const Outcome& outcome) {
  if (++loss_run_ == 1) loss_run_start_ns_ = outcome.sent_ns;
  if (open_) ++open_->lost;
  // An outage needs a target that answered before (a target that never
  // answers is unreachable, not migrating).
  if (!loss_run_outage_ && have_prev_reply_ &&
      static_cast<double>(loss_run_) * static_cast<double>(config_.interval_ns) >=
          OutageThresholdNs()) {
    loss_run_outage_ = true;
    Outage(loss_run_start_ns_, clock_ns_);
  }
}

void RttDetector::ProcessReply(uint64_t /*seq*/, const Outcome& o) {
  const int64_t recv = o.sent_ns + o.rtt_ns;
  const double rtt_ms = o.rtt_ns / 1e6;
  if (open_) {
    ++open_->replies;
    open_->peak_rtt_ms = std::max(open_->peak_rtt_ms, rtt_ms);
  }

  if (loss_run_outage_) Anomaly(recv);
  loss_run_ = 0;
  loss_run_outage_ = false;

  // Peaks.
  if (BaselineReady() && rtt_ms > PeakThresholdMs()) {
    if (peak_run_++ == 0) {
      peak_run_start_ns_ = o.sent_ns;
      peak_run_max_ms_ = 0;
    }
    peak_run_max_ms_ = std::max(peak_run_max_ms_, rtt_ms);
    recent_peaks_.push_back({o.sent_ns, rtt_ms});
    while (recent_peaks_.size() > config_.baseline_max_samples) recent_peaks_.pop_front();
    if (peak_run_ >= config_.peak_min_samples) {
      const double excess_ms = rtt_ms - median_ms_;
      Peak(peak_run_start_ns_, clock_ns_);
      RttEvent& ev = *open_;
      ev.peak_samples += peak_run_ == config_.peak_min_samples ? peak_run_ : 1;
      ev.peak_rtt_ms = std::max(ev.peak_rtt_ms, peak_run_max_ms_);
      last_peak_start_ns_ = peak_run_start_ns_;
      last_peak_end_ns_ = recv;
      Anomaly(recv);
      if (config_.red_peak_excess_ms > 0 && excess_ms >= config_.red_peak_excess_ms) {
        ep_rtt_red_ = true;
        SetState(RttState::kRed, clock_ns_, "rtt");
      }
      if (recv - peak_run_start_ns_ >= SecondsToNs(config_.rebaseline_after_s)) {
        // A peak this long is the path's new normal (a route change, a
        // permanently loaded link): restart the baseline from it.
        window_.assign(recent_peaks_.begin(), recent_peaks_.end());
        RecomputeBaseline();
        peak_run_ = 0;
        recent_peaks_.clear();
        ep_level_shift_ = true;
        CloseEpisode(clock_ns_, /*open=*/false);
      }
    }
  } else {
    peak_run_ = 0;
    recent_peaks_.clear();
    AddBaselineSample(o.sent_ns, rtt_ms);
  }

  have_prev_reply_ = true;
  MaybeClose(o.sent_ns, clock_ns_);
}

// --- baseline ---

void RttDetector::AddBaselineSample(int64_t sent_ns, double rtt_ms) {
  window_.push_back({sent_ns, rtt_ms});
  ++baseline_total_;
  const int64_t max_age = SecondsToNs(config_.baseline_window_s);
  while (window_.size() > config_.baseline_max_samples ||
         (window_.size() > 1 && sent_ns - window_.front().sent_ns > max_age)) {
    window_.pop_front();
  }
  if (++since_recompute_ >= kRecomputeEvery || window_.size() < 2 * config_.warmup_samples) {
    RecomputeBaseline();
  }
}

void RttDetector::RecomputeBaseline() {
  since_recompute_ = 0;
  if (window_.empty()) return;
  std::vector<double> v;
  v.reserve(window_.size());
  for (const Sample& s : window_) v.push_back(s.rtt_ms);
  auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  median_ms_ = *mid;
  for (double& x : v) x = std::fabs(x - median_ms_);
  std::nth_element(v.begin(), mid, v.end());
  sigma_ms_ = kMadToSigma * *mid;
}

bool RttDetector::BaselineReady() const {
  return baseline_total_ >= config_.warmup_samples && !window_.empty();
}

double RttDetector::PeakThresholdMs() const {
  return median_ms_ + std::max(config_.peak_k * sigma_ms_, config_.peak_floor_ms);
}

double RttDetector::OutageThresholdNs() const {
  const double sigma = BaselineReady() ? sigma_ms_ : 0.0;
  return std::max(config_.min_outage_ms, config_.outage_spread_k * sigma) * 1e6;
}

// --- episodes and states ---

RttEvent& RttDetector::OpenEpisode(int64_t start_ns) {
  if (!open_) {
    open_.emplace();
    RttEvent& ev = *open_;
    ev.id = next_event_id_++;
    ev.start_ns = start_ns;
    ev.end_ns = start_ns;
    ev.baseline_ms = median_ms_;
    ev.spread_ms = sigma_ms_;
    ev.lost = loss_run_;  // an ongoing loss run is part of it
    ev.stall_ms = stall_ns_ / 1e6;  // stalls during the silence that opened it
    last_anomaly_ns_ = start_ns;
    ep_peak_ = ep_outage_ = ep_rtt_red_ = ep_level_shift_ = false;
  } else if (start_ns < open_->start_ns) {
    open_->start_ns = start_ns;
  }
  return *open_;
}

void RttDetector::Outage(int64_t outage_start_ns, int64_t now_ns) {
  RttEvent& ev = OpenEpisode(outage_start_ns);
  ep_outage_ = true;
  if (ev.outage_start_ns < 0 || outage_start_ns < ev.outage_start_ns) {
    ev.outage_start_ns = outage_start_ns;
  }
  bool signature = true;
  if (config_.require_preceding_peak) {
    // A peak that began before the outage and ended at most the window before it.
    signature = last_peak_start_ns_ >= 0 && last_peak_start_ns_ < outage_start_ns &&
                outage_start_ns - last_peak_end_ns_ <= SecondsToNs(config_.preceding_peak_window_s);
  }
  SetState(signature ? RttState::kRed : RttState::kYellow, now_ns, "outage");
}

void RttDetector::Peak(int64_t start_ns, int64_t now_ns) {
  RttEvent& ev = OpenEpisode(start_ns);
  // High RTTs of probes sent during an outage are the held probes coming
  // back, part of the outage, not a peak before it.
  if (ev.outage_start_ns < 0 || start_ns < ev.outage_start_ns) ep_peak_ = true;
  SetState(RttState::kYellow, now_ns, "peak");
}

void RttDetector::SetState(RttState to, int64_t time_ns, const std::string& reason) {
  if (to == state_ || (open_ && to < state_ && to != RttState::kGreen)) {
    return;  // an episode's light only gets worse until it closes
  }
  transitions_.push_back({time_ns, state_, to, open_ ? open_->id : 0, reason});
  state_ = to;
  if (open_) {
    if (to == RttState::kYellow && open_->yellow_ns < 0) open_->yellow_ns = time_ns;
    if (to == RttState::kRed && open_->red_ns < 0) open_->red_ns = time_ns;
    if (to != RttState::kGreen) open_->state = to;
  }
}

void RttDetector::Anomaly(int64_t end_ns) {
  last_anomaly_ns_ = std::max(last_anomaly_ns_, end_ns);
  if (open_) open_->end_ns = std::max(open_->end_ns, end_ns);
}

void RttDetector::MaybeClose(int64_t sent_ns, int64_t now_ns) {
  if (!open_ || silence_outage_ || loss_run_ > 0 || peak_run_ >= config_.peak_min_samples) return;
  if (sent_ns - last_anomaly_ns_ >= SecondsToNs(config_.quiet_s)) CloseEpisode(now_ns, false);
}

void RttDetector::CloseEpisode(int64_t now_ns, bool open) {
  RttEvent ev = *open_;
  ev.open = open;
  ev.downtime_ms = static_cast<double>(ev.lost) * static_cast<double>(config_.interval_ns) / 1e6;
  if (ep_level_shift_) {
    ev.reason = "level-shift";
  } else if (ep_rtt_red_ && !ep_outage_) {
    ev.reason = "rtt";
  } else if (ep_peak_ && ep_outage_) {
    ev.reason = "peak+outage";
  } else if (ep_outage_) {
    ev.reason = "outage";
  } else {
    ev.reason = "peak";
  }
  if (!open) {
    SetState(RttState::kGreen, now_ns, "quiet");
    open_.reset();
  }
  events_.push_back(std::move(ev));
  if (open) open_.reset();
}

// --- outputs ---

std::vector<RttTransition> RttDetector::TakeTransitions() { return std::exchange(transitions_, {}); }

std::vector<RttEvent> RttDetector::TakeEvents() { return std::exchange(events_, {}); }

RttDetectorStatus RttDetector::Status() const {
  RttDetectorStatus s;
  s.state = state_;
  s.baseline_ready = BaselineReady();
  s.baseline_ms = median_ms_;
  s.spread_ms = sigma_ms_;
  s.peak_threshold_ms = PeakThresholdMs();
  s.outage_threshold_ms = OutageThresholdNs() / 1e6;
  s.baseline_samples = static_cast<uint32_t>(window_.size());
  s.silence_ms = silence_ms_;
  s.max_silence_ms = max_silence_ms_;
  if (open_) {
    s.open_event = *open_;
    s.open_event->open = true;
    s.open_event->downtime_ms =
        static_cast<double>(open_->lost) * static_cast<double>(config_.interval_ns) / 1e6;
  }
  return s;
}

}  // namespace shroud::rttmon
