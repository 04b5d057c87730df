// Chaff recognition (issue 4, paper Section V-C): the pre-shared key of a
// gateway pair, the address/port pools chaff lives in, the keyed tags every
// chaff segment carries, and the verifier the receiving gateway runs so that
// it absorbs the peer's chaff and forwards everything else.
//
// Pure C++ over libsodium: no clocks, no globals, no DPDK types; verification
// neither allocates nor keeps state, so a replayed chaff segment verifies again
// and is absorbed again -- idempotent, and harmless.
//
// ---------------------------------------------------------------------------
// Roles. A chaff connection is a TCP connection from a *client* address in the
// sending gateway's local pool (its side of the WAN) to a *server* address in
// its remote pool (the peer's side), client port in pools.client_ports, server
// port in pools.server_ports (the two port ranges are disjoint, so a segment's
// ports say its direction). The sending gateway plays the client
// (ChaffGenerator); the peer gateway plays the server (ChaffResponder) and
// absorbs. The two gateways of a pair configure mirrored pools (A's local =
// B's remote and vice versa) and the same key.
//
// Wire format. Nothing is added to the packet: every bit an observer sees is a
// field a real Linux connection would carry, with the values a keyed PRF gives.
// Everything is derived from the 32-byte pair key K through BLAKE2b
// (crypto_kdf, context "shroudCh"): K_conn, K_inner, K_outer (SipHash keys),
// K_stream (ChaCha20 key).
//
//  1. Connection tag (every segment). Real stacks draw initial sequence
//     numbers from a keyed hash of the 4-tuple (RFC 6528), so a keyed hash is
//     exactly what an ISN is expected to look like. With
//       E = client addr | server addr | client port | server port  (12 bytes, BE)
//       SipHashx24(K_conn, 0x01 | E) = ISN_c | ISN_s | TSoff_c | TSoff_s  (4 x 32 bits, LE)
//       SipHash24 (K_conn, 0x02 | E) = IPID_c | IPID_s | unused           (16, 16, 32 bits)
//     the server never sends data (a bulk upload's receiver does not), so
//     its sequence number stays ISN_s + 1 and every segment of the connection
//     carries ISN_s: in the seq field from the server, in the ack field from
//     the client. Accepted (anything else is not chaff):
//       client SYN       flags == SYN,     ack == 0,           seq == ISN_c, no payload
//       client data      flags in {ACK, PSH|ACK, FIN|ACK, FIN|PSH|ACK},
//                        ack == ISN_s + 1, payload >= 8 bytes, segment tag (2)
//       client last ACK  flags == ACK,     ack == ISN_s + 2 (after the server's FIN), no payload
//       server SYN-ACK   flags == SYN|ACK, seq == ISN_s, ack == ISN_c + 1, no payload
//       server ACK/FIN   flags == ACK or FIN|ACK, seq == ISN_s + 1, no payload
//     Each ISN-bearing field has exactly one accepted value per kind, so any
//     bit flip in it fails. That is why the client completes the handshake
//     with its first data segment rather than a pure ACK (Linux does so when
//     a write is waiting for the connection): a pure ACK with ack ISN_s + 1
//     next to the last ACK's ISN_s + 2 would let one flipped bit turn one into
//     the other. The one flip that still yields a valid form is a server
//     segment's FIN bit (ACK <-> FIN|ACK): harmless, it only makes the
//     generator repeat a last ACK.
//     ACK-like segments have no room for a per-packet tag that an observer
//     would not notice (TSval must advance at 1 kHz, TSecr must echo the
//     peer, IP ID must count, a payload would turn a pure ACK into an
//     application message), so they are recognised by the connection tag
//     alone: 32 bits, the same for the whole connection and visible to anyone
//     who watches it. That is enough for what it guards: a forged ACK that
//     passes is dropped instead of delivered to a host that never had the
//     connection, and a real connection on a chaff 5-tuple (disjoint pools
//     rule that out) would lose a segment with probability 2^-32.
//  2. Segment tag (client segments with payload). The payload is
//       tag (8 bytes) | ChaCha20 keystream (K_stream, per-connection random
//                       nonce | 64-bit stream offset: never repeats)
//     so the whole payload is uniformly random, like a ciphertext, and
//       tag = SipHash24(K_outer, src addr | dst addr | src port | dst port |
//                                seq | ack | flags | SipHash24(K_inner, payload[8:]))
//     (addresses/ports as sent, all big-endian). The tag is compared with
//     sodium_memcmp (constant time). A flipped bit in any covered field or in
//     the tag, another key, a truncated frame, a non-TCP or fragmented packet
//     all fail; the segment is then ordinary traffic.
//  Not covered, on purpose, because middleboxes rewrite them and the tag only
//  has to recognise, not protect: TTL, TOS/ECN, IP ID, IP and TCP checksums,
//  window, TCP options (timestamps, MSS clamping), link-layer headers. NAT
//  between the gateways breaks recognition (addresses and ports are covered).
//
// Cost (measured on this project's dev VM, -O2): the prefilter
// (ChaffVerifier::MaybeChaff, pool membership of the flow key) rejects
// ordinary traffic in ~6 ns. Inside the pools, one 13-byte SipHash decides
// the connection tag (~70 ns for ordinary traffic there); only segments that
// carry the right ISN_s pay for the payload MAC (~0.75 us for a 1514-byte
// frame). The early exit depends only on the connection tag, which the wire
// shows anyway; the secret-dependent comparison (the segment tag) is
// constant time.
#ifndef SHROUD_DATAPLANE_CORE_CHAFF_TAG_H_
#define SHROUD_DATAPLANE_CORE_CHAFF_TAG_H_

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dataplane/core/classifier.h"
#include "dataplane/core/packet_parser.h"
#include "shroud/flow_key.h"

namespace shroud {

inline constexpr size_t kChaffKeyBytes = 32;
inline constexpr size_t kChaffSegmentTagBytes = 8;

inline constexpr uint8_t kTcpFlagFin = 0x01;
inline constexpr uint8_t kTcpFlagSyn = 0x02;
inline constexpr uint8_t kTcpFlagRst = 0x04;
inline constexpr uint8_t kTcpFlagPsh = 0x08;
inline constexpr uint8_t kTcpFlagAck = 0x10;

// ---------------------------------------------------------------------------
// Randomness helpers (any full-range 64-bit URBG: std::mt19937_64, absl::BitGen)

template <typename Urbg>
concept FullRange64Urbg = std::uniform_random_bit_generator<Urbg> && Urbg::min() == 0 &&
                          Urbg::max() == std::numeric_limits<uint64_t>::max();

// Uniform in [0, 1), the top 53 bits written out (as RateVariation does) so a
// seed gives the same draws with every standard library.
template <FullRange64Urbg Urbg>
double UniformUnit(Urbg& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Uniform in [0, n), unbiased (rejection of the short top slice); n > 0.
template <FullRange64Urbg Urbg>
uint64_t UniformBelow(Urbg& rng, uint64_t n) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                         std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

// ---------------------------------------------------------------------------
// Keys

// The pre-shared key of a gateway pair.
struct ChaffKey {
  std::array<uint8_t, kChaffKeyBytes> bytes{};
};

// 64 hex digits (e.g. `openssl rand -hex 32`). An all-zero key is refused: it
// is always a placeholder left in a config.
absl::StatusOr<ChaffKey> ParseChaffKeyHex(std::string_view hex);

// A fingerprint of the key for logs and status: 8 hex digits of a keyed-less
// BLAKE2b hash under its own context. One-way, 32 bits: it tells whether two
// gateways hold the same key without revealing anything usable about it.
std::string ChaffKeyId(const ChaffKey& key);

// The subkeys derived from a ChaffKey, one per purpose (see the wire format).
// Wiped on destruction. Immutable; share one per gateway among workers.
class ChaffKeys {
 public:
  explicit ChaffKeys(const ChaffKey& key);
  ChaffKeys(const ChaffKeys&) = default;
  ChaffKeys& operator=(const ChaffKeys&) = default;
  ~ChaffKeys();

  const std::array<uint8_t, 16>& connection() const { return connection_; }
  const std::array<uint8_t, 16>& inner() const { return inner_; }
  const std::array<uint8_t, 16>& outer() const { return outer_; }
  const std::array<uint8_t, 32>& stream() const { return stream_; }

 private:
  std::array<uint8_t, 16> connection_{};
  std::array<uint8_t, 16> inner_{};
  std::array<uint8_t, 16> outer_{};
  std::array<uint8_t, 32> stream_{};
};

// ---------------------------------------------------------------------------
// Connections

// A chaff connection's endpoints, client -> server. IPv4 addresses and ports
// in host byte order.
struct ChaffEndpoints {
  uint32_t client_addr = 0;
  uint32_t server_addr = 0;
  uint16_t client_port = 0;
  uint16_t server_port = 0;

  // The client -> server flow key (Reversed() is the server's direction).
  FlowKey ClientToServerKey() const;
  friend bool operator==(const ChaffEndpoints&, const ChaffEndpoints&) = default;
};

// What both gateways derive from the key and the endpoints alone.
struct ChaffConnectionSecrets {
  uint32_t client_isn = 0;
  uint32_t server_isn = 0;
  uint32_t client_ts_offset = 0;  // TSval = offset + milliseconds
  uint32_t server_ts_offset = 0;
  uint16_t client_ip_id = 0;      // first IP ID of the client's counter
  uint16_t server_ip_id = 0;      // first IP ID after the server's SYN-ACK
};

ChaffConnectionSecrets DeriveConnectionSecrets(const ChaffKeys& keys, const ChaffEndpoints& e);

// The header fields the segment tag covers, as they are on the wire.
struct ChaffTagFields {
  uint32_t src_addr = 0;
  uint32_t dst_addr = 0;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
};

// The segment tag of a payload whose bytes after the tag are `rest`.
std::array<uint8_t, kChaffSegmentTagBytes> ComputeSegmentTag(const ChaffKeys& keys,
                                                             const ChaffTagFields& fields,
                                                             std::span<const uint8_t> rest);

// ---------------------------------------------------------------------------
// Pools

struct ChaffPoolConfig {
  // IPv4 only (the generator crafts IPv4). Our side of the WAN: chaff we send
  // comes from here, chaff the peer sends goes to here.
  std::vector<IpPrefix> local_prefixes = {IpPrefix{4, {192, 0, 2, 0}, 24}};
  // The peer's side: where our chaff goes and the peer's comes from.
  std::vector<IpPrefix> remote_prefixes = {IpPrefix{4, {198, 51, 100, 0}, 24}};
  // Linux's default ephemeral range (net.ipv4.ip_local_port_range).
  PortRange client_ports{32768, 60999};
  // Bulk transfers on the Internet are mostly HTTPS.
  PortRange server_ports{443, 443};

  // OK, or InvalidArgument naming the field ("pools.local_prefixes[1]: ...").
  absl::Status Validate() const;
};

// Which way a segment inside the pools travels.
enum class ChaffDirection : uint8_t {
  kNone = 0,        // not in the pools: ordinary traffic
  kClientToServer,  // a client's segment (the peer's chaff, as the server sees it)
  kServerToClient,  // a server's reply (the peer answering our chaff)
};
std::string_view ChaffDirectionName(ChaffDirection d);

// The compiled pools: membership tests and draws, no allocation after
// construction.
class ChaffPools {
 public:
  ChaffPools() = default;  // empty: nothing is in the pools
  // `config` must pass Validate().
  explicit ChaffPools(const ChaffPoolConfig& config);

  // A segment arriving from the WAN (src remote, dst local), by its ports.
  ChaffDirection Inbound(const FlowKey& key) const;
  // A segment we would send (src local, dst remote).
  ChaffDirection Outbound(const FlowKey& key) const;

  bool InLocal(uint32_t addr) const { return Contains(local_, addr); }
  bool InRemote(uint32_t addr) const { return Contains(remote_, addr); }
  const PortRange& client_ports() const { return client_ports_; }
  const PortRange& server_ports() const { return server_ports_; }

  // Endpoints of a new connection of ours: a usable host address of the local
  // pool (network and broadcast addresses of prefixes up to /30 excluded),
  // weighted by size so every address is equally likely, likewise from the
  // remote pool, and uniform ports from the two ranges.
  template <FullRange64Urbg Urbg>
  ChaffEndpoints DrawOutbound(Urbg& rng) const {
    ChaffEndpoints e;
    e.client_addr = Draw(local_, local_hosts_, rng);
    e.server_addr = Draw(remote_, remote_hosts_, rng);
    e.client_port = DrawPort(client_ports_, rng);
    e.server_port = DrawPort(server_ports_, rng);
    return e;
  }

 private:
  struct Prefix {
    uint32_t network = 0;  // host byte order
    uint32_t mask = 0;
    uint32_t first_host = 0;  // offset of the first usable host
    uint64_t hosts = 0;       // usable hosts
  };
  static bool Contains(const std::vector<Prefix>& pool, uint32_t addr) {
    for (const Prefix& p : pool) {
      if ((addr & p.mask) == p.network) return true;
    }
    return false;
  }
  template <FullRange64Urbg Urbg>
  static uint32_t Draw(const std::vector<Prefix>& pool, uint64_t total, Urbg& rng) {
    uint64_t i = UniformBelow(rng, total);
    for (const Prefix& p : pool) {
      if (i < p.hosts) return p.network + p.first_host + static_cast<uint32_t>(i);
      i -= p.hosts;
    }
    return pool.back().network + pool.back().first_host;  // unreachable
  }
  template <FullRange64Urbg Urbg>
  static uint16_t DrawPort(const PortRange& r, Urbg& rng) {
    return static_cast<uint16_t>(r.first + UniformBelow(rng, uint64_t{r.last} - r.first + 1));
  }
  ChaffDirection Classify(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                          const std::vector<Prefix>& from, const std::vector<Prefix>& to) const;

  std::vector<Prefix> local_;
  std::vector<Prefix> remote_;
  uint64_t local_hosts_ = 0;
  uint64_t remote_hosts_ = 0;
  PortRange client_ports_{1, 0};  // empty until configured
  PortRange server_ports_{1, 0};
};

// ---------------------------------------------------------------------------
// Verification

// A segment that verified as chaff, with what the responder and the generator
// need to answer it (so they never parse it again).
struct ChaffSegment {
  ChaffDirection direction = ChaffDirection::kNone;
  ChaffEndpoints endpoints;  // client -> server, whichever way the segment went
  ChaffConnectionSecrets secrets;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint32_t payload_length = 0;
  bool has_timestamps = false;
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  uint16_t l3_offset = 0;  // the link-layer header is frame[0, l3_offset)

  bool syn() const { return (flags & kTcpFlagSyn) != 0; }
  bool fin() const { return (flags & kTcpFlagFin) != 0; }
};

// Verifies inbound frames against the pair's key and pools. Immutable after
// construction; one may be shared by all workers. No allocation, no state.
class ChaffVerifier {
 public:
  // `pools` must pass Validate().
  ChaffVerifier(const ChaffKeys& keys, const ChaffPoolConfig& pools)
      : keys_(keys), pools_(pools) {}

  // The prefilter: could a frame of this flow (as ParsePacket keyed it) be the
  // peer's chaff? False for everything outside the pools, at the cost of a few
  // compares; call Verify only when true.
  bool MaybeChaff(const FlowKey& key) const {
    return key.ip_version == 4 && key.protocol == kProtoTcp &&
           pools_.Inbound(key) != ChaffDirection::kNone;
  }

  // The chaff segment in the Ethernet `frame` (all of it captured), or nullopt
  // when it is ordinary traffic: outside the pools, malformed, truncated,
  // fragmented, not IPv4/TCP, or failing the connection or segment tag.
  std::optional<ChaffSegment> Verify(std::span<const uint8_t> frame) const;
  // The same with the caller's parse of `frame` (the worker has one already).
  std::optional<ChaffSegment> Verify(std::span<const uint8_t> frame,
                                     const ParsedPacket& parsed) const;

  const ChaffPools& pools() const { return pools_; }
  const ChaffKeys& keys() const { return keys_; }

 private:
  ChaffKeys keys_;
  ChaffPools pools_;
};

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_CHAFF_TAG_H_
