#include "control/rttmon/icmp_prober.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/icmp.h>
#include <netdb.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace shroud::rttmon {
namespace {

constexpr uint8_t kIcmp4EchoRequest = 8;
constexpr uint8_t kIcmp4EchoReply = 0;
constexpr uint8_t kIcmp6EchoRequest = 128;
constexpr uint8_t kIcmp6EchoReply = 129;
constexpr size_t kIcmpHeader = 8;
constexpr size_t kCookieAndSeq = 16;  // payload prefix: cookie, 64-bit sequence number

int64_t NowNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// RFC 1071 Internet checksum (raw IPv4 sockets; the kernel computes it for
// ping sockets and for ICMPv6).
uint16_t InternetChecksum(const uint8_t* data, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(data[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint64_t RandomU64() {
  uint64_t v = 0;
  // getrandom never fails for 8 bytes once the pool is initialised; a zero
  // cookie would still work (the sequence numbers and identifier match too).
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) v = 0x5348524f55445254ULL;
  return v;
}

std::string ErrnoText(int err) { return std::strerror(err); }

bool IsAsyncIcmpError(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
         err == ENETDOWN || err == EPROTO || err == EMSGSIZE;
}

}  // namespace

int64_t MonotonicNowNs() { return NowNs(CLOCK_MONOTONIC); }
int64_t RealtimeNowNs() { return NowNs(CLOCK_REALTIME); }

absl::Status ProberConfig::Validate() const {
  if (target.empty()) return absl::InvalidArgumentError("no target given");
  if (interval_ns < kMinIntervalNs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "interval %s is too small: the minimum is %s (the paper's ping interval; faster "
        "probing floods the target)",
        FormatDurationNs(interval_ns), FormatDurationNs(kMinIntervalNs)));
  }
  if (interval_ns > kMaxIntervalNs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "interval %s is too large: the maximum is %s (slower probes cannot see a migration's "
        "sub-second downtime)",
        FormatDurationNs(interval_ns), FormatDurationNs(kMaxIntervalNs)));
  }
  if (timeout_ns <= 0 || timeout_ns > 60'000'000'000) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "timeout %s is out of range: it must be above 0 and at most 60 s", FormatDurationNs(timeout_ns)));
  }
  if (payload_bytes < kCookieAndSeq || payload_bytes > 1400) {
    return absl::InvalidArgumentError(
        absl::StrFormat("payload of %d bytes is out of range [16, 1400]", payload_bytes));
  }
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) {
    return absl::InvalidArgumentError("address family must be IPv4, IPv6 or either");
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ParseDurationNs(std::string_view flag, std::string_view text) {
  std::string t(text);
  bool bare_number = !t.empty();
  for (char c : t) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.') bare_number = false;
  }
  if (bare_number && t != "0") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s=%s has no unit: write e.g. %sms or %ss", flag, t, t, t));
  }
  absl::Duration d;
  if (!absl::ParseDuration(t, &d) || d < absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s=%s is not a duration: write e.g. 10ms, 250us, 1s or 1.5s", flag, t));
  }
  return absl::ToInt64Nanoseconds(d);
}

std::string FormatDurationNs(int64_t ns) {
  if (ns != 0 && ns % 1'000'000'000 == 0) return absl::StrFormat("%d s", ns / 1'000'000'000);
  if (ns >= 1'000'000'000) return absl::StrFormat("%g s", ns / 1e9);
  if (ns >= 1'000'000) return absl::StrFormat("%g ms", ns / 1e6);
  return absl::StrFormat("%g us", ns / 1e3);
}

int64_t RttNs(const SentProbe& probe, const EchoReply& reply, bool* kernel_timestamp) {
  const int64_t user = reply.rx_mono_ns - probe.sent_mono_ns;
  if (reply.rx_real_ns >= 0) {
    const int64_t kernel = reply.rx_real_ns - probe.sent_real_ns;
    // The kernel stamped the reply before we read it, so its RTT cannot be
    // larger than the user-space one; if it is (or is negative), the wall
    // clock moved between send and receive. 1 ms of slack for NTP slewing.
    if (kernel >= 0 && kernel <= user + 1'000'000) {
      if (kernel_timestamp) *kernel_timestamp = true;
      return kernel;
    }
  }
  if (kernel_timestamp) *kernel_timestamp = false;
  return user;
}

absl::StatusOr<std::unique_ptr<IcmpProber>> IcmpProber::Open(const ProberConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  std::unique_ptr<IcmpProber> p(new IcmpProber());
  p->config_ = config;

  addrinfo hints{};
  hints.ai_family = config.family;
  hints.ai_socktype = SOCK_DGRAM;  // one entry per address, not one per socket type
  addrinfo* res = nullptr;
  int gai = getaddrinfo(config.target.c_str(), nullptr, &hints, &res);
  if (gai != 0) {
    std::string why = gai == EAI_SYSTEM ? ErrnoText(errno) : gai_strerror(gai);
    return absl::NotFoundError(absl::StrFormat("cannot resolve '%s': %s", config.target, why));
  }
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
      std::memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
      addr_len = ai->ai_addrlen;
      p->family_ = ai->ai_family;
      break;
    }
  }
  freeaddrinfo(res);
  if (addr_len == 0) {
    return absl::NotFoundError(
        absl::StrFormat("cannot resolve '%s': no IPv4 or IPv6 address", config.target));
  }
  char host[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&addr), addr_len, host, sizeof host, nullptr, 0,
                  NI_NUMERICHOST) == 0) {
    p->address_ = host;
  }

  const bool v4 = p->family_ == AF_INET;
  const int proto = v4 ? static_cast<int>(IPPROTO_ICMP) : static_cast<int>(IPPROTO_ICMPV6);
  const char* fam = v4 ? "IPv4" : "IPv6";
  p->fd_ = socket(p->family_, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  const int dgram_err = p->fd_ < 0 ? errno : 0;
  if (p->fd_ < 0) {
    if (dgram_err == EAFNOSUPPORT) {
      return absl::UnavailableError(absl::StrFormat("%s is not available on this host", fam));
    }
    // EACCES: our group is not in net.ipv4.ping_group_range; EPROTONOSUPPORT:
    // a kernel without ping sockets. Both: a raw socket may still be allowed.
    p->fd_ = socket(p->family_, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    if (p->fd_ < 0) {
      const int err = errno;
      if (err == EPERM || err == EACCES) {
        return absl::PermissionDeniedError(absl::StrFormat(
            "cannot open an ICMP socket for %s: needs root or CAP_NET_RAW, or add your group to "
            "net.ipv4.ping_group_range (e.g. sysctl -w net.ipv4.ping_group_range=\"0 %d\")",
            config.target, static_cast<int>(getgid())));
      }
      return absl::UnavailableError(absl::StrFormat("cannot open an ICMP socket: %s (ping socket: %s)",
                                                    ErrnoText(err), ErrnoText(dgram_err)));
    }
    p->raw_ = true;
  }

  if (p->raw_) {
    p->ident_ = static_cast<uint16_t>(RandomU64());
    // Raw ICMP sockets see every ICMP message the host receives: let the
    // kernel pass only echo replies.
    if (v4) {
      icmp_filter filter{};
      filter.data = ~(1U << kIcmp4EchoReply);
      setsockopt(p->fd_, SOL_RAW, ICMP_FILTER, &filter, sizeof filter);
    } else {
      icmp6_filter filter{};
      ICMP6_FILTER_SETBLOCKALL(&filter);
      ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &filter);
      setsockopt(p->fd_, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter);
    }
  }
  p->cookie_ = RandomU64();
  int on = 1;
  p->timestamps_ = setsockopt(p->fd_, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) == 0;
  // A migration's held replies come back as one burst; room for a few
  // seconds of them at 100 probes/s (the kernel caps it at rmem_max).
  int rcvbuf = 1 << 20;
  setsockopt(p->fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (connect(p->fd_, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    const int err = errno;
    close(p->fd_);
    p->fd_ = -1;
    return absl::UnavailableError(
        absl::StrFormat("cannot reach %s (%s): %s", config.target, p->address_, ErrnoText(err)));
  }
  return p;
}

IcmpProber::~IcmpProber() {
  if (fd_ >= 0) close(fd_);
}

SentProbe IcmpProber::Send(uint64_t seq) {
  std::vector<uint8_t> buf(kIcmpHeader + config_.payload_bytes);
  const bool v4 = family_ == AF_INET;
  buf[0] = v4 ? kIcmp4EchoRequest : kIcmp6EchoRequest;
  buf[1] = 0;
  // Identifier (the kernel replaces it on ping sockets) and 16-bit sequence,
  // both in network byte order.
  buf[4] = static_cast<uint8_t>(ident_ >> 8);
  buf[5] = static_cast<uint8_t>(ident_);
  buf[6] = static_cast<uint8_t>(seq >> 8);
  buf[7] = static_cast<uint8_t>(seq);
  std::memcpy(&buf[kIcmpHeader], &cookie_, sizeof cookie_);
  std::memcpy(&buf[kIcmpHeader + 8], &seq, sizeof seq);
  for (size_t i = kIcmpHeader + kCookieAndSeq; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i);
  if (raw_ && v4) {
    const uint16_t sum = InternetChecksum(buf.data(), buf.size());
    buf[2] = static_cast<uint8_t>(sum >> 8);
    buf[3] = static_cast<uint8_t>(sum);
  }
  SentProbe probe;
  probe.seq = seq;
  probe.sent_mono_ns = MonotonicNowNs();
  probe.sent_real_ns = RealtimeNowNs();
  ssize_t n;
  do {
    n = send(fd_, buf.data(), buf.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) probe.error = errno;
  return probe;
}

absl::StatusOr<int> IcmpProber::ReadReplies(const std::function<void(const EchoReply&)>& on_reply) {
  int replies = 0;
  alignas(8) uint8_t buf[2048];
  alignas(8) uint8_t control[256];
  const bool v4 = family_ == AF_INET;
  for (;;) {
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT);
    if (n < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (err == EINTR) continue;
      if (IsAsyncIcmpError(err)) {
        // A connected datagram socket reports an ICMP error (e.g. host
        // unreachable while the neighbour does not answer) once: the probe
        // it concerns simply times out as lost.
        ++async_errors_;
        continue;
      }
      return absl::UnavailableError(absl::StrFormat("reading ICMP replies: %s", ErrnoText(err)));
    }
    EchoReply reply;
    reply.rx_mono_ns = MonotonicNowNs();
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        timespec ts{};
        std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
        reply.rx_real_ns = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
      }
    }
    size_t off = 0;
    if (raw_ && v4) {
      // Raw IPv4 sockets deliver the IP header too.
      if (n < 20) {
        ++foreign_;
        continue;
      }
      off = static_cast<size_t>(buf[0] & 0x0f) * 4;
    }
    const size_t len = static_cast<size_t>(n);
    if (len < off + kIcmpHeader + kCookieAndSeq) {
      ++foreign_;
      continue;
    }
    const uint8_t* icmp = buf + off;
    const uint8_t want_type = v4 ? kIcmp4EchoReply : kIcmp6EchoReply;
    const uint16_t ident = static_cast<uint16_t>(icmp[4] << 8 | icmp[5]);
    const uint16_t seq16 = static_cast<uint16_t>(icmp[6] << 8 | icmp[7]);
    uint64_t cookie = 0, seq = 0;
    std::memcpy(&cookie, icmp + kIcmpHeader, sizeof cookie);
    std::memcpy(&seq, icmp + kIcmpHeader + 8, sizeof seq);
    if (icmp[0] != want_type || icmp[1] != 0 || (raw_ && ident != ident_) || cookie != cookie_ ||
        static_cast<uint16_t>(seq) != seq16) {
      ++foreign_;  // another program's ping, or not an echo reply
      continue;
    }
    reply.seq = seq;
    on_reply(reply);
    ++replies;
  }
  return replies;
}

}  // namespace shroud::rttmon
