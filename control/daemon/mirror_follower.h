// Follows one dataplane instance's mirror file across dataplane restarts:
// attaches when the file appears, drains its rings into the ControlState,
// notices a clean stop, a dead dataplane (stale heartbeat) and a new run
// (the path names a new file), and re-attaches by itself. Logs (glog) what
// it does. Single-threaded: the daemon's main loop calls Step().
#ifndef SHROUD_CONTROL_DAEMON_MIRROR_FOLLOWER_H_
#define SHROUD_CONTROL_DAEMON_MIRROR_FOLLOWER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "control/daemon/control_state.h"
#include "control/mirror/mirror_reader.h"

namespace shroud::control {

struct MirrorFollowerOptions {
  size_t batch_records = 4096;  // records taken per Step
  // While waiting for the file: log once at once, then this often.
  uint64_t waiting_log_interval_ns = 30'000'000'000ull;
  // While the file is absent or unusable: try to open it this often.
  uint64_t open_retry_ns = 200'000'000ull;
};

class MirrorFollower {
 public:
  MirrorFollower(std::string path, ControlState* state, MirrorFollowerOptions options = {});

  struct StepResult {
    size_t records = 0;   // records applied
    bool full_batch = false;  // more are probably waiting: step again at once
  };
  // One round: attach if needed, take up to batch_records records, check the
  // dataplane's state. `now_unix_ns` is CLOCK_REALTIME (heartbeats are).
  StepResult Step(uint64_t now_unix_ns);

  // The attached run stopped cleanly and its rings are empty.
  bool StoppedAndDrained() const { return reader_ != nullptr && stopped_drained_; }
  // The attached run's dataplane is gone without stopping cleanly, and its
  // rings are empty.
  bool DiedAndDrained() const { return reader_ != nullptr && run_over_ && !stopped_drained_; }
  bool attached() const { return reader_ != nullptr; }
  const std::string& path() const { return path_; }

 private:
  void TryAttach(uint64_t now_unix_ns);
  void Detach(uint64_t now_unix_ns, const std::string& why);
  void PublishStatus(uint64_t now_unix_ns);
  void LogTransitions();

  std::string path_;
  ControlState* state_;
  MirrorFollowerOptions options_;
  std::unique_ptr<MirrorReader> reader_;
  std::vector<MirrorRecord> batch_;
  std::vector<VerdictTransition> transitions_;
  // Waiting for / failing to open the file.
  uint64_t next_open_ns_ = 0;
  uint64_t next_waiting_log_ns_ = 0;
  std::string last_open_error_;
  uint64_t rejected_run_id_ = 0;  // a run whose header we refused (logged once)
  // The attached run.
  bool run_over_ = false;        // stopped or dead: its flows were ended
  bool stopped_drained_ = false;
};

}  // namespace shroud::control

#endif  // SHROUD_CONTROL_DAEMON_MIRROR_FOLLOWER_H_
