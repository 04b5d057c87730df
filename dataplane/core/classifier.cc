#include "dataplane/core/classifier.h"

#include <arpa/inet.h>
#include <hs/hs.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shroud {
namespace {

// Debian's Abseil is built with its own string_view type; our API uses the
// standard one.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

// ---------------------------------------------------------------------------
// Classes

std::string_view TrafficClassName(TrafficClass c) {
  switch (c) {
    case TrafficClass::kDefault:
      return "default";
    case TrafficClass::kMigration:
      return "migration";
    case TrafficClass::kChaff:
      return "chaff";
  }
  return "unknown";
}

absl::StatusOr<TrafficClass> ParseTrafficClass(std::string_view name) {
  for (TrafficClass c : {TrafficClass::kDefault, TrafficClass::kMigration, TrafficClass::kChaff}) {
    if (name == TrafficClassName(c)) return c;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown class \"", Av(name), "\"; expected \"migration\", \"chaff\" or \"default\""));
}

std::string_view ClassSourceName(ClassSource s) {
  switch (s) {
    case ClassSource::kNew:
      return "new";
    case ClassSource::kPending:
      return "pending";
    case ClassSource::kRule:
      return "rule";
    case ClassSource::kSignature:
      return "signature";
    case ClassSource::kNoMatch:
      return "no-match";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------
// Prefixes, ports, protocols

namespace {

// Bits [0, length) of a 16-byte address set, the rest clear.
std::array<uint8_t, 16> PrefixMask(uint8_t length) {
  std::array<uint8_t, 16> mask{};
  for (int i = 0; i < 16; ++i) {
    int bits = std::clamp(static_cast<int>(length) - 8 * i, 0, 8);
    mask[i] = static_cast<uint8_t>(0xFF00 >> bits);
  }
  return mask;
}

void ToWords(const uint8_t* bytes, uint64_t out[2]) {
  std::memcpy(&out[0], bytes, 8);
  std::memcpy(&out[1], bytes + 8, 8);
}

}  // namespace

bool IpPrefix::Contains(const std::array<uint8_t, 16>& key_addr, uint8_t key_version) const {
  if (version == 0) return true;
  if (version != key_version) return false;
  std::array<uint8_t, 16> mask = PrefixMask(length);
  for (int i = 0; i < 16; ++i) {
    if ((key_addr[i] & mask[i]) != addr[i]) return false;
  }
  return true;
}

std::string IpPrefix::ToString() const {
  if (version == 0) return "any";
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(version == 4 ? AF_INET : AF_INET6, addr.data(), buf, sizeof(buf));
  return absl::StrCat(buf, "/", length);
}

absl::StatusOr<IpPrefix> ParseIpPrefix(std::string_view text) {
  std::string_view address = text;
  std::string_view length_text;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    address = text.substr(0, slash);
    length_text = text.substr(slash + 1);
    if (length_text.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", Av(text), "\": missing prefix length after '/'"));
    }
  }
  IpPrefix prefix;
  std::string addr(address);  // inet_pton needs a terminated string
  if (inet_pton(AF_INET, addr.c_str(), prefix.addr.data()) == 1) {
    prefix.version = 4;
  } else if (inet_pton(AF_INET6, addr.c_str(), prefix.addr.data()) == 1) {
    prefix.version = 6;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", Av(text),
        "\" is not an IPv4 or IPv6 address or prefix (e.g. 192.0.2.0/24, 2001:db8::/32)"));
  }
  const int max_length = prefix.version == 4 ? 32 : 128;
  int length = max_length;
  if (!length_text.empty()) {
    // SimpleAtoi would accept " 24" and "+24"; a prefix length is digits only.
    bool digits = std::all_of(length_text.begin(), length_text.end(),
                              [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || length_text.size() > 3 || !absl::SimpleAtoi(Av(length_text), &length) ||
        length > max_length) {
      return absl::InvalidArgumentError(absl::StrCat("\"", Av(text), "\": prefix length must be 0-",
                                                     max_length, " for IPv", prefix.version));
    }
  }
  prefix.length = static_cast<uint8_t>(length);
  std::array<uint8_t, 16> mask = PrefixMask(prefix.length);
  for (int i = 0; i < 16; ++i) {
    if ((prefix.addr[i] & ~mask[i]) != 0) {
      IpPrefix network = prefix;
      for (int j = 0; j < 16; ++j) network.addr[j] &= mask[j];
      return absl::InvalidArgumentError(absl::StrCat("\"", Av(text),
                                                     "\" has host bits set beyond /", length,
                                                     "; did you mean ", network.ToString(), "?"));
    }
  }
  return prefix;
}

std::string PortRange::ToString() const {
  if (IsAny()) return "any";
  if (first == last) return absl::StrCat(first);
  return absl::StrCat(first, "-", last);
}

namespace {

bool ParsePort(absl::string_view text, uint16_t* port) {
  if (text.empty() || text.size() > 5) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value > 65535) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

}  // namespace

absl::StatusOr<PortRange> ParsePortRange(std::string_view text) {
  absl::string_view trimmed = absl::StripAsciiWhitespace(Av(text));
  PortRange range;
  size_t dash = trimmed.find('-');
  absl::string_view first = absl::StripAsciiWhitespace(trimmed.substr(0, dash));
  absl::string_view last = dash == absl::string_view::npos
                               ? first
                               : absl::StripAsciiWhitespace(trimmed.substr(dash + 1));
  if (!ParsePort(first, &range.first) || !ParsePort(last, &range.last)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", Av(text), "\" is not a port (0-65535) or port range such as \"49152-49215\""));
  }
  if (range.first > range.last) {
    return absl::InvalidArgumentError(
        absl::StrCat("port range \"", Av(text), "\" is empty: ", range.first, " > ", range.last));
  }
  return range;
}

absl::StatusOr<int> ParseProtocol(std::string_view text) {
  std::string lower = absl::AsciiStrToLower(Av(text));
  if (lower == "any") return kAnyProtocol;
  if (lower == "tcp") return kProtoTcp;
  if (lower == "udp") return kProtoUdp;
  if (lower == "icmp") return kProtoIcmp;
  if (lower == "icmp6" || lower == "icmpv6") return kProtoIcmpV6;
  int number = 0;
  if (!lower.empty() &&
      std::all_of(lower.begin(), lower.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      lower.size() <= 3 && absl::SimpleAtoi(lower, &number) && number <= 255) {
    return number;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown protocol \"", Av(text),
                   "\"; expected any, tcp, udp, icmp, icmp6 or a number 0-255"));
}

namespace {

// The packet parser fills ports for TCP and UDP only; for other protocols the
// FlowKey's port fields are zero (or ICMP type/code), so a port range could
// only ever match by accident.
bool ProtocolHasPorts(int protocol) {
  return protocol == kAnyProtocol || protocol == kProtoTcp || protocol == kProtoUdp;
}

}  // namespace

std::optional<RuleProblem> CheckClassRule(const ClassRule& rule) {
  if (rule.protocol != kAnyProtocol && (rule.protocol < 0 || rule.protocol > 255)) {
    return RuleProblem{"protocol", absl::StrCat(rule.protocol, " is not 0-255")};
  }
  if (!rule.src.IsAny() && !rule.dst.IsAny() && rule.src.version != rule.dst.version) {
    return RuleProblem{"dst", absl::StrCat(rule.dst.ToString(), " is IPv", rule.dst.version,
                                           " but src ", rule.src.ToString(), " is IPv",
                                           rule.src.version, "; a flow has one address family")};
  }
  for (const auto& [field, range] :
       {std::pair{"src_ports", rule.src_ports}, std::pair{"dst_ports", rule.dst_ports}}) {
    if (range.first > range.last) {
      return RuleProblem{field, absl::StrCat("empty range ", range.first, "-", range.last)};
    }
    if (!range.IsAny() && !ProtocolHasPorts(rule.protocol)) {
      return RuleProblem{field, absl::StrCat("ports only apply to tcp and udp, but protocol is ",
                                             ProtocolName(static_cast<uint8_t>(rule.protocol)))};
    }
  }
  return std::nullopt;
}

absl::Status ValidateClassRule(const ClassRule& rule) {
  std::optional<RuleProblem> problem = CheckClassRule(rule);
  if (!problem.has_value()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(problem->field, ": ", problem->message));
}

// ---------------------------------------------------------------------------
// RuleSet

absl::StatusOr<RuleSet> RuleSet::Compile(const std::vector<ClassRule>& rules) {
  if (rules.size() > std::numeric_limits<uint16_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("too many rules: ", rules.size()));
  }
  RuleSet set;
  set.rules_.reserve(rules.size());
  set.names_.reserve(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) {
    const ClassRule& rule = rules[i];
    if (absl::Status s = ValidateClassRule(rule); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rule ", i, " (\"", rule.name, "\"): ", s.message()));
    }
    Compiled c{};
    std::array<uint8_t, 16> mask = PrefixMask(rule.src.IsAny() ? 0 : rule.src.length);
    ToWords(mask.data(), c.src_mask);
    ToWords(rule.src.addr.data(), c.src_value);
    mask = PrefixMask(rule.dst.IsAny() ? 0 : rule.dst.length);
    ToWords(mask.data(), c.dst_mask);
    ToWords(rule.dst.addr.data(), c.dst_value);
    for (int w = 0; w < 2; ++w) {
      c.src_value[w] &= c.src_mask[w];
      c.dst_value[w] &= c.dst_mask[w];
    }
    c.src_first = rule.src_ports.first;
    c.src_last = rule.src_ports.last;
    c.dst_first = rule.dst_ports.first;
    c.dst_last = rule.dst_ports.last;
    c.protocol = static_cast<int16_t>(rule.protocol);
    c.ip_version = rule.src.IsAny() ? rule.dst.version : rule.src.version;
    c.has_ports = !rule.src_ports.IsAny() || !rule.dst_ports.IsAny();
    c.bidirectional = rule.bidirectional;
    c.traffic_class = rule.traffic_class;
    set.rules_.push_back(c);
    set.names_.push_back(rule.name);
  }
  return set;
}

bool RuleSet::MatchesDirection(const Compiled& r, uint8_t protocol, uint8_t ip_version,
                               const uint8_t* src, const uint8_t* dst, uint16_t sport,
                               uint16_t dport) {
  if (r.protocol != kAnyProtocol && r.protocol != protocol) return false;
  if (r.ip_version != 0 && r.ip_version != ip_version) return false;
  if (r.has_ports) {
    if (protocol != kProtoTcp && protocol != kProtoUdp) return false;
    if (sport < r.src_first || sport > r.src_last) return false;
    if (dport < r.dst_first || dport > r.dst_last) return false;
  }
  uint64_t s[2], d[2];
  ToWords(src, s);
  ToWords(dst, d);
  return ((s[0] & r.src_mask[0]) == r.src_value[0]) & ((s[1] & r.src_mask[1]) == r.src_value[1]) &
         ((d[0] & r.dst_mask[0]) == r.dst_value[0]) & ((d[1] & r.dst_mask[1]) == r.dst_value[1]);
}

RuleMatch RuleSet::Match(const FlowKey& key) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Compiled& r = rules_[i];
    if (MatchesDirection(r, key.protocol, key.ip_version, key.src_addr.data(), key.dst_addr.data(),
                         key.src_port, key.dst_port)) {
      return {static_cast<int>(i), r.traffic_class, false};
    }
    if (r.bidirectional && MatchesDirection(r, key.protocol, key.ip_version, key.dst_addr.data(),
                                            key.src_addr.data(), key.dst_port, key.src_port)) {
      return {static_cast<int>(i), r.traffic_class, true};
    }
  }
  return {};
}

// ---------------------------------------------------------------------------
// Signatures

std::vector<SignatureSpec> BuiltinSignatures() {
  return {
      {"qemu-migration-stream", R"(^QEVM\x00\x00\x00\x03)", TrafficClass::kMigration},
      {"qemu-multifd-channel", R"(^\x11\x22\x33\x44\x00\x00\x00\x01)", TrafficClass::kMigration},
  };
}

namespace {

constexpr unsigned kSignatureFlags = HS_FLAG_DOTALL | HS_FLAG_SINGLEMATCH;

struct CompileErrorDeleter {
  void operator()(hs_compile_error_t* e) const { hs_free_compile_error(e); }
};
using CompileError = std::unique_ptr<hs_compile_error_t, CompileErrorDeleter>;

struct DatabaseDeleter {
  void operator()(hs_database_t* db) const { hs_free_database(db); }
};
using HsDatabase = std::unique_ptr<hs_database_t, DatabaseDeleter>;

struct HsScratchDeleter {
  void operator()(hs_scratch_t* s) const { hs_free_scratch(s); }
};
using HsScratch = std::unique_ptr<hs_scratch_t, HsScratchDeleter>;

// Skips a character class starting at p[i] == '['; returns the index after ']'.
size_t SkipCharClass(std::string_view p, size_t i) {
  ++i;
  if (i < p.size() && p[i] == '^') ++i;
  if (i < p.size() && p[i] == ']') ++i;  // a leading ']' is literal
  while (i < p.size() && p[i] != ']') {
    i += p[i] == '\\' ? 2 : 1;
  }
  return i + 1;
}

bool HasTopLevelAlternation(std::string_view p) {
  int depth = 0;
  for (size_t i = 0; i < p.size();) {
    char c = p[i];
    if (c == '\\') {
      if (i + 1 < p.size() && p[i + 1] == 'Q') {  // \Q...\E is literal
        size_t end = p.find("\\E", i + 2);
        i = end == std::string_view::npos ? p.size() : end + 2;
      } else {
        i += 2;
      }
      continue;
    }
    if (c == '[') {
      i = SkipCharClass(p, i);
      continue;
    }
    if (c == '(') {
      if (p.substr(i, 3) == "(?#") {  // comment
        size_t end = p.find(')', i);
        i = end == std::string_view::npos ? p.size() : end + 1;
        continue;
      }
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if (c == '|' && depth == 0) {
      return true;
    }
    ++i;
  }
  return false;
}

// Whether the pattern can only match at offset 0. Conservative in the safe
// direction for a shaper: anything we cannot see is anchored ("(?:^a)",
// "^a|^b") counts as unanchored and is applied to every scanned packet, as
// Hyperscan's block mode would anyway.
bool IsStartAnchored(std::string_view p) {
  size_t i = 0;
  // Leading option groups such as "(?i)" or "(?s-i)".
  while (p.substr(i, 2) == "(?") {
    size_t j = i + 2;
    bool enables = true;
    while (j < p.size() && (std::isalpha(static_cast<unsigned char>(p[j])) || p[j] == '-')) {
      if (p[j] == '-') enables = false;
      // (?m) makes '^' match after every newline too.
      if (p[j] == 'm' && enables) return false;
      ++j;
    }
    if (j == i + 2 || j >= p.size() || p[j] != ')') break;
    i = j + 1;
  }
  std::string_view rest = p.substr(i);
  if (!rest.starts_with("^") && !rest.starts_with("\\A")) return false;
  return !HasTopLevelAlternation(p);
}

}  // namespace

absl::StatusOr<SignaturePatternInfo> InspectSignaturePattern(const std::string& pattern) {
  hs_expr_info_t* raw_info = nullptr;
  hs_compile_error_t* raw_error = nullptr;
  if (hs_expression_info(pattern.c_str(), kSignatureFlags, &raw_info, &raw_error) != HS_SUCCESS) {
    CompileError error(raw_error);
    return absl::InvalidArgumentError(
        absl::StrCat("Hyperscan: ", error != nullptr ? error->message : "unknown error"));
  }
  // hs_expression_info allocates with the misc allocator, which is malloc.
  std::unique_ptr<hs_expr_info_t, decltype(&std::free)> info(raw_info, &std::free);
  if (info->min_width == 0) {
    return absl::InvalidArgumentError(
        "pattern matches an empty payload, so it would claim every flow");
  }
  SignaturePatternInfo out;
  out.min_length = info->min_width;
  out.anchored = IsStartAnchored(pattern);
  return out;
}

struct SignatureDatabase::State {
  HsDatabase database;
  HsScratch prototype;
  std::vector<SignatureSpec> specs;
  std::vector<uint8_t> anchored;  // per signature; uint8_t so the scan callback reads a flat array
};

absl::StatusOr<SignatureDatabase> SignatureDatabase::Compile(
    std::vector<SignatureSpec> signatures) {
  if (signatures.empty()) return SignatureDatabase();
  if (signatures.size() > std::numeric_limits<uint16_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("too many signatures: ", signatures.size()));
  }
  if (hs_valid_platform() != HS_SUCCESS) {
    return absl::FailedPreconditionError(
        "Hyperscan does not support this CPU (it needs at least SSSE3)");
  }
  auto state = std::make_shared<State>();
  std::vector<const char*> expressions;
  std::vector<unsigned> flags(signatures.size(), kSignatureFlags);
  std::vector<unsigned> ids;
  for (size_t i = 0; i < signatures.size(); ++i) {
    // Checked one by one first: the message then names the signature even for
    // problems hs_compile_multi reports without an expression index, and an
    // empty-matching pattern gets our clearer explanation.
    absl::StatusOr<SignaturePatternInfo> info = InspectSignaturePattern(signatures[i].pattern);
    if (!info.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("signature ", i, " (\"", signatures[i].name,
                                                     "\", pattern \"", signatures[i].pattern,
                                                     "\"): ", info.status().message()));
    }
    state->anchored.push_back(info->anchored ? 1 : 0);
    expressions.push_back(signatures[i].pattern.c_str());
    ids.push_back(static_cast<unsigned>(i));
  }
  hs_database_t* raw_db = nullptr;
  hs_compile_error_t* raw_error = nullptr;
  if (hs_compile_multi(expressions.data(), flags.data(), ids.data(),
                       static_cast<unsigned>(expressions.size()), HS_MODE_BLOCK, nullptr, &raw_db,
                       &raw_error) != HS_SUCCESS) {
    CompileError error(raw_error);
    std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr && error->expression >= 0 &&
        static_cast<size_t>(error->expression) < signatures.size()) {
      const SignatureSpec& s = signatures[error->expression];
      return absl::InvalidArgumentError(absl::StrCat("signature ", error->expression, " (\"",
                                                     s.name, "\", pattern \"", s.pattern,
                                                     "\"): Hyperscan: ", message));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("compiling ", signatures.size(), " signatures: Hyperscan: ", message));
  }
  state->database.reset(raw_db);
  hs_scratch_t* raw_scratch = nullptr;
  if (hs_error_t err = hs_alloc_scratch(raw_db, &raw_scratch); err != HS_SUCCESS) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Hyperscan could not allocate scratch space (error ", err, ")"));
  }
  state->prototype.reset(raw_scratch);
  state->specs = std::move(signatures);
  return SignatureDatabase(std::move(state));
}

size_t SignatureDatabase::size() const { return state_ == nullptr ? 0 : state_->specs.size(); }

const SignatureSpec& SignatureDatabase::signature(size_t i) const { return state_->specs[i]; }

bool SignatureDatabase::anchored(size_t i) const { return state_->anchored[i] != 0; }

absl::StatusOr<SignatureScanner> SignatureDatabase::NewScanner() const {
  if (state_ == nullptr) return SignatureScanner(nullptr, nullptr);
  hs_scratch_t* scratch = nullptr;
  if (hs_error_t err = hs_clone_scratch(state_->prototype.get(), &scratch); err != HS_SUCCESS) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Hyperscan could not clone scratch space (error ", err, ")"));
  }
  return SignatureScanner(state_, scratch);
}

void SignatureScanner::ScratchDeleter::operator()(void* scratch) const {
  hs_free_scratch(static_cast<hs_scratch_t*>(scratch));
}

SignatureScanner::SignatureScanner(std::shared_ptr<const SignatureDatabase::State> state,
                                   void* scratch)
    : state_(std::move(state)), scratch_(scratch) {}
SignatureScanner::SignatureScanner(SignatureScanner&&) noexcept = default;
SignatureScanner& SignatureScanner::operator=(SignatureScanner&&) noexcept = default;
SignatureScanner::~SignatureScanner() = default;

namespace {

struct ScanContext {
  const uint8_t* anchored;
  bool stream_start;
  unsigned best;  // lowest matching id so far; UINT_MAX: none
};

int OnMatch(unsigned id, unsigned long long /*from*/, unsigned long long /*to*/, unsigned /*flags*/,
            void* context) {
  auto* ctx = static_cast<ScanContext*>(context);
  if (ctx->anchored[id] != 0 && !ctx->stream_start) return 0;
  ctx->best = std::min(ctx->best, id);
  // Nothing can beat the first signature; otherwise keep going, since a
  // lower-numbered signature may still report (matches come in end-offset
  // order, not id order).
  return ctx->best == 0 ? 1 : 0;
}

}  // namespace

std::optional<SignatureMatch> SignatureScanner::Scan(std::span<const uint8_t> payload,
                                                     bool stream_start) {
  if (state_ == nullptr || payload.empty()) return std::nullopt;
  ScanContext ctx{state_->anchored.data(), stream_start, std::numeric_limits<unsigned>::max()};
  size_t length = std::min<size_t>(payload.size(), std::numeric_limits<unsigned>::max());
  hs_error_t err = hs_scan(state_->database.get(), reinterpret_cast<const char*>(payload.data()),
                           static_cast<unsigned>(length), 0,
                           static_cast<hs_scratch_t*>(scratch_.get()), &OnMatch, &ctx);
  if (err != HS_SUCCESS && err != HS_SCAN_TERMINATED) {
    ++errors_;
    return std::nullopt;
  }
  if (ctx.best == std::numeric_limits<unsigned>::max()) return std::nullopt;
  const SignatureSpec& spec = state_->specs[ctx.best];
  return SignatureMatch{ctx.best, spec.traffic_class, spec.name};
}

// ---------------------------------------------------------------------------
// Per-flow decision

FlowClass ReverseFlowClass(const FlowClass& data_direction) {
  FlowClass r = data_direction;
  if (data_direction.decided() && data_direction.traffic_class != TrafficClass::kDefault) {
    r.reverse = true;
  }
  return r;
}

FlowClass DecideFlowClass(const FlowClass& state, const RuleMatch& rule, uint8_t protocol,
                          std::span<const uint8_t> payload, SignatureScanner* scanner,
                          bool have_signatures, const ScanLimits& limits) {
  if (state.decided()) return state;
  FlowClass next = state;
  if (next.source == ClassSource::kNew) {
    if (rule.matched()) {
      next.source = ClassSource::kRule;
      next.traffic_class = rule.traffic_class;
      next.reverse = rule.reverse;
      next.index = static_cast<uint16_t>(rule.rule);
      return next;
    }
    if (!have_signatures || scanner == nullptr || limits.packets == 0) {
      next.source = ClassSource::kNoMatch;
      next.traffic_class = TrafficClass::kDefault;
      return next;
    }
    next.source = ClassSource::kPending;
  }
  // kPending from here.
  if (payload.empty()) return next;
  // A TCP stream starts once; every datagram of other protocols is a message
  // of its own, so anchored signatures apply to each.
  bool stream_start = protocol != kProtoTcp || next.payloads_scanned == 0;
  std::span<const uint8_t> head = payload.first(std::min<size_t>(payload.size(), limits.bytes));
  std::optional<SignatureMatch> match =
      scanner != nullptr ? scanner->Scan(head, stream_start) : std::nullopt;
  if (match.has_value()) {
    next.source = ClassSource::kSignature;
    next.traffic_class = match->traffic_class;
    next.index = static_cast<uint16_t>(match->signature);
    return next;
  }
  if (next.payloads_scanned < 255) ++next.payloads_scanned;
  if (next.payloads_scanned >= limits.packets) {
    next.source = ClassSource::kNoMatch;
    next.traffic_class = TrafficClass::kDefault;
  }
  return next;
}

// ---------------------------------------------------------------------------
// Classifier

std::vector<SignatureSpec> EffectiveSignatures(const ClassifierConfig& config) {
  std::vector<SignatureSpec> out = config.signatures;
  if (config.builtin_signatures) {
    for (SignatureSpec& builtin : BuiltinSignatures()) {
      bool replaced = std::any_of(out.begin(), out.begin() + config.signatures.size(),
                                  [&](const SignatureSpec& s) { return s.name == builtin.name; });
      if (!replaced) out.push_back(std::move(builtin));
    }
  }
  return out;
}

absl::StatusOr<std::vector<uint16_t>> SignatureIds::Assign(
    const std::vector<SignatureSpec>& signatures) {
  uint32_t fresh = 0;
  for (const SignatureSpec& s : signatures) fresh += !by_name.contains(s.name);
  if (next + fresh > uint32_t{std::numeric_limits<uint16_t>::max()} + 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "signature ids exhausted: ", next, " distinct signature names since the dataplane "
        "started, ", fresh, " new; restart it to renumber"));
  }
  std::vector<uint16_t> out;
  out.reserve(signatures.size());
  for (const SignatureSpec& s : signatures) {
    auto [it, inserted] = by_name.try_emplace(s.name, static_cast<uint16_t>(next));
    if (inserted) ++next;
    out.push_back(it->second);
  }
  return out;
}

absl::StatusOr<Classifier> Classifier::Create(const ClassifierConfig& config,
                                              const SignatureIds& ids) {
  if (config.limits.packets > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("signature_scan_packets must be <= 255, got ", config.limits.packets));
  }
  Classifier c;
  absl::StatusOr<RuleSet> rules = RuleSet::Compile(config.rules);
  if (!rules.ok()) return rules.status();
  c.rules_ = *std::move(rules);
  std::vector<SignatureSpec> specs = EffectiveSignatures(config);
  c.ids_ = ids;
  absl::StatusOr<std::vector<uint16_t>> assigned = c.ids_.Assign(specs);
  if (!assigned.ok()) return assigned.status();
  c.id_of_index_ = *std::move(assigned);
  c.index_of_id_.assign(c.ids_.next, -1);
  for (size_t i = 0; i < c.id_of_index_.size(); ++i) {
    c.index_of_id_[c.id_of_index_[i]] = static_cast<int32_t>(i);
  }
  absl::StatusOr<SignatureDatabase> db = SignatureDatabase::Compile(std::move(specs));
  if (!db.ok()) return db.status();
  c.signatures_ = *std::move(db);
  c.limits_ = config.limits;
  return c;
}

FlowClass Classifier::Decide(const FlowClass& state, const FlowKey& key,
                             std::span<const uint8_t> payload, SignatureScanner& scanner) const {
  if (state.decided()) return state;
  RuleMatch rule = state.source == ClassSource::kNew ? rules_.Match(key) : RuleMatch{};
  FlowClass next = DecideFlowClass(state, rule, key.protocol, payload, &scanner,
                                   !signatures_.empty(), limits_);
  if (next.source == ClassSource::kSignature) next.index = id_of_index_[next.index];
  return next;
}

FlowClass Classifier::Refresh(const FlowClass& c, const FlowKey& key, uint16_t epoch) const {
  FlowClass r;
  if (c.source == ClassSource::kSignature && !rules_.Match(key).matched()) {
    const int32_t at = SignatureIndex(c.index);
    if (at >= 0) {
      r = c;
      r.traffic_class = signatures_.signature(static_cast<size_t>(at)).traffic_class;
    }
  }
  r.counted = c.counted;
  r.rules_epoch = epoch & (kRulesEpochs - 1);
  return r;
}

std::string_view Classifier::SourceName(const FlowClass& c) const {
  if (c.source == ClassSource::kRule && c.index < rules_.size()) return rules_.name(c.index);
  if (c.source == ClassSource::kSignature) {
    const int32_t at = SignatureIndex(c.index);
    return at >= 0 ? std::string_view(signatures_.signature(static_cast<size_t>(at)).name)
                   : std::string_view("signature (unloaded)");
  }
  return ClassSourceName(c.source);
}

}  // namespace shroud
