#include "control/daemon/mirror_follower.h"

#include <glog/logging.h>

#include <utility>

#include "absl/strings/str_format.h"

namespace shroud::control {
namespace {

const char* ModeName(MirrorMode m) {
  switch (m) {
    case MirrorMode::kGateway: return "gateway";
    case MirrorMode::kTap: return "tap";
  }
  return "unknown";
}

}  // namespace

MirrorFollower::MirrorFollower(std::string path, ControlState* state, MirrorFollowerOptions options)
    : path_(std::move(path)), state_(state), options_(options) {
  batch_.reserve(options_.batch_records);
}

void MirrorFollower::LogTransitions() {
  for (const VerdictTransition& t : transitions_) LOG(INFO) << FormatTransition(t);
  transitions_.clear();
}

void MirrorFollower::TryAttach(uint64_t now_unix_ns) {
  if (now_unix_ns < next_open_ns_) return;
  next_open_ns_ = now_unix_ns + options_.open_retry_ns;
  absl::StatusOr<std::unique_ptr<MirrorReader>> reader = MirrorReader::Open(path_);
  if (!reader.ok()) {
    const bool absent = absl::IsNotFound(reader.status());
    std::string message = absent ? absl::StrFormat("waiting for shroud-dataplane at %s", path_)
                                 : std::string(reader.status().message());
    // Log at once when the situation changes, then every 30 s.
    if (message != last_open_error_ || now_unix_ns >= next_waiting_log_ns_) {
      if (absent) {
        LOG(INFO) << message;
      } else {
        LOG(ERROR) << "cannot attach: " << message;
      }
      last_open_error_ = message;
      next_waiting_log_ns_ = now_unix_ns + options_.waiting_log_interval_ns;
    }
    return;
  }
  const MirrorHeader& h = (*reader)->header();
  const uint64_t run_id = (*reader)->run_id();
  absl::StatusOr<std::shared_ptr<const RunContext>> run =
      state_->BeginRun(run_id, (*reader)->features(), now_unix_ns, &transitions_);
  LogTransitions();
  if (!run.ok()) {
    if (run_id != rejected_run_id_) {
      LOG(ERROR) << "not attaching to " << path_ << ": " << run.status().message();
      rejected_run_id_ = run_id;
    }
    // The file stays refused until the dataplane replaces it.
    next_open_ns_ = now_unix_ns + options_.waiting_log_interval_ns / 6;
    return;
  }
  reader_ = *std::move(reader);
  run_over_ = false;
  stopped_drained_ = false;
  last_open_error_.clear();
  state_->CountAttach();
  LOG(INFO) << absl::StrFormat(
      "attached to %s: run %016x of instance '%s', dataplane pid %d, %s mode, %d rings x %d "
      "records, windows %s, Pwin %d, delta %g, PCt %d",
      path_, run_id, std::string(h.instance, strnlen(h.instance, sizeof(h.instance))),
      h.dataplane_pid, ModeName(h.mode), h.ring_count, h.ring_capacity,
      (*run)->config.WindowsToString(), (*run)->config.pattern_window,
      (*run)->config.pattern_delta, (*run)->config.pattern_count_threshold);
  if (!(*run)->detector_error.empty()) {
    LOG(WARNING) << "the maxent model does not fit this run (" << (*run)->detector_error
                 << "): only the pattern attack runs; maxent is null";
  }
}

void MirrorFollower::Detach(uint64_t now_unix_ns, const std::string& why) {
  const uint64_t run_id = reader_->run_id();
  LOG(INFO) << absl::StrFormat("detached from run %016x: %s", run_id, why);
  state_->EndRun(run_id, now_unix_ns);
  reader_.reset();
  run_over_ = false;
  stopped_drained_ = false;
  next_open_ns_ = 0;  // look for the new file at once
  state_->SetMirrorStatus(MirrorStatus{});
}

void MirrorFollower::PublishStatus(uint64_t now_unix_ns) {
  MirrorStatus status;
  status.attached = true;
  status.dataplane_up = reader_->DataplaneAlive(now_unix_ns);
  status.run_id = reader_->run_id();
  for (const MirrorReader::RingStats& s : reader_->Stats()) {
    status.rings.push_back(RingMetrics{s.published, s.consumed, s.dropped});
  }
  state_->SetMirrorStatus(std::move(status));
}

MirrorFollower::StepResult MirrorFollower::Step(uint64_t now_unix_ns) {
  StepResult result;
  if (reader_ == nullptr) {
    TryAttach(now_unix_ns);
    if (reader_ == nullptr) return result;
  }
  batch_.clear();
  result.records = reader_->Poll(batch_, options_.batch_records);
  result.full_batch = result.records == options_.batch_records;
  if (result.records > 0) {
    state_->Apply(batch_, now_unix_ns, &transitions_);
    LogTransitions();
  }
  if (result.records == 0) {
    // Drained: only now may the run be declared over or left, so that its
    // last records (written before the stop or the rename) are not lost.
    if (reader_->Replaced()) {
      Detach(now_unix_ns, absl::StrFormat("%s now names another file (dataplane restarted) or "
                                          "nothing",
                                          path_));
      TryAttach(now_unix_ns);
      return result;
    }
    if (reader_->Stopped()) {
      // The stop may have landed between the poll and the check: one more
      // poll makes sure the rings are really empty.
      batch_.clear();
      if (reader_->Poll(batch_, options_.batch_records) > 0) {
        result.records = batch_.size();
        state_->Apply(batch_, now_unix_ns, &transitions_);
        LogTransitions();
      } else if (!run_over_) {
        LOG(INFO) << absl::StrFormat(
            "dataplane run %016x stopped cleanly; its flows are ended; waiting for a new run at %s",
            reader_->run_id(), path_);
        state_->EndRun(reader_->run_id(), now_unix_ns);
        run_over_ = true;
        stopped_drained_ = true;
      }
    } else if (!reader_->DataplaneAlive(now_unix_ns)) {
      if (!run_over_) {
        LOG(WARNING) << absl::StrFormat(
            "dataplane run %016x (pid %d) is gone (the process exited, or no heartbeat for %d "
            "s); its flows are ended; waiting for a new run at %s",
            reader_->run_id(), reader_->header().dataplane_pid,
            kMirrorHeartbeatStaleNs / 1'000'000'000, path_);
        state_->EndRun(reader_->run_id(), now_unix_ns);
        run_over_ = true;
      }
    } else if (run_over_) {
      LOG(INFO) << absl::StrFormat("dataplane run %016x is alive again", reader_->run_id());
      run_over_ = false;
    }
  }
  PublishStatus(now_unix_ns);
  return result;
}

}  // namespace shroud::control
