#include "dataplane/core/chaff_tag.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace shroud {
namespace {

// crypto_kdf's context: exactly 8 characters, names the purpose of the keys.
constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES] = {'s', 'h', 'r', 'o', 'u', 'd', 'C', 'h'};
enum SubkeyId : uint64_t { kConnection = 1, kInner = 2, kOuter = 3, kStream = 4 };

// Domain bytes of the two connection PRF calls.
constexpr uint8_t kDomainSequence = 0x01;
constexpr uint8_t kDomainIpId = 0x02;

static_assert(crypto_shorthash_siphash24_KEYBYTES == 16);
static_assert(crypto_shorthash_siphash24_BYTES == kChaffSegmentTagBytes);
static_assert(crypto_shorthash_siphashx24_BYTES == 16);
static_assert(crypto_stream_chacha20_ietf_KEYBYTES == 32);

void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void PutBe32(uint8_t* p, uint32_t v) {
  PutBe16(p, static_cast<uint16_t>(v >> 16));
  PutBe16(p + 2, static_cast<uint16_t>(v));
}
uint32_t Be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[3]) << 24 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[1]) << 8 | p[0];
}

uint32_t AddrOf(const std::array<uint8_t, 16>& a) { return Be32(a.data()); }

// Branch-free 32-bit equality: 1 when equal, else 0.
uint32_t EqualMask(uint32_t a, uint32_t b) {
  const uint32_t x = a ^ b;
  return 1u ^ static_cast<uint32_t>((static_cast<uint64_t>(x) + 0xFFFFFFFFu) >> 32);
}

void PutEndpoints(uint8_t* p, const ChaffEndpoints& e) {
  PutBe32(p, e.client_addr);
  PutBe32(p + 4, e.server_addr);
  PutBe16(p + 8, e.client_port);
  PutBe16(p + 10, e.server_port);
}

}  // namespace

// ---------------------------------------------------------------------------
// Keys

absl::StatusOr<ChaffKey> ParseChaffKeyHex(std::string_view hex) {
  if (hex.size() != 2 * kChaffKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("chaff key must be ", 2 * kChaffKeyBytes,
                                                   " hex digits, got ", hex.size(), " characters"));
  }
  ChaffKey key;
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_hex2bin(key.bytes.data(), key.bytes.size(), hex.data(), hex.size(), nullptr, &len,
                     &end) != 0 ||
      len != kChaffKeyBytes || end != hex.data() + hex.size()) {
    return absl::InvalidArgumentError("chaff key must be hex digits only (0-9, a-f)");
  }
  if (sodium_is_zero(key.bytes.data(), key.bytes.size())) {
    return absl::InvalidArgumentError(
        "chaff key is all zeros: generate one per gateway pair, e.g. `openssl rand -hex 32`");
  }
  return key;
}

std::string ChaffKeyId(const ChaffKey& key) {
  if (sodium_init() < 0) std::abort();  // see ChaffKeys
  static constexpr char kContext[] = "shroud chaff key id v1";
  uint8_t digest[16];
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, sizeof(digest));
  crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(kContext),
                            sizeof(kContext) - 1);
  crypto_generichash_update(&state, key.bytes.data(), key.bytes.size());
  crypto_generichash_final(&state, digest, sizeof(digest));
  char hex[9];
  sodium_bin2hex(hex, sizeof(hex), digest, 4);
  return std::string(hex);
}

ChaffKeys::ChaffKeys(const ChaffKey& key) {
  // Idempotent and thread-safe; picks the fastest implementations for this
  // CPU. It only fails when the OS has no randomness at all, which nothing
  // here uses, so the result is deliberately not an error path.
  if (sodium_init() < 0) std::abort();
  crypto_kdf_derive_from_key(connection_.data(), connection_.size(), kConnection, kKdfContext,
                             key.bytes.data());
  crypto_kdf_derive_from_key(inner_.data(), inner_.size(), kInner, kKdfContext, key.bytes.data());
  crypto_kdf_derive_from_key(outer_.data(), outer_.size(), kOuter, kKdfContext, key.bytes.data());
  crypto_kdf_derive_from_key(stream_.data(), stream_.size(), kStream, kKdfContext,
                             key.bytes.data());
}

ChaffKeys::~ChaffKeys() {
  sodium_memzero(connection_.data(), connection_.size());
  sodium_memzero(inner_.data(), inner_.size());
  sodium_memzero(outer_.data(), outer_.size());
  sodium_memzero(stream_.data(), stream_.size());
}

// ---------------------------------------------------------------------------
// Connections and tags

FlowKey ChaffEndpoints::ClientToServerKey() const {
  FlowKey k;
  PutBe32(k.src_addr.data(), client_addr);
  PutBe32(k.dst_addr.data(), server_addr);
  k.src_port = client_port;
  k.dst_port = server_port;
  k.protocol = kProtoTcp;
  k.ip_version = 4;
  return k;
}

ChaffConnectionSecrets DeriveConnectionSecrets(const ChaffKeys& keys, const ChaffEndpoints& e) {
  uint8_t in[13];
  PutEndpoints(in + 1, e);
  uint8_t out[16];
  in[0] = kDomainSequence;
  crypto_shorthash_siphashx24(out, in, sizeof(in), keys.connection().data());
  ChaffConnectionSecrets s;
  s.client_isn = Le32(out);
  s.server_isn = Le32(out + 4);
  s.client_ts_offset = Le32(out + 8);
  s.server_ts_offset = Le32(out + 12);
  in[0] = kDomainIpId;
  crypto_shorthash_siphash24(out, in, sizeof(in), keys.connection().data());
  s.client_ip_id = static_cast<uint16_t>(out[0] | out[1] << 8);
  s.server_ip_id = static_cast<uint16_t>(out[2] | out[3] << 8);
  return s;
}

std::array<uint8_t, kChaffSegmentTagBytes> ComputeSegmentTag(const ChaffKeys& keys,
                                                             const ChaffTagFields& f,
                                                             std::span<const uint8_t> rest) {
  // Hash-then-MAC with independent keys: SipHash takes one contiguous input,
  // and the covered header fields are scattered over the frame, so the
  // payload is compressed first (keyed: its collisions are as hard to find as
  // a forgery) and the outer MAC covers the fields and that digest.
  uint8_t in[29];
  PutBe32(in, f.src_addr);
  PutBe32(in + 4, f.dst_addr);
  PutBe16(in + 8, f.src_port);
  PutBe16(in + 10, f.dst_port);
  PutBe32(in + 12, f.seq);
  PutBe32(in + 16, f.ack);
  in[20] = f.flags;
  crypto_shorthash_siphash24(in + 21, rest.data(), rest.size(), keys.inner().data());
  std::array<uint8_t, kChaffSegmentTagBytes> tag;
  crypto_shorthash_siphash24(tag.data(), in, sizeof(in), keys.outer().data());
  return tag;
}

// ---------------------------------------------------------------------------
// Pools

absl::Status ChaffPoolConfig::Validate() const {
  auto check_pool = [](const char* name, const std::vector<IpPrefix>& pool) -> absl::Status {
    if (pool.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pools.", name, ": needs at least one prefix"));
    }
    for (size_t i = 0; i < pool.size(); ++i) {
      if (pool[i].version != 4) {
        return absl::InvalidArgumentError(absl::StrCat(
            "pools.", name, "[", i, "]: must be an IPv4 prefix (chaff is IPv4), got ",
            pool[i].ToString()));
      }
      if (pool[i].length > 32) {
        return absl::InvalidArgumentError(absl::StrCat("pools.", name, "[", i,
                                                       "]: prefix length must be <= 32"));
      }
    }
    return absl::OkStatus();
  };
  if (absl::Status s = check_pool("local_prefixes", local_prefixes); !s.ok()) return s;
  if (absl::Status s = check_pool("remote_prefixes", remote_prefixes); !s.ok()) return s;
  // Local and remote must not overlap: the direction of a segment is read off
  // its addresses.
  for (size_t i = 0; i < local_prefixes.size(); ++i) {
    for (size_t j = 0; j < remote_prefixes.size(); ++j) {
      const IpPrefix& a = local_prefixes[i];
      const IpPrefix& b = remote_prefixes[j];
      const IpPrefix& shorter = a.length <= b.length ? a : b;
      const IpPrefix& longer = a.length <= b.length ? b : a;
      if (shorter.Contains(longer.addr, 4)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "pools.remote_prefixes[", j, "]: ", b.ToString(), " overlaps pools.local_prefixes[", i,
            "] ", a.ToString(), "; our side and the peer's must be disjoint"));
      }
    }
  }
  if (client_ports.first > client_ports.last) {
    return absl::InvalidArgumentError("pools.client_ports: first must be <= last");
  }
  if (server_ports.first > server_ports.last) {
    return absl::InvalidArgumentError("pools.server_ports: first must be <= last");
  }
  if (client_ports.first == 0 || server_ports.first == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pools.", client_ports.first == 0 ? "client_ports" : "server_ports",
                     ": port 0 never appears on the wire"));
  }
  // Disjoint port ranges: the ports say which end of a connection sent a
  // segment.
  if (client_ports.first <= server_ports.last && server_ports.first <= client_ports.last) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pools.server_ports: ", server_ports.ToString(), " overlaps pools.client_ports ",
        client_ports.ToString(), "; they must be disjoint"));
  }
  return absl::OkStatus();
}

std::string_view ChaffDirectionName(ChaffDirection d) {
  switch (d) {
    case ChaffDirection::kNone: return "none";
    case ChaffDirection::kClientToServer: return "client_to_server";
    case ChaffDirection::kServerToClient: return "server_to_client";
  }
  return "?";
}

ChaffPools::ChaffPools(const ChaffPoolConfig& config)
    : client_ports_(config.client_ports), server_ports_(config.server_ports) {
  auto compile = [](const std::vector<IpPrefix>& pool, std::vector<Prefix>& out, uint64_t& total) {
    for (const IpPrefix& p : pool) {
      Prefix c;
      c.mask = p.length == 0 ? 0 : ~uint32_t{0} << (32 - p.length);
      c.network = AddrOf(p.addr) & c.mask;
      const uint64_t size = uint64_t{1} << (32 - p.length);
      // Up to /30 the first and last addresses are network and broadcast,
      // which no host uses; /31 (RFC 3021) and /32 are all hosts.
      c.first_host = size >= 4 ? 1 : 0;
      c.hosts = size >= 4 ? size - 2 : size;
      total += c.hosts;
      out.push_back(c);
    }
  };
  compile(config.local_prefixes, local_, local_hosts_);
  compile(config.remote_prefixes, remote_, remote_hosts_);
}

ChaffDirection ChaffPools::Classify(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                                    const std::vector<Prefix>& from,
                                    const std::vector<Prefix>& to) const {
  ChaffDirection d;
  if (client_ports_.Contains(sport) && server_ports_.Contains(dport)) {
    d = ChaffDirection::kClientToServer;
  } else if (server_ports_.Contains(sport) && client_ports_.Contains(dport)) {
    d = ChaffDirection::kServerToClient;
  } else {
    return ChaffDirection::kNone;
  }
  if (!Contains(from, src) || !Contains(to, dst)) return ChaffDirection::kNone;
  return d;
}

ChaffDirection ChaffPools::Inbound(const FlowKey& key) const {
  if (key.ip_version != 4) return ChaffDirection::kNone;
  return Classify(AddrOf(key.src_addr), AddrOf(key.dst_addr), key.src_port, key.dst_port, remote_,
                  local_);
}

ChaffDirection ChaffPools::Outbound(const FlowKey& key) const {
  if (key.ip_version != 4) return ChaffDirection::kNone;
  return Classify(AddrOf(key.src_addr), AddrOf(key.dst_addr), key.src_port, key.dst_port, local_,
                  remote_);
}

// ---------------------------------------------------------------------------
// Verification

std::optional<ChaffSegment> ChaffVerifier::Verify(std::span<const uint8_t> frame) const {
  ParsedPacket parsed;
  if (ParsePacket(frame.data(), frame.size(), static_cast<uint32_t>(frame.size()),
                  LinkType::kEthernet, &parsed) != ParseStatus::kOk) {
    return std::nullopt;
  }
  return Verify(frame, parsed);
}

std::optional<ChaffSegment> ChaffVerifier::Verify(std::span<const uint8_t> frame,
                                                  const ParsedPacket& p) const {
  if (p.key.ip_version != 4 || p.key.protocol != kProtoTcp || p.is_fragment || p.l4_offset == 0) {
    return std::nullopt;
  }
  const ChaffDirection direction = pools_.Inbound(p.key);
  if (direction == ChaffDirection::kNone) return std::nullopt;
  // The parser checked the IP and TCP headers against the captured length
  // only up to the ports when a capture was cut; here all of it must be there.
  const size_t l4 = p.l4_offset;
  if (l4 + 20 > frame.size()) return std::nullopt;
  const uint8_t* tcp = frame.data() + l4;
  const size_t tcp_header = static_cast<size_t>(tcp[12] >> 4) * 4;
  if (tcp_header < 20 || l4 + tcp_header > frame.size() ||
      size_t{p.payload_offset} + p.payload_length > frame.size()) {
    return std::nullopt;
  }

  ChaffSegment seg;
  seg.direction = direction;
  seg.seq = Be32(tcp + 4);
  seg.ack = Be32(tcp + 8);
  seg.flags = tcp[13];
  seg.payload_length = p.payload_length;
  seg.l3_offset = p.l3_offset;
  const uint32_t src = AddrOf(p.key.src_addr);
  const uint32_t dst = AddrOf(p.key.dst_addr);
  if (direction == ChaffDirection::kClientToServer) {
    seg.endpoints = {src, dst, p.key.src_port, p.key.dst_port};
  } else {
    seg.endpoints = {dst, src, p.key.dst_port, p.key.src_port};
  }
  seg.secrets = DeriveConnectionSecrets(keys_, seg.endpoints);
  const ChaffConnectionSecrets& s = seg.secrets;
  const uint32_t f = seg.flags;

  uint32_t connection_ok;
  bool needs_segment_tag = false;
  if (direction == ChaffDirection::kClientToServer) {
    if (p.payload_length == 0) {
      const uint32_t syn = EqualMask(f, kTcpFlagSyn) & EqualMask(seg.ack, 0) &
                           EqualMask(seg.seq, s.client_isn);
      const uint32_t last_ack = EqualMask(f, kTcpFlagAck) & EqualMask(seg.ack, s.server_isn + 2);
      connection_ok = syn | last_ack;
    } else {
      const uint32_t data_flags = f & ~uint32_t{kTcpFlagPsh | kTcpFlagFin};
      connection_ok = EqualMask(data_flags, kTcpFlagAck) & EqualMask(seg.ack, s.server_isn + 1) &
                      static_cast<uint32_t>(p.payload_length >= kChaffSegmentTagBytes);
      needs_segment_tag = true;
    }
  } else {
    const uint32_t synack = EqualMask(f, kTcpFlagSyn | kTcpFlagAck) &
                            EqualMask(seg.seq, s.server_isn) &
                            EqualMask(seg.ack, s.client_isn + 1);
    const uint32_t ack_or_fin =
        EqualMask(f, kTcpFlagAck) | EqualMask(f, kTcpFlagFin | kTcpFlagAck);
    const uint32_t ack = ack_or_fin & EqualMask(seg.seq, s.server_isn + 1);
    connection_ok = EqualMask(p.payload_length, 0) & (synack | ack);
  }
  if (connection_ok == 0) return std::nullopt;

  if (needs_segment_tag) {
    const uint8_t* payload = frame.data() + p.payload_offset;
    const ChaffTagFields fields{src, dst, p.key.src_port, p.key.dst_port, seg.seq, seg.ack,
                                seg.flags};
    const auto expected = ComputeSegmentTag(
        keys_, fields,
        std::span<const uint8_t>(payload + kChaffSegmentTagBytes,
                                 p.payload_length - kChaffSegmentTagBytes));
    if (sodium_memcmp(expected.data(), payload, kChaffSegmentTagBytes) != 0) return std::nullopt;
  }

  // Timestamps (kind 8, length 10), for the answer's TSecr.
  size_t o = 20;
  while (o < tcp_header) {
    const uint8_t kind = tcp[o];
    if (kind == 0) break;
    if (kind == 1) {
      ++o;
      continue;
    }
    if (o + 1 >= tcp_header) break;
    const uint8_t len = tcp[o + 1];
    if (len < 2 || o + len > tcp_header) break;
    if (kind == 8 && len == 10) {
      seg.has_timestamps = true;
      seg.tsval = Be32(tcp + o + 2);
      seg.tsecr = Be32(tcp + o + 6);
      break;
    }
    o += len;
  }
  return seg;
}

}  // namespace shroud
