// Chaff (issue 4, paper Section V-C): TCP connections of dummy data that the
// gateway injects next to migrations, rotating their addresses and ports at
// random intervals so they look like ordinary connections coming and going,
// absorbed by the peer gateway, which answers them with dummy ACKs.
//
// This header: the configuration, the rotation interval distributions, the
// client side (ChaffGenerator, stateful: one connection at a time) and the
// server side (ChaffResponder, stateless). Recognition and the wire format of
// the tags are in chaff_tag.h, the rate policy in chaff_policy.h.
//
// Pure C++: time (`now_ns`, any monotonic nanosecond clock) and randomness
// (any full-range 64-bit URBG) are arguments. Frames are written into a
// caller-provided buffer (an mbuf's data room); nothing on the per-packet path
// allocates.
//
// What a chaff connection looks like on the wire (a Linux 6.x sender with
// default sysctls uploading to a Linux receiver):
//
//   client                                    server (peer gateway)
//   SYN  [mss 1460,sackOK,TS,nop,wscale 7]  ->               74-byte frame
//                                           <- SYN-ACK [same options], IP ID 0
//   ACK 1448 bytes of "ciphertext"          ->               1514 bytes: the first data
//                                                            completes the handshake (as
//                                                            when a write waits for connect)
//   ACK|PSH? 1448 bytes                     ->  x N          PSH at every 64 KiB of the stream
//                                           <- ACK every 2nd segment (delayed ACK),
//                                              window growing as data arrives
//   FIN|PSH|ACK with the last 8..1448 bytes ->  at the rotation time
//                                           <- FIN|ACK
//   ACK                                     ->
//   SYN of the next connection, new 5-tuple ->  ...
//
// Every segment has valid IP and TCP checksums, TTL 64, DF, an IP ID counting
// up per connection from a random start (Linux's per-socket counter), a TSval
// advancing at 1 kHz from a per-connection random offset (Linux since 4.13),
// TSecr echoing the other side, seq advancing by the payload and the ack of
// what the other side sent. The random-looking values come from the keyed PRF
// of chaff_tag.h, which is what lets the peer recognise them.
//
// What the DPDK worker calls (gateway mode), one generator and one responder
// per worker, the verifier and keys shared:
//
//   // WAN rx, after ParsePacket:
//   if (verifier.MaybeChaff(p.key)) {
//     if (auto seg = verifier.Verify(frame, p)) {           // absorb: never forward
//       size_t n = seg->direction == ChaffDirection::kClientToServer
//                      ? (config.respond ? responder.Respond(*seg, frame, now, reply) : 0)
//                      : generator.OnServerSegment(*seg, now, reply);
//       drop the frame; if (n) transmit `reply` (n bytes) on the WAN port, unshaped
//       (ACKs are never queued behind data, see classifier.h); continue;
//     }
//   }                                                        // else: ordinary traffic
//   // every rate interval, next to Algorithm 3's step:
//   decision = policy.Update(now, {r (with borrowing) or measured migration, background});
//   shaper.SetRate(ShapedClass::kChaff, decision.class_rate_bytes_per_sec);
//   // supply, every loop: keep one or two frames queued, the shaper paces them
//   // (never more than the queue holds: a tail-dropped chaff frame is a hole
//   // in the sequence space that nobody retransmits):
//   while (decision.generate && shaper.counters(kChaff).backlog_packets < 2) {
//     n = generator.NextFrame(now, rng, mbuf room); if (n == 0) break;
//     shaper.Enqueue(ShapedClass::kChaff, mbuf, n, now);
//   }
//
// Cost: a 1514-byte data frame takes ~2 us to craft (ChaCha20 keystream, two
// SipHashes, the checksum): ~1 % of a core at 8 MB/s of chaff. An answer from
// the responder takes ~40 ns.
//
// Parallel chaff connections: one ChaffGenerator is one connection at a time;
// a worker that wants several runs several generators (each rotates on its
// own) and round-robins between them.
#ifndef SHROUD_DATAPLANE_CORE_CHAFF_H_
#define SHROUD_DATAPLANE_CORE_CHAFF_H_

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dataplane/core/chaff_policy.h"
#include "dataplane/core/chaff_tag.h"

namespace shroud {

// ---------------------------------------------------------------------------
// Configuration

enum class RotationDistribution : uint8_t { kExponential = 0, kUniform, kLogNormal, kPareto };
// "exponential", "uniform", "lognormal", "pareto".
std::string_view RotationDistributionName(RotationDistribution d);
absl::StatusOr<RotationDistribution> ParseRotationDistribution(std::string_view name);

// How long a chaff connection lives before the generator closes it and opens
// the next one on a new 5-tuple.
struct ChaffRotationConfig {
  // Exponential: connections that end independently of one another (a
  // Poisson stream of rotations), the memoryless default. Lognormal and
  // Pareto give the heavy-tailed lifetimes measured for real TCP flows.
  RotationDistribution distribution = RotationDistribution::kExponential;
  // The mean lifetime, whatever the distribution. 30 s: a migration of a few
  // GB at 4-8 MB/s takes minutes, so it sees several chaff connections come
  // and go.
  uint64_t mean_ns = 30'000'000'000;
  // uniform: on [mean (1 - spread), mean (1 + spread)], spread in (0, 1].
  double uniform_spread = 1.0;
  // lognormal: sigma of the underlying normal; mu follows from the mean.
  double lognormal_sigma = 1.0;
  // pareto: shape alpha > 1 (the mean is infinite at 1); x_m follows from the
  // mean. 2.5 keeps the variance finite too.
  double pareto_shape = 2.5;

  absl::Status Validate() const;  // "rotation.<field>: ..."
};

// Draws rotation intervals. Every draw is from uniforms built from the
// generator's top 53 bits, so a seed gives the same intervals everywhere.
class RotationIntervalSampler {
 public:
  // `config` must pass Validate().
  explicit RotationIntervalSampler(const ChaffRotationConfig& config);

  // One interval in ns (rounded; capped at ~31 years so a Pareto tail cannot
  // overflow the clock arithmetic).
  template <FullRange64Urbg Urbg>
  uint64_t Draw(Urbg& rng) const {
    double x = 0;
    switch (distribution_) {
      case RotationDistribution::kExponential:
        x = -mean_ * std::log1p(-UniformUnit(rng));
        break;
      case RotationDistribution::kUniform:
        x = lo_ + (hi_ - lo_) * UniformUnit(rng);
        break;
      case RotationDistribution::kLogNormal: {
        // Box-Muller; 1 - u is in (0, 1], so the log is finite.
        const double u1 = UniformUnit(rng);
        const double u2 = UniformUnit(rng);
        const double z = std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(2.0 * std::numbers::pi * u2);
        x = std::exp(mu_ + sigma_ * z);
        break;
      }
      case RotationDistribution::kPareto:
        x = scale_ * std::pow(1.0 - UniformUnit(rng), -1.0 / shape_);
        break;
    }
    if (!(x < kMaxIntervalNs)) return static_cast<uint64_t>(kMaxIntervalNs);
    return static_cast<uint64_t>(std::llround(x));
  }

  double mean_ns() const { return mean_; }

 private:
  static constexpr double kMaxIntervalNs = 1e18;
  RotationDistribution distribution_;
  double mean_;
  double lo_ = 0, hi_ = 0;        // uniform
  double mu_ = 0, sigma_ = 0;     // lognormal
  double scale_ = 0, shape_ = 0;  // pareto
};

// The TCP/IP personality of chaff connections: Linux 6.x defaults.
struct ChaffTcpConfig {
  // Link layer of the frames the generator sends towards the WAN (the
  // responder answers with the MACs of the frame it answers, swapped). The
  // worker sets these from the port and its next hop.
  std::array<uint8_t, 6> src_mac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
  std::array<uint8_t, 6> dst_mac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
  uint8_t ttl = 64;  // net.ipv4.ip_default_ttl
  // MSS = mtu - 40 (advertised in SYNs); data segments carry mtu - 52 bytes
  // (timestamps take 12): 1448 in a 1514-byte frame at 1500.
  uint16_t mtu = 1500;
  uint8_t window_scale = 7;       // tcp_rmem max 6 MiB
  uint16_t syn_window = 64240;    // Linux SYN: 44 * 1460
  uint16_t client_window = 502;   // scaled: 64256 bytes, a sender's receive window never grows
  uint16_t synack_window = 65160; // Linux SYN-ACK: 45 * 1448
  // The server's advertised window grows with the data received (receive
  // autotuning) from initial to max (tcp_rmem max / 2 with the default
  // tcp_adv_win_scale).
  uint32_t server_window_initial_bytes = 65152;
  uint32_t server_window_max_bytes = 3'145'728;
  // The server ACKs every ack_every-th full segment (Linux delayed ACK: 2)
  // and every FIN.
  uint32_t ack_every = 2;
  // Wait for the peer's SYN-ACK before sending data, as TCP does. Without a
  // responding peer nothing but SYNs would ever leave, so a deployment where
  // the peer does not answer sets false: the generator then acts as if the
  // SYN-ACK came after assumed_rtt_ns.
  bool wait_for_syn_ack = true;
  uint64_t assumed_rtt_ns = 20'000'000;
  // SYN retransmission as Linux does it: after 1 s, doubling; after the last
  // retry times out too the connection is abandoned for a new 5-tuple.
  uint64_t syn_timeout_ns = 1'000'000'000;
  uint32_t syn_retries = 2;
  // PSH marks the end of each application write / TSO burst; a sender
  // writing 64 KiB at a time shows one about every 45 segments.
  uint32_t push_every_bytes = 65536;

  uint16_t mss() const { return static_cast<uint16_t>(mtu - 40); }
  uint32_t max_payload() const { return mtu - 52u; }
  // The Ethernet frame of a full data segment (no VLAN tag, no FCS).
  uint32_t data_frame_bytes() const { return 14u + mtu; }

  absl::Status Validate() const;  // "tcp.<field>: ..."
};

struct ChaffConfig {
  ChaffPolicyConfig policy;
  ChaffPoolConfig pools;
  ChaffRotationConfig rotation;
  ChaffTcpConfig tcp;
  // Answer the peer's chaff with SYN-ACKs and ACKs (ChaffResponder), so
  // chaff connections are bidirectional on the WAN. The peer generator's
  // wait_for_syn_ack must be false when this is.
  bool respond = true;

  absl::Status Validate() const;
};

// The largest frame the generator or responder writes for `tcp` (a reply
// copies the answered frame's link header: up to two VLAN tags).
inline size_t MaxChaffFrameBytes(const ChaffTcpConfig& tcp) { return tcp.data_frame_bytes() + 8; }

// ---------------------------------------------------------------------------
// Client side

enum class ChaffConnectionState : uint8_t {
  kClosed = 0,   // no connection: the next NextFrame opens one
  kSynSent,      // SYN out (or about to be), waiting for the SYN-ACK
  kEstablished,  // sending data until the rotation time
};
std::string_view ChaffConnectionStateName(ChaffConnectionState s);

struct ChaffGeneratorCounters {
  uint64_t connections = 0;      // connections opened (first SYNs)
  uint64_t syn_retransmits = 0;
  uint64_t abandoned = 0;        // no SYN-ACK after all retries
  uint64_t frames = 0;           // all frames written, replies included
  uint64_t wire_bytes = 0;
  uint64_t payload_bytes = 0;
  uint64_t replies = 0;          // first data / last ACKs written by OnServerSegment
};

class ChaffGenerator {
 public:
  // Validates `config`.
  static absl::StatusOr<ChaffGenerator> Create(const ChaffConfig& config, const ChaffKeys& keys);

  // Writes into `out` the frame this chaff stream sends next at `now_ns` and
  // returns its length, or 0 when nothing is due (handshake pending) or `out`
  // is shorter than the frame (size buffers with MaxChaffFrameBytes). The
  // sequence: a SYN opening a connection on a new 5-tuple drawn from the
  // pools with a lifetime drawn from the rotation distribution, full-size
  // data segments for as long as it is asked once the handshake is done (the
  // first one answers the SYN-ACK, see OnServerSegment), a FIN on the last
  // data once the lifetime is over, then the next connection's SYN.
  template <FullRange64Urbg Urbg>
  size_t NextFrame(uint64_t now_ns, Urbg& rng, std::span<uint8_t> out) {
    if (out.size() < MaxChaffFrameBytes(tcp_)) return 0;
    if (NeedsNewConnection(now_ns)) {
      const ChaffEndpoints endpoints = pools_.DrawOutbound(rng);
      const uint64_t lifetime = sampler_.Draw(rng);
      const uint32_t stream_nonce = static_cast<uint32_t>(rng());
      // The last write of a stream is any size.
      const uint64_t sizes = tcp_.max_payload() - kChaffSegmentTagBytes + 1;
      const auto last_payload =
          static_cast<uint32_t>(kChaffSegmentTagBytes + UniformBelow(rng, sizes));
      Open(now_ns, endpoints, lifetime, stream_nonce, last_payload);
    }
    return WriteNext(now_ns, out);
  }

  // A verified server -> client segment (the peer answering our chaff): the
  // SYN-ACK of the current connection establishes it and is answered at once
  // with the first data segment (or the FIN segment when the lifetime is
  // already over); a FIN of the connection closed last is answered with the
  // last ACK; any of them updates TSecr. Returns the reply's length in `out`,
  // 0 for none. A replayed segment changes nothing (an ACK answering a
  // replayed FIN is what TCP in TIME-WAIT sends too).
  size_t OnServerSegment(const ChaffSegment& seg, uint64_t now_ns, std::span<uint8_t> out);

  // When NextFrame will next have something to send (<= now: at once).
  uint64_t next_frame_ns() const;

  ChaffConnectionState state() const { return state_; }
  // The current (or, when closed, the last) connection.
  const ChaffEndpoints& endpoints() const { return current_.endpoints; }
  FlowKey flow() const { return current_.endpoints.ClientToServerKey(); }
  uint64_t opened_ns() const { return current_.opened_ns; }
  uint64_t rotate_at_ns() const { return current_.rotate_at_ns; }
  const ChaffGeneratorCounters& counters() const { return counters_; }
  const ChaffConfig& config() const { return config_; }

 private:
  struct Connection {
    ChaffEndpoints endpoints;
    ChaffConnectionSecrets secrets;
    uint32_t stream_nonce = 0;
    uint64_t sent = 0;  // payload bytes after the SYN
    uint16_t ip_id = 0; // the next IP ID
    bool have_ts_recent = false;
    uint32_t ts_recent = 0;  // the server's last TSval
    uint64_t opened_ns = 0;
    uint64_t rotate_at_ns = 0;
    uint32_t last_payload = 0;  // the FIN segment's payload
  };

  ChaffGenerator(const ChaffConfig& config, const ChaffKeys& keys);
  bool NeedsNewConnection(uint64_t now_ns);
  void Open(uint64_t now_ns, const ChaffEndpoints& endpoints, uint64_t lifetime_ns,
            uint32_t stream_nonce, uint32_t last_payload);
  size_t WriteNext(uint64_t now_ns, std::span<uint8_t> out);
  // Established: a full data segment, or the FIN segment once the lifetime
  // is over (which closes the connection).
  size_t WriteEstablished(uint64_t now_ns, std::span<uint8_t> out);
  size_t WriteSyn(uint64_t now_ns, std::span<uint8_t> out);
  size_t WriteAck(Connection& c, uint32_t seq, uint32_t ack, uint64_t now_ns,
                  std::span<uint8_t> out);
  size_t WriteData(uint32_t payload, bool fin, uint64_t now_ns, std::span<uint8_t> out);
  uint32_t TsEcr(const Connection& c, uint64_t now_ns) const;
  size_t Count(size_t frame_bytes, uint32_t payload);

  ChaffConfig config_;
  ChaffTcpConfig tcp_;
  ChaffKeys keys_;
  ChaffPools pools_;
  RotationIntervalSampler sampler_;
  std::array<uint8_t, 14> l2_{};

  ChaffConnectionState state_ = ChaffConnectionState::kClosed;
  Connection current_;
  bool syn_pending_ = false;      // Open() done, SYN not yet written
  uint64_t syn_sent_ns_ = 0;      // first SYN
  uint64_t syn_deadline_ns_ = 0;  // retransmit / give up
  uint32_t syn_retries_done_ = 0;
  Connection closing_;            // the last connection we sent a FIN on
  bool has_closing_ = false;
  ChaffGeneratorCounters counters_;
};

// ---------------------------------------------------------------------------
// Server side

// The peer's dummy server: answers each verified client -> server chaff
// segment from the segment alone (no per-connection state, so it survives
// restarts, asymmetric worker assignment and replays): SYN -> SYN-ACK,
// every ack_every-th data segment -> ACK (ack = seq + len), FIN -> FIN|ACK.
// Addresses and ports swapped; the link header is the answered frame's with
// the MACs swapped. Pure ACKs from the client get no answer.
class ChaffResponder {
 public:
  // `tcp` must pass Validate().
  explicit ChaffResponder(const ChaffTcpConfig& tcp) : tcp_(tcp) {}

  // The reply's length in `out`, 0 when the segment gets none (or `out` is
  // too short: size it with MaxChaffFrameBytes). `frame` is the frame `seg`
  // was verified from.
  size_t Respond(const ChaffSegment& seg, std::span<const uint8_t> frame, uint64_t now_ns,
                 std::span<uint8_t> out) const;

 private:
  ChaffTcpConfig tcp_;
};

// ---------------------------------------------------------------------------
// Which of several parallel chaff connections sends next.
//
// A host's parallel transfers do not interleave packet by packet: each sends
// a flight (about a congestion window) and then another one gets the link.
// Round robin would give every chaff flow the same smooth share of the packet
// stream, and Algorithm 2 (bytes per window of stream packets) flags exactly
// such flows: measured on the light background capture bg-light-s1 through
// shroud-dataplane, three round-robin connections scored maxent 0.75-0.96. So
// one connection keeps the link for a flight whose length is drawn from an
// exponential distribution (mean `mean_flight_packets`), then a ready
// connection is picked at random.
inline constexpr double kDefaultChaffFlightPackets = 64.0;

class ChaffFlightScheduler {
 public:
  explicit ChaffFlightScheduler(double mean_flight_packets = kDefaultChaffFlightPackets)
      : mean_(mean_flight_packets < 1.0 ? 1.0 : mean_flight_packets) {}

  // The connection (index < count) to send the next frame, or `count` when
  // none is ready. `ready(i)` says whether connection i has a frame to send.
  template <typename Ready, typename Urbg>
  size_t Next(size_t count, Ready&& ready, Urbg& rng) {
    if (left_ > 0 && current_ < count && ready(current_)) {
      --left_;
      return current_;
    }
    size_t n_ready = 0;
    for (size_t i = 0; i < count; ++i) n_ready += ready(i) ? 1 : 0;
    if (n_ready == 0) return count;
    size_t k = static_cast<size_t>(rng() % n_ready);
    for (size_t i = 0; i < count; ++i) {
      if (!ready(i)) continue;
      if (k-- == 0) {
        current_ = i;
        break;
      }
    }
    // Exponential flight length, at least this one packet.
    const double u = (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
    left_ = static_cast<uint64_t>(-mean_ * std::log(u));
    return current_;
  }

 private:
  double mean_;
  size_t current_ = 0;
  uint64_t left_ = 0;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_CHAFF_H_
