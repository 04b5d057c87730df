#include "dataplane/core/chaff.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace shroud {
namespace {

constexpr size_t kEthernetHeaderBytes = 14;
constexpr size_t kIpv4HeaderBytes = 20;
constexpr size_t kTcpBaseHeaderBytes = 20;
// MSS(4) SACK_PERM(2) TS(10) NOP(1) WS(3): Linux's SYN and SYN-ACK layout.
constexpr size_t kSynOptionBytes = 20;
// NOP NOP TS(10): every other segment.
constexpr size_t kTsOptionBytes = 12;
constexpr uint16_t kIpv4DontFragment = 0x4000;
constexpr uint64_t kNsPerMs = 1'000'000;

void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void PutBe32(uint8_t* p, uint32_t v) {
  PutBe16(p, static_cast<uint16_t>(v >> 16));
  PutBe16(p + 2, static_cast<uint16_t>(v));
}
void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// RFC 1071 sum of `n` bytes starting at an even offset of the summed message,
// not folded. 32-bit big-endian words may be added instead of 16-bit ones:
// 2^16 = 1 mod 0xFFFF, so the folded result is the same.
uint64_t OnesComplementAdd(uint64_t sum, const uint8_t* p, size_t n) {
  while (n >= 4) {
    sum += static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
           static_cast<uint32_t>(p[2]) << 8 | p[3];
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    sum += static_cast<uint32_t>(p[0]) << 8 | p[1];
    p += 2;
    n -= 2;
  }
  if (n == 1) sum += static_cast<uint32_t>(p[0]) << 8;
  return sum;
}

uint16_t OnesComplementFinish(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint32_t TsClock(uint32_t offset, uint64_t now_ns) {
  return offset + static_cast<uint32_t>(now_ns / kNsPerMs);
}

// One TCP segment's headers: the fields the segment tag covers, and the rest.
struct SegmentSpec : ChaffTagFields {
  uint16_t window = 0;
  uint16_t ip_id = 0;
  uint8_t ttl = 64;
  bool syn_options = false;  // else NOP NOP TS
  uint16_t mss = 0;
  uint8_t window_scale = 0;
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  uint32_t payload_length = 0;
};

// A client segment of a connection at `now_ns`: its 4-tuple, next IP ID, TTL
// and TSval; the caller sets the rest.
SegmentSpec ClientSegment(const ChaffTcpConfig& tcp, const ChaffEndpoints& e,
                          const ChaffConnectionSecrets& k, uint16_t ip_id, uint64_t now_ns) {
  SegmentSpec s;
  s.src_addr = e.client_addr;
  s.dst_addr = e.server_addr;
  s.src_port = e.client_port;
  s.dst_port = e.server_port;
  s.ip_id = ip_id;
  s.ttl = tcp.ttl;
  s.tsval = TsClock(k.client_ts_offset, now_ns);
  return s;
}

size_t TcpHeaderBytes(const SegmentSpec& s) {
  return kTcpBaseHeaderBytes + (s.syn_options ? kSynOptionBytes : kTsOptionBytes);
}

// A segment's frame in `out`: `l2` copied (its EtherType says IPv4), then the
// IPv4 header (DF, checksummed) and the TCP header (checksum left 0). The
// payload is the caller's to fill before FinishTcpChecksum. Returns the frame
// length, 0 when it does not fit.
size_t WriteHeaders(std::span<const uint8_t> l2, const SegmentSpec& s, std::span<uint8_t> out) {
  const size_t tcp_bytes = TcpHeaderBytes(s);
  const size_t ip_total = kIpv4HeaderBytes + tcp_bytes + s.payload_length;
  const size_t frame = l2.size() + ip_total;
  if (frame > out.size() || ip_total > 0xFFFF) return 0;
  uint8_t* p = out.data();
  std::memcpy(p, l2.data(), l2.size());
  uint8_t* ip = p + l2.size();
  ip[0] = 0x45;
  ip[1] = 0;  // DSCP 0, not ECN-capable (Linux's default without tcp_ecn)
  PutBe16(ip + 2, static_cast<uint16_t>(ip_total));
  PutBe16(ip + 4, s.ip_id);
  PutBe16(ip + 6, kIpv4DontFragment);
  ip[8] = s.ttl;
  ip[9] = kProtoTcp;
  PutBe16(ip + 10, 0);
  PutBe32(ip + 12, s.src_addr);
  PutBe32(ip + 16, s.dst_addr);
  PutBe16(ip + 10, OnesComplementFinish(OnesComplementAdd(0, ip, kIpv4HeaderBytes)));

  uint8_t* tcp = ip + kIpv4HeaderBytes;
  PutBe16(tcp, s.src_port);
  PutBe16(tcp + 2, s.dst_port);
  PutBe32(tcp + 4, s.seq);
  PutBe32(tcp + 8, s.ack);
  tcp[12] = static_cast<uint8_t>((tcp_bytes / 4) << 4);
  tcp[13] = s.flags;
  PutBe16(tcp + 14, s.window);
  PutBe16(tcp + 16, 0);  // checksum
  PutBe16(tcp + 18, 0);  // urgent pointer
  uint8_t* o = tcp + kTcpBaseHeaderBytes;
  if (s.syn_options) {
    o[0] = 2;  // MSS
    o[1] = 4;
    PutBe16(o + 2, s.mss);
    o[4] = 4;  // SACK permitted
    o[5] = 2;
    o += 6;
  } else {
    o[0] = 1;  // NOP
    o[1] = 1;
    o += 2;
  }
  o[0] = 8;  // timestamps
  o[1] = 10;
  PutBe32(o + 2, s.tsval);
  PutBe32(o + 6, s.tsecr);
  if (s.syn_options) {
    o[10] = 1;  // NOP
    o[11] = 3;  // window scale
    o[12] = 3;
    o[13] = s.window_scale;
  }
  return frame;
}

// The TCP checksum of the segment whose IPv4 header starts at `ip`.
void FinishTcpChecksum(uint8_t* ip, const SegmentSpec& s) {
  const size_t tcp_length = TcpHeaderBytes(s) + s.payload_length;
  uint8_t* tcp = ip + kIpv4HeaderBytes;
  uint64_t sum = OnesComplementAdd(0, ip + 12, 8);  // source and destination address
  sum += kProtoTcp;
  sum += tcp_length;
  sum = OnesComplementAdd(sum, tcp, tcp_length);
  PutBe16(tcp + 16, OnesComplementFinish(sum));
}

// A segment without payload (every checksum included).
size_t WriteBareSegment(std::span<const uint8_t> l2, const SegmentSpec& s, std::span<uint8_t> out) {
  const size_t n = WriteHeaders(l2, s, out);
  if (n != 0) FinishTcpChecksum(out.data() + l2.size(), s);
  return n;
}

absl::Status FieldError(std::string_view field, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(message)));
}

}  // namespace

// ---------------------------------------------------------------------------
// Configuration

std::string_view RotationDistributionName(RotationDistribution d) {
  switch (d) {
    case RotationDistribution::kExponential: return "exponential";
    case RotationDistribution::kUniform: return "uniform";
    case RotationDistribution::kLogNormal: return "lognormal";
    case RotationDistribution::kPareto: return "pareto";
  }
  return "?";
}

absl::StatusOr<RotationDistribution> ParseRotationDistribution(std::string_view name) {
  for (RotationDistribution d : {RotationDistribution::kExponential, RotationDistribution::kUniform,
                                 RotationDistribution::kLogNormal, RotationDistribution::kPareto}) {
    if (name == RotationDistributionName(d)) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown rotation distribution '", std::string(name),
                   "' (expected exponential, uniform, lognormal or pareto)"));
}

absl::Status ChaffRotationConfig::Validate() const {
  if (mean_ns == 0 || mean_ns > 1'000'000'000'000'000ull) {
    return FieldError("rotation.mean_ns",
                      absl::StrCat("must be in (0, 1e15] (11.6 days), got ", mean_ns));
  }
  if (!(uniform_spread > 0.0 && uniform_spread <= 1.0)) {
    return FieldError("rotation.uniform_spread",
                      absl::StrCat("must be in (0, 1], got ", uniform_spread));
  }
  if (!(lognormal_sigma > 0.0 && lognormal_sigma <= 5.0)) {
    return FieldError("rotation.lognormal_sigma",
                      absl::StrCat("must be in (0, 5], got ", lognormal_sigma));
  }
  if (!(pareto_shape > 1.0 && pareto_shape <= 100.0)) {
    return FieldError("rotation.pareto_shape",
                      absl::StrCat("must be in (1, 100] (the mean is infinite at 1), got ",
                                   pareto_shape));
  }
  return absl::OkStatus();
}

RotationIntervalSampler::RotationIntervalSampler(const ChaffRotationConfig& c)
    : distribution_(c.distribution), mean_(static_cast<double>(c.mean_ns)) {
  lo_ = mean_ * (1.0 - c.uniform_spread);
  hi_ = mean_ * (1.0 + c.uniform_spread);
  sigma_ = c.lognormal_sigma;
  mu_ = std::log(mean_) - sigma_ * sigma_ / 2.0;  // E[X] = exp(mu + sigma^2 / 2)
  shape_ = c.pareto_shape;
  scale_ = mean_ * (shape_ - 1.0) / shape_;  // E[X] = x_m alpha / (alpha - 1)
}

absl::Status ChaffTcpConfig::Validate() const {
  if (mtu < 576 || mtu > 9000) {
    return FieldError("tcp.mtu", absl::StrCat("must be in [576, 9000], got ", mtu));
  }
  if (ttl == 0) return FieldError("tcp.ttl", "must be > 0");
  if (window_scale > 14) {
    return FieldError("tcp.window_scale",
                      absl::StrCat("must be <= 14 (RFC 7323), got ", window_scale));
  }
  if (syn_window == 0 || client_window == 0 || synack_window == 0) {
    return FieldError(syn_window == 0      ? "tcp.syn_window"
                      : client_window == 0 ? "tcp.client_window"
                                           : "tcp.synack_window",
                      "must be > 0 (a zero window stalls the connection)");
  }
  if (server_window_initial_bytes == 0 ||
      server_window_initial_bytes > server_window_max_bytes) {
    return FieldError("tcp.server_window_initial_bytes",
                      absl::StrCat("must be in [1, server_window_max_bytes (",
                                   server_window_max_bytes, ")], got ",
                                   server_window_initial_bytes));
  }
  if ((uint64_t{server_window_max_bytes} >> window_scale) > 0xFFFF) {
    return FieldError("tcp.server_window_max_bytes",
                      absl::StrCat("does not fit the 16-bit window at window_scale ",
                                   window_scale, ": at most ", uint64_t{0xFFFF} << window_scale));
  }
  if (ack_every == 0 || ack_every > 64) {
    return FieldError("tcp.ack_every", absl::StrCat("must be in [1, 64], got ", ack_every));
  }
  if (!wait_for_syn_ack && assumed_rtt_ns == 0) {
    return FieldError("tcp.assumed_rtt_ns", "must be > 0 when not waiting for the SYN-ACK");
  }
  if (syn_timeout_ns == 0) return FieldError("tcp.syn_timeout_ns", "must be > 0");
  if (syn_retries > 10) {
    return FieldError("tcp.syn_retries", absl::StrCat("must be <= 10, got ", syn_retries));
  }
  if (push_every_bytes == 0) return FieldError("tcp.push_every_bytes", "must be > 0");
  return absl::OkStatus();
}

absl::Status ChaffConfig::Validate() const {
  if (absl::Status s = policy.Validate(); !s.ok()) return s;
  if (absl::Status s = pools.Validate(); !s.ok()) return s;
  if (absl::Status s = rotation.Validate(); !s.ok()) return s;
  if (absl::Status s = tcp.Validate(); !s.ok()) return s;
  return absl::OkStatus();
}

std::string_view ChaffConnectionStateName(ChaffConnectionState s) {
  switch (s) {
    case ChaffConnectionState::kClosed: return "closed";
    case ChaffConnectionState::kSynSent: return "syn_sent";
    case ChaffConnectionState::kEstablished: return "established";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Client side

absl::StatusOr<ChaffGenerator> ChaffGenerator::Create(const ChaffConfig& config,
                                                      const ChaffKeys& keys) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return ChaffGenerator(config, keys);
}

ChaffGenerator::ChaffGenerator(const ChaffConfig& config, const ChaffKeys& keys)
    : config_(config),
      tcp_(config.tcp),
      keys_(keys),
      pools_(config.pools),
      sampler_(config.rotation) {
  std::memcpy(l2_.data(), tcp_.dst_mac.data(), 6);
  std::memcpy(l2_.data() + 6, tcp_.src_mac.data(), 6);
  l2_[12] = 0x08;  // IPv4
  l2_[13] = 0x00;
}

bool ChaffGenerator::NeedsNewConnection(uint64_t now_ns) {
  if (state_ == ChaffConnectionState::kClosed) return true;
  if (state_ == ChaffConnectionState::kSynSent && tcp_.wait_for_syn_ack && !syn_pending_ &&
      syn_retries_done_ >= tcp_.syn_retries && now_ns >= syn_deadline_ns_) {
    ++counters_.abandoned;
    return true;
  }
  return false;
}

void ChaffGenerator::Open(uint64_t now_ns, const ChaffEndpoints& endpoints, uint64_t lifetime_ns,
                          uint32_t stream_nonce, uint32_t last_payload) {
  current_ = Connection{};
  current_.endpoints = endpoints;
  current_.secrets = DeriveConnectionSecrets(keys_, endpoints);
  current_.stream_nonce = stream_nonce;
  current_.ip_id = current_.secrets.client_ip_id;
  current_.opened_ns = now_ns;
  current_.rotate_at_ns = now_ns + lifetime_ns;
  current_.last_payload = last_payload;
  state_ = ChaffConnectionState::kSynSent;
  syn_pending_ = true;
  syn_retries_done_ = 0;
  ++counters_.connections;
}

uint64_t ChaffGenerator::next_frame_ns() const {
  if (state_ != ChaffConnectionState::kSynSent || syn_pending_) return 0;
  if (!tcp_.wait_for_syn_ack) return syn_sent_ns_ + tcp_.assumed_rtt_ns;
  return syn_deadline_ns_;
}

size_t ChaffGenerator::Count(size_t frame_bytes, uint32_t payload) {
  if (frame_bytes != 0) {
    ++counters_.frames;
    counters_.wire_bytes += frame_bytes;
    counters_.payload_bytes += payload;
  }
  return frame_bytes;
}

uint32_t ChaffGenerator::TsEcr(const Connection& c, uint64_t now_ns) const {
  if (c.have_ts_recent) return c.ts_recent;
  // No answer seen (a silent peer): what the server's clock said half an RTT
  // ago, i.e. a TSecr a real answer would have carried.
  const uint64_t half_rtt = tcp_.assumed_rtt_ns / 2;
  return TsClock(c.secrets.server_ts_offset, now_ns > half_rtt ? now_ns - half_rtt : 0);
}

size_t ChaffGenerator::WriteSyn(uint64_t now_ns, std::span<uint8_t> out) {
  Connection& c = current_;
  SegmentSpec s = ClientSegment(tcp_, c.endpoints, c.secrets, c.ip_id, now_ns);
  s.seq = c.secrets.client_isn;
  s.ack = 0;
  s.flags = kTcpFlagSyn;
  s.window = tcp_.syn_window;
  s.syn_options = true;
  s.mss = tcp_.mss();
  s.window_scale = tcp_.window_scale;
  s.tsecr = 0;
  const size_t n = WriteBareSegment(l2_, s, out);
  if (n != 0) ++c.ip_id;
  return Count(n, 0);
}

size_t ChaffGenerator::WriteAck(Connection& c, uint32_t seq, uint32_t ack, uint64_t now_ns,
                                std::span<uint8_t> out) {
  // Only the last ACK (after the server's FIN) is a pure ACK; see chaff_tag.h.
  SegmentSpec s = ClientSegment(tcp_, c.endpoints, c.secrets, c.ip_id, now_ns);
  s.seq = seq;
  s.ack = ack;
  s.flags = kTcpFlagAck;
  s.window = tcp_.client_window;
  s.tsecr = TsEcr(c, now_ns);
  const size_t n = WriteBareSegment(l2_, s, out);
  if (n != 0) ++c.ip_id;
  return Count(n, 0);
}

size_t ChaffGenerator::WriteData(uint32_t payload, bool fin, uint64_t now_ns,
                                 std::span<uint8_t> out) {
  Connection& c = current_;
  SegmentSpec s = ClientSegment(tcp_, c.endpoints, c.secrets, c.ip_id, now_ns);
  s.seq = c.secrets.client_isn + 1 + static_cast<uint32_t>(c.sent);
  s.ack = c.secrets.server_isn + 1;
  const bool push =
      fin || (c.sent + payload) / tcp_.push_every_bytes != c.sent / tcp_.push_every_bytes;
  s.flags = static_cast<uint8_t>(kTcpFlagAck | (push ? kTcpFlagPsh : 0) | (fin ? kTcpFlagFin : 0));
  s.window = tcp_.client_window;
  s.tsecr = TsEcr(c, now_ns);
  s.payload_length = payload;
  const size_t n = WriteHeaders(l2_, s, out);
  if (n == 0) return 0;
  uint8_t* ip = out.data() + l2_.size();
  uint8_t* data = ip + kIpv4HeaderBytes + TcpHeaderBytes(s);
  // Keystream under a nonce that never repeats within the connection (the
  // 64-bit stream offset) nor, short of a 2^-32 chance, across connections
  // (the random per-connection nonce), so no two payloads share bytes.
  uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
  static_assert(sizeof(nonce) == 12);
  PutLe32(nonce, c.stream_nonce);
  PutLe64(nonce + 4, c.sent);
  uint8_t* rest = data + kChaffSegmentTagBytes;
  const size_t rest_len = payload - kChaffSegmentTagBytes;
  crypto_stream_chacha20_ietf(rest, rest_len, nonce, keys_.stream().data());
  const auto tag = ComputeSegmentTag(keys_, s, std::span<const uint8_t>(rest, rest_len));
  std::memcpy(data, tag.data(), tag.size());
  FinishTcpChecksum(ip, s);
  ++c.ip_id;
  c.sent += payload;
  return Count(n, payload);
}

size_t ChaffGenerator::WriteNext(uint64_t now_ns, std::span<uint8_t> out) {
  switch (state_) {
    case ChaffConnectionState::kClosed:
      return 0;
    case ChaffConnectionState::kSynSent: {
      if (syn_pending_) {
        const size_t n = WriteSyn(now_ns, out);
        if (n != 0) {
          syn_pending_ = false;
          syn_sent_ns_ = now_ns;
          syn_deadline_ns_ = now_ns + tcp_.syn_timeout_ns;
        }
        return n;
      }
      if (!tcp_.wait_for_syn_ack) {
        if (now_ns < syn_sent_ns_ + tcp_.assumed_rtt_ns) return 0;
        state_ = ChaffConnectionState::kEstablished;
        const size_t n = WriteEstablished(now_ns, out);
        if (n == 0) state_ = ChaffConnectionState::kSynSent;
        return n;
      }
      if (now_ns < syn_deadline_ns_ || syn_retries_done_ >= tcp_.syn_retries) return 0;
      // Retransmit with exponential backoff (1 s, 2 s, 4 s, ...).
      const size_t n = WriteSyn(now_ns, out);
      if (n != 0) {
        ++syn_retries_done_;
        ++counters_.syn_retransmits;
        syn_deadline_ns_ = now_ns + (tcp_.syn_timeout_ns << syn_retries_done_);
      }
      return n;
    }
    case ChaffConnectionState::kEstablished:
      return WriteEstablished(now_ns, out);
  }
  return 0;
}

size_t ChaffGenerator::WriteEstablished(uint64_t now_ns, std::span<uint8_t> out) {
  if (now_ns < current_.rotate_at_ns) return WriteData(tcp_.max_payload(), false, now_ns, out);
  const size_t n = WriteData(current_.last_payload, true, now_ns, out);
  if (n != 0) {
    closing_ = current_;
    has_closing_ = true;
    state_ = ChaffConnectionState::kClosed;
  }
  return n;
}

size_t ChaffGenerator::OnServerSegment(const ChaffSegment& seg, uint64_t now_ns,
                                       std::span<uint8_t> out) {
  if (seg.direction != ChaffDirection::kServerToClient) return 0;
  auto note_ts = [&seg](Connection& c) {
    if (seg.has_timestamps) {
      c.ts_recent = seg.tsval;
      c.have_ts_recent = true;
    }
  };
  if (state_ != ChaffConnectionState::kClosed && seg.endpoints == current_.endpoints) {
    note_ts(current_);
    if (state_ == ChaffConnectionState::kSynSent && !syn_pending_ &&
        seg.flags == (kTcpFlagSyn | kTcpFlagAck)) {
      if (out.size() < MaxChaffFrameBytes(tcp_)) return 0;
      state_ = ChaffConnectionState::kEstablished;
      const size_t n = WriteEstablished(now_ns, out);
      if (n != 0) ++counters_.replies;
      return n;
    }
    return 0;
  }
  if (has_closing_ && seg.endpoints == closing_.endpoints) {
    note_ts(closing_);
    if (!seg.fin() || out.size() < MaxChaffFrameBytes(tcp_)) return 0;
    // Our FIN took one sequence number after the data, theirs one after ISN_s + 1.
    const uint32_t after_our_fin =
        closing_.secrets.client_isn + 1 + static_cast<uint32_t>(closing_.sent) + 1;
    const size_t n =
        WriteAck(closing_, after_our_fin, closing_.secrets.server_isn + 2, now_ns, out);
    if (n != 0) ++counters_.replies;
    return n;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Server side

size_t ChaffResponder::Respond(const ChaffSegment& seg, std::span<const uint8_t> frame,
                               uint64_t now_ns, std::span<uint8_t> out) const {
  if (seg.direction != ChaffDirection::kClientToServer) return 0;
  if (seg.l3_offset < kEthernetHeaderBytes || seg.l3_offset > frame.size() ||
      out.size() < MaxChaffFrameBytes(tcp_)) {
    return 0;
  }
  // The answered frame's link header, MACs swapped (VLAN tags kept).
  uint8_t l2[kEthernetHeaderBytes + 8];
  const size_t l2_len = std::min<size_t>(seg.l3_offset, sizeof(l2));
  if (l2_len != seg.l3_offset) return 0;
  std::memcpy(l2, frame.data(), l2_len);
  std::memcpy(l2, frame.data() + 6, 6);
  std::memcpy(l2 + 6, frame.data(), 6);

  const ChaffConnectionSecrets& k = seg.secrets;
  SegmentSpec s;
  s.src_addr = seg.endpoints.server_addr;
  s.dst_addr = seg.endpoints.client_addr;
  s.src_port = seg.endpoints.server_port;
  s.dst_port = seg.endpoints.client_port;
  s.ttl = tcp_.ttl;
  s.tsval = TsClock(k.server_ts_offset, now_ns);
  s.tsecr = seg.has_timestamps ? seg.tsval : 0;

  if (seg.syn()) {
    s.seq = k.server_isn;
    s.ack = seg.seq + 1;
    s.flags = kTcpFlagSyn | kTcpFlagAck;
    s.window = tcp_.synack_window;
    s.ip_id = 0;  // Linux sends SYN-ACKs with DF and IP ID 0
    s.syn_options = true;
    s.mss = tcp_.mss();
    s.window_scale = tcp_.window_scale;
    return WriteBareSegment({l2, l2_len}, s, out);
  }
  if (seg.payload_length == 0 && !seg.fin()) return 0;  // a pure ACK is not answered

  // Everything below follows from how far into the stream the segment ends.
  const uint32_t received = seg.seq + seg.payload_length - (k.client_isn + 1);
  const uint32_t segment_bytes = tcp_.max_payload();
  const uint32_t index = (received + segment_bytes - 1) / segment_bytes;  // 1-based
  if (!seg.fin() && index % tcp_.ack_every != 0) return 0;  // delayed ACK
  // One IP ID per ACK sent before this one, counting from server_ip_id.
  const uint32_t prior_acks = index == 0 ? 0 : (index - 1) / tcp_.ack_every;
  s.ip_id = static_cast<uint16_t>(k.server_ip_id + prior_acks);
  s.seq = k.server_isn + 1;
  s.ack = seg.seq + seg.payload_length + (seg.fin() ? 1 : 0);
  s.flags = static_cast<uint8_t>(kTcpFlagAck | (seg.fin() ? kTcpFlagFin : 0));
  const uint64_t window =
      std::min<uint64_t>(tcp_.server_window_max_bytes,
                         uint64_t{tcp_.server_window_initial_bytes} + received);
  s.window = static_cast<uint16_t>(std::min<uint64_t>(0xFFFF, window >> tcp_.window_scale));
  return WriteBareSegment({l2, l2_len}, s, out);
}

}  // namespace shroud
