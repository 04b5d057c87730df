// Traffic classification for the gateway: which class queue a flow's packets
// go to (migration, chaff, or default = forwarded untouched).
//
// Two stages, both pure (no clocks, no globals, no DPDK types):
//
//   1. Rules (RuleSet): protocol, source/destination prefixes and port ranges,
//      evaluated once when a flow is created. First matching rule in config
//      order wins. This is what catches TLS migrations, whose payload hides
//      every signature.
//   2. Signatures (SignatureDatabase/SignatureScanner): Hyperscan block-mode
//      patterns over the first payload bytes of the first few payload packets
//      of flows no rule named, e.g. an unencrypted QEMU migration stream.
//
// Classifier bundles both with the scan limits, and DecideFlowClass() is the
// per-flow state machine the flow table drives (see FlowClass for the states).
//
// Threading: RuleSet, SignatureDatabase and Classifier are immutable once
// built and may be shared by all workers. A SignatureScanner owns Hyperscan
// scratch space and must be used by one worker at a time: create one per
// worker with NewScanner().
#ifndef SHROUD_DATAPLANE_CORE_CLASSIFIER_H_
#define SHROUD_DATAPLANE_CORE_CLASSIFIER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shroud/flow_key.h"

namespace shroud {

// ---------------------------------------------------------------------------
// Classes

// Numbered so a zero-initialised flow entry is in the default class.
enum class TrafficClass : uint8_t {
  kDefault = 0,    // forwarded unchanged and undelayed
  kMigration = 1,  // shaped by the DHTB migration bucket (Algorithm 3)
  kChaff = 2,      // shaped by the chaff bucket
};
inline constexpr size_t kTrafficClassCount = 3;

// "default", "migration", "chaff" (the spelling the config uses).
std::string_view TrafficClassName(TrafficClass c);
absl::StatusOr<TrafficClass> ParseTrafficClass(std::string_view name);

// ---------------------------------------------------------------------------
// Rule building blocks

// An IPv4 or IPv6 prefix. version 0 means "any address of either family" (a
// rule without that field); "0.0.0.0/0" matches every IPv4 address but no
// IPv6 address, "::/0" the reverse.
struct IpPrefix {
  uint8_t version = 0;             // 0 (any), 4 or 6
  std::array<uint8_t, 16> addr{};  // network address, FlowKey layout (IPv4 in bytes 0-3)
  uint8_t length = 0;              // prefix length in bits

  bool IsAny() const { return version == 0; }
  // True when `key_addr` of a flow of IP version `key_version` is inside.
  bool Contains(const std::array<uint8_t, 16>& key_addr, uint8_t key_version) const;
  std::string ToString() const;  // "any" for version 0
};

// "192.0.2.0/24", "2001:db8::/32", or a bare address (= /32 or /128). Host
// bits set beyond the prefix length are an error rather than silently masked:
// "192.0.2.1/24" is usually a typo for a /32 or for 192.0.2.0/24, and the two
// mean very different things to a shaper.
absl::StatusOr<IpPrefix> ParseIpPrefix(std::string_view text);

// An inclusive port range; the default covers every port.
struct PortRange {
  uint16_t first = 0;
  uint16_t last = 65535;

  bool IsAny() const { return first == 0 && last == 65535; }
  bool Contains(uint16_t port) const { return port >= first && port <= last; }
  std::string ToString() const;  // "any", "16514" or "49152-49215"
};

// "49152-49215" or "16514". first > last ("9-1") is an error.
absl::StatusOr<PortRange> ParsePortRange(std::string_view text);

inline constexpr int kAnyProtocol = -1;
// "any" (kAnyProtocol), "tcp", "udp", "icmp", "icmp6", or a number 0-255.
absl::StatusOr<int> ParseProtocol(std::string_view text);

// One classification rule, as configured.
struct ClassRule {
  std::string name;
  TrafficClass traffic_class = TrafficClass::kMigration;
  int protocol = kAnyProtocol;  // IP protocol number or kAnyProtocol
  IpPrefix src;                 // any when IsAny()
  IpPrefix dst;
  PortRange src_ports;  // any when IsAny()
  PortRange dst_ports;
  // Also match the opposite direction (dst -> src), i.e. the ACKs and other
  // return traffic of the flow the rule describes. See RuleMatch::reverse.
  bool bidirectional = true;
};

// What the compiled matcher relies on: src and dst of the same family when
// both are given, and port ranges only with a protocol that has ports (TCP,
// UDP, or any: the parser fills ports for TCP and UDP only).
struct RuleProblem {
  std::string field;  // "dst", "src_ports", ...
  std::string message;
};
std::optional<RuleProblem> CheckClassRule(const ClassRule& rule);
// The same as a status: "field: message".
absl::Status ValidateClassRule(const ClassRule& rule);

// The outcome of matching a flow key against the rules.
struct RuleMatch {
  int rule = -1;  // index in config order, -1 when no rule matched
  TrafficClass traffic_class = TrafficClass::kDefault;
  // The key matched the rule with source and destination swapped: it is the
  // return direction (ACKs) of the traffic the rule names. The flow table
  // records its class so both directions are accounted together, but only the
  // data direction is shaped: queuing ACKs behind the data they acknowledge
  // would only slow the migration and leak its rate changes into the reverse
  // direction. See QueueClass().
  bool reverse = false;

  bool matched() const { return rule >= 0; }
};

// The compiled rules. Matching is a linear scan over a small flat array of
// precomputed masks: a few dozen rules cost less than one hash lookup, never
// allocate, and keep "first match wins" obvious.
class RuleSet {
 public:
  RuleSet() = default;  // no rules: everything is default

  // Fails (naming the rule by index and name) when a rule is invalid.
  static absl::StatusOr<RuleSet> Compile(const std::vector<ClassRule>& rules);

  // For each rule in config order: the key as given, then (when the rule is
  // bidirectional) the key reversed. So an earlier rule's reverse match beats
  // a later rule's forward match, which keeps "first rule wins" literal.
  RuleMatch Match(const FlowKey& key) const;

  size_t size() const { return rules_.size(); }
  const std::string& name(size_t i) const { return names_[i]; }

 private:
  struct Compiled {
    // Address = 128 bits as two words compared under a mask; an IPv4 prefix
    // only uses the first 32 bits (FlowKey zeroes the other 12 bytes).
    uint64_t src_mask[2];
    uint64_t src_value[2];
    uint64_t dst_mask[2];
    uint64_t dst_value[2];
    uint16_t src_first, src_last, dst_first, dst_last;
    int16_t protocol;    // kAnyProtocol or number
    uint8_t ip_version;  // 0: either family
    bool has_ports;      // a port range is set: only TCP/UDP flows can match
    bool bidirectional;
    TrafficClass traffic_class;
  };
  static bool MatchesDirection(const Compiled& r, uint8_t protocol, uint8_t ip_version,
                               const uint8_t* src, const uint8_t* dst, uint16_t sport,
                               uint16_t dport);

  std::vector<Compiled> rules_;
  std::vector<std::string> names_;
};

// ---------------------------------------------------------------------------
// Payload signatures (Hyperscan)

struct SignatureSpec {
  std::string name;
  // PCRE syntax as Hyperscan accepts it; compiled with HS_FLAG_DOTALL (binary
  // payloads: '.' must match '\n') and HS_FLAG_SINGLEMATCH (we only need to
  // know whether it matched).
  std::string pattern;
  TrafficClass traffic_class = TrafficClass::kMigration;
};

// Built-in signatures (classify.builtin_signatures):
//  - "qemu-migration-stream": QEMU_VM_FILE_MAGIC "QEVM" then
//    QEMU_VM_FILE_VERSION 3, both big-endian, at the start of the main stream.
//  - "qemu-multifd-channel": MULTIFD_MAGIC 0x11223344 then MULTIFD_VERSION 1,
//    big-endian, at the start of each extra multifd channel. The version word
//    makes the 4-byte magic 8 bytes long, which makes a chance match on an
//    unrelated stream's first bytes negligible.
std::vector<SignatureSpec> BuiltinSignatures();

// What the compiler says about one pattern, without building a database.
struct SignaturePatternInfo {
  uint32_t min_length = 0;  // shortest payload prefix that can match
  // The pattern can only match at the very start of the payload ('^' or '\A'
  // after optional leading "(?flags)", and no top-level alternation). Such
  // patterns are only applied at the start of a stream; see SignatureScanner.
  bool anchored = false;
};

// Hyperscan's verdict on one pattern: its message on a syntax error, and an
// error too for patterns that match the empty payload (they would claim
// every flow).
absl::StatusOr<SignaturePatternInfo> InspectSignaturePattern(const std::string& pattern);

// The result of a payload scan.
struct SignatureMatch {
  uint32_t signature = 0;  // index in the database's signature order
  TrafficClass traffic_class = TrafficClass::kDefault;
  std::string_view name;  // valid while the scanner/database lives
};

class SignatureScanner;

// The compiled database plus a prototype scratch. Compiled once at start:
// serialized Hyperscan databases are tied to the CPU platform they were built
// for, so they are never cached on disk. Copies share the same database.
class SignatureDatabase {
 public:
  SignatureDatabase() = default;  // empty: nothing ever matches

  // Errors name the signature (and its index) and carry Hyperscan's message.
  static absl::StatusOr<SignatureDatabase> Compile(std::vector<SignatureSpec> signatures);

  // A scanner with its own scratch, cloned from the prototype (hs_clone_scratch).
  // One per worker.
  absl::StatusOr<SignatureScanner> NewScanner() const;

  size_t size() const;
  bool empty() const { return size() == 0; }
  const SignatureSpec& signature(size_t i) const;
  bool anchored(size_t i) const;

  struct State;  // Hyperscan handles + specs; shared with the scanners

 private:
  explicit SignatureDatabase(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// Scans payloads against a SignatureDatabase with its own scratch space. Not
// thread-safe (the scratch is per worker); cheap to move. Keeps the database
// alive.
class SignatureScanner {
 public:
  SignatureScanner(SignatureScanner&&) noexcept;
  SignatureScanner& operator=(SignatureScanner&&) noexcept;
  ~SignatureScanner();

  // The first signature in database order that matches `payload`, if any.
  // `stream_start` says the payload begins a stream (the first payload packet
  // of a TCP flow, or any datagram): anchored signatures are only reported
  // then. Hyperscan's block mode anchors '^' at the start of every block, so
  // without this a later TCP segment that happened to begin with "QEVM" would
  // pass for a new migration stream. No allocation.
  std::optional<SignatureMatch> Scan(std::span<const uint8_t> payload, bool stream_start);

  // Scans that failed inside Hyperscan (never expected; counted, not thrown).
  uint64_t errors() const { return errors_; }

 private:
  friend class SignatureDatabase;
  struct ScratchDeleter {
    void operator()(void* scratch) const;
  };
  SignatureScanner(std::shared_ptr<const SignatureDatabase::State> state, void* scratch);

  std::shared_ptr<const SignatureDatabase::State> state_;
  std::unique_ptr<void, ScratchDeleter> scratch_;  // hs_scratch_t
  uint64_t errors_ = 0;
};

// ---------------------------------------------------------------------------
// Per-flow decision

struct ScanLimits {
  // Payload packets of a flow scanned before it is settled as default. The
  // QEMU headers are in the first payload packet; a few more let user
  // signatures match protocols that greet before they reveal themselves, and
  // cover a first segment that carried too little payload. 0 disables
  // signature scanning.
  uint32_t packets = 4;
  // Bytes scanned at the start of each of those packets: enough for every
  // header we look for; bounding it bounds the per-packet cost.
  uint32_t bytes = 64;
};

// How a flow's class was decided.
enum class ClassSource : uint8_t {
  kNew = 0,    // never seen: rules not evaluated yet
  kPending,    // no rule matched; still scanning payloads (class is default meanwhile)
  kRule,       // a rule matched (index = rule)
  kSignature,  // a signature matched (index = signature)
  kNoMatch,    // settled as default: no rule, and no signature within the scan limits
};
std::string_view ClassSourceName(ClassSource s);

// Per-flow classification state, kept in the flow table entry (8 bytes;
// value-initialised = kNew).
//
// State machine, driven by DecideFlowClass() for every packet of the flow:
//
//   kNew --rule matches--------------------------------------> kRule       (final)
//   kNew --no rule, no signatures or packets limit 0---------> kNoMatch    (final)
//   kNew --no rule-------------------------------------------> kPending    (this packet is
//                                                                           then scanned too)
//   kPending --payload packet, a signature matches-----------> kSignature  (final)
//   kPending --payload packet, no match, scanned < limit-----> kPending
//   kPending --payload packet, no match, scanned == limit----> kNoMatch    (final)
//   kPending --packet without payload (SYN, pure ACK)--------> kPending    (not counted)
//
// While kNew/kPending the class is default: the packets that precede the
// deciding one are forwarded undelayed. The deciding packet itself already
// gets the new class. Final states are never left (a flow re-created after
// idle eviction starts again at kNew), except at a reload (new rules and
// signatures): Classifier::Refresh.
//
// "Stream start" for anchored signatures is the first payload packet of a TCP
// flow as the gateway sees it (every datagram for other protocols). A flow
// picked up mid-stream (gateway restart, re-creation after eviction) has its
// first seen segment treated as the start; a false match would need the whole
// 8-byte header at a segment boundary, which we accept.
struct FlowClass {
  TrafficClass traffic_class = TrafficClass::kDefault;
  ClassSource source = ClassSource::kNew;
  uint8_t payloads_scanned = 0;  // kPending: payload packets scanned so far
  bool reverse = false;          // return direction of a classified flow
  // kRule: the rule's index. kSignature: the signature's id, which names it
  // across reloads (SignatureIds), not its place in the database.
  uint16_t index = 0;
  // The rules generation the state belongs to (the gateway worker's, bumped
  // by every reload, modulo kRulesEpochs) ...
  uint16_t rules_epoch : 15 = 0;
  // ... and whether the flow was counted as classified already, so a flow
  // decided again under new rules is counted once as a flow.
  uint16_t counted : 1 = 0;

  bool decided() const {
    return source == ClassSource::kRule || source == ClassSource::kSignature ||
           source == ClassSource::kNoMatch;
  }
};
static_assert(sizeof(FlowClass) == 8, "FlowClass lives in every flow table entry");
inline constexpr uint16_t kRulesEpochs = 1u << 15;

// The queue a packet of a flow in state `c` goes to: its class for the data
// direction, default for the return direction (see RuleMatch::reverse).
inline TrafficClass QueueClass(const FlowClass& c) {
  return c.reverse ? TrafficClass::kDefault : c.traffic_class;
}

// The state to give the opposite direction of a flow that a signature
// classified (rules see both directions themselves when bidirectional;
// signatures only see the direction carrying the header). Same class and
// index, marked reverse so it is accounted but not shaped. Default stays
// default.
FlowClass ReverseFlowClass(const FlowClass& data_direction);

// The whole classifier configuration.
struct ClassifierConfig {
  std::vector<ClassRule> rules;
  std::vector<SignatureSpec> signatures;  // from the config, in order
  bool builtin_signatures = true;
  ScanLimits limits;
};

// Config signatures first (first match wins, so they take precedence), then
// the built-ins that no config signature replaces by name.
std::vector<SignatureSpec> EffectiveSignatures(const ClassifierConfig& config);

// Signature ids that outlive a reload: a signature keeps its id for as long as
// the dataplane runs, by name, wherever it sits in a reloaded database, and an
// id is never given to another name. A flow's state (FlowClass::index) holds
// the id, so a flow a signature decided still finds its signature -- or finds
// it gone -- after a reload reordered, changed or removed signatures.
struct SignatureIds {
  absl::flat_hash_map<std::string, uint16_t> by_name;  // every name seen since start
  uint32_t next = 0;                                   // the next new name's id

  // The id of each name, in order: a known name keeps its id, a new one gets
  // `next`. Refused (nothing assigned) when the ids would run out: 65536
  // distinct signature names over the dataplane's life.
  absl::StatusOr<std::vector<uint16_t>> Assign(const std::vector<SignatureSpec>& signatures);
};

// Rules + signatures + limits, immutable, shared by all workers.
class Classifier {
 public:
  Classifier() = default;  // classifies everything as default
  // `ids`: the signature ids of the classifier this one replaces (a reload);
  // empty at start. The new classifier carries them on (signature_ids()).
  static absl::StatusOr<Classifier> Create(const ClassifierConfig& config,
                                           const SignatureIds& ids = {});

  const RuleSet& rules() const { return rules_; }
  const SignatureDatabase& signatures() const { return signatures_; }
  const ScanLimits& limits() const { return limits_; }

  absl::StatusOr<SignatureScanner> NewScanner() const { return signatures_.NewScanner(); }

  // One step of the state machine for a packet of the flow `key` whose
  // transport payload is `payload` (empty for SYNs, pure ACKs, later
  // fragments). Returns the new state; QueueClass() of it is where this packet
  // goes. Decided flows return at once, so the steady-state cost is a branch.
  FlowClass Decide(const FlowClass& state, const FlowKey& key, std::span<const uint8_t> payload,
                   SignatureScanner& scanner) const;

  // A flow's state decided under an earlier classifier (a reload), as this
  // one sees it, for the generation `epoch`; `key` is the flow's (its
  // direction). Every flow is decided again from kNew -- new rules first --
  // except one a signature decided that no rule of this classifier matches:
  // its first payload bytes are gone, so it keeps its signature while that
  // signature (by id, i.e. by name) is still loaded, and takes the class the
  // signature has now. A signature that is gone sends it back to kNew too, so
  // it is decided as a flow picked up mid-stream. `counted` stays. Lazily, at
  // the flow's next packet, so a reload costs the worker no walk over the
  // flow table.
  FlowClass Refresh(const FlowClass& c, const FlowKey& key, uint16_t epoch) const;

  // Where the signature matched / which rule, for logs and counters.
  std::string_view SourceName(const FlowClass& c) const;

  const SignatureIds& signature_ids() const { return ids_; }
  // The database index of signature id `id`, or -1 when it is not loaded.
  int32_t SignatureIndex(uint16_t id) const {
    return id < index_of_id_.size() ? index_of_id_[id] : -1;
  }

 private:
  RuleSet rules_;
  SignatureDatabase signatures_;
  ScanLimits limits_;
  SignatureIds ids_;
  std::vector<uint16_t> id_of_index_;  // by database index
  std::vector<int32_t> index_of_id_;   // by id; -1: not in this database
};

// The state machine itself, with the rule result supplied by the caller
// (RuleSet::Match of the flow's key; only consulted in state kNew). `scanner`
// may be null when the database is empty. A signature's decision carries its
// database index; Classifier::Decide is this with its own rules, database and
// limits, and turns that index into the signature's id.
FlowClass DecideFlowClass(const FlowClass& state, const RuleMatch& rule, uint8_t protocol,
                          std::span<const uint8_t> payload, SignatureScanner* scanner,
                          bool have_signatures, const ScanLimits& limits);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_CORE_CLASSIFIER_H_
