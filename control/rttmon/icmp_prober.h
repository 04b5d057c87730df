// The RTT monitor's imperative shell, part 1: ICMP echo over IPv4 and IPv6.
//
// Sockets, in order of preference:
//   1. an unprivileged ICMP datagram ("ping") socket,
//      socket(AF_INET[6], SOCK_DGRAM, IPPROTO_ICMP[V6]): allowed when the
//      caller's group is in net.ipv4.ping_group_range (also for IPv6); the
//      kernel picks the echo identifier, computes the checksum and delivers
//      only the replies to this socket;
//   2. a raw socket (root or CAP_NET_RAW), with a kernel filter that passes
//      only echo replies and our own identifier check.
// Either way the socket is connect()ed to the target, so the kernel drops
// replies from anywhere else, and SO_TIMESTAMPNS gives each reply the kernel's
// receive time, so the RTT does not include this process's wake-up latency.
//
// Each request carries a per-prober random cookie and the 64-bit sequence
// number in its payload (the ICMP header's 16-bit sequence wraps after 655 s
// at 10 ms), so a reply is matched to exactly one probe.
#ifndef SHROUD_CONTROL_RTTMON_ICMP_PROBER_H_
#define SHROUD_CONTROL_RTTMON_ICMP_PROBER_H_

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shroud::rttmon {

// The interval range `shroud rttmon` accepts: the paper's 10 ms is the
// smallest (faster probing of someone's VM is a flood, and the kernel's
// timer and scheduling precision is a few per cent of 10 ms here), 10 s the
// largest (a slower probe cannot see a migration's sub-second downtime).
inline constexpr int64_t kMinIntervalNs = 10'000'000;
inline constexpr int64_t kMaxIntervalNs = 10'000'000'000;

struct ProberConfig {
  std::string target;      // host name or numeric address
  int family = AF_UNSPEC;  // AF_INET, AF_INET6 or AF_UNSPEC (the first address)
  int64_t interval_ns = 10'000'000;
  int64_t timeout_ns = 1'000'000'000;  // a probe unanswered this long is lost
  uint32_t payload_bytes = 56;         // as ping's default: 64-byte ICMP messages

  // InvalidArgument: interval outside [10 ms, 10 s], timeout outside
  // (0, 60 s], payload outside [16, 1400] bytes.
  absl::Status Validate() const;
};

// "10ms", "1s", "1.5s", "250us" -> nanoseconds. InvalidArgument naming the
// flag otherwise (bare numbers too: "10" could mean seconds or ms).
absl::StatusOr<int64_t> ParseDurationNs(std::string_view flag, std::string_view text);

// "10 ms", "1.5 s", "250 us".
std::string FormatDurationNs(int64_t ns);

// The clock the monitor runs on (CLOCK_MONOTONIC) and the kernel's
// timestamps' clock (CLOCK_REALTIME), in nanoseconds.
int64_t MonotonicNowNs();
int64_t RealtimeNowNs();

struct SentProbe {
  uint64_t seq = 0;
  int64_t sent_mono_ns = 0;  // just before sendto
  int64_t sent_real_ns = 0;  // same instant on CLOCK_REALTIME (for kernel timestamps)
  int error = 0;             // errno of a failed send (the probe then counts as lost)
};

struct EchoReply {
  uint64_t seq = 0;
  int64_t rx_real_ns = -1;  // kernel receive time (CLOCK_REALTIME), -1 without
  int64_t rx_mono_ns = 0;   // when this process read it
};

// The RTT of a probe's reply: kernel receive time minus send time when the
// kernel stamped it and the result is plausible (the wall clock did not jump
// in between), the user-space read time minus send time otherwise.
int64_t RttNs(const SentProbe& probe, const EchoReply& reply, bool* kernel_timestamp = nullptr);

class IcmpProber {
 public:
  // Resolves the target and opens the socket. NotFound ("cannot resolve
  // 'x': <getaddrinfo's message>"), PermissionDenied ("needs root or
  // CAP_NET_RAW, or add your group to net.ipv4.ping_group_range"),
  // InvalidArgument (bad config), Unavailable (other socket errors).
  static absl::StatusOr<std::unique_ptr<IcmpProber>> Open(const ProberConfig& config);
  ~IcmpProber();
  IcmpProber(const IcmpProber&) = delete;
  IcmpProber& operator=(const IcmpProber&) = delete;

  const ProberConfig& config() const { return config_; }
  const std::string& address() const { return address_; }  // numeric
  int family() const { return family_; }
  // "dgram" (unprivileged ping socket) or "raw".
  const char* socket_kind() const { return raw_ ? "raw" : "dgram"; }
  bool kernel_timestamps() const { return timestamps_; }
  int fd() const { return fd_; }

  // Sends echo request `seq` now.
  SentProbe Send(uint64_t seq);
  // Reads every datagram waiting on the socket without blocking; calls
  // on_reply for each echo reply to this prober. Returns the number of
  // replies, or an error the socket cannot recover from (asynchronous ICMP
  // errors such as host unreachable are counted in async_errors, not errors).
  absl::StatusOr<int> ReadReplies(const std::function<void(const EchoReply&)>& on_reply);
  uint64_t async_errors() const { return async_errors_; }
  uint64_t foreign_datagrams() const { return foreign_; }

 private:
  IcmpProber() = default;

  ProberConfig config_;
  std::string address_;
  int family_ = AF_UNSPEC;
  int fd_ = -1;
  bool raw_ = false;
  bool timestamps_ = false;
  uint16_t ident_ = 0;    // our identifier (raw sockets; the kernel's for dgram)
  uint64_t cookie_ = 0;   // random per prober
  uint64_t async_errors_ = 0;
  uint64_t foreign_ = 0;  // datagrams that were not replies to us
};

}  // namespace shroud::rttmon

#endif  // SHROUD_CONTROL_RTTMON_ICMP_PROBER_H_
