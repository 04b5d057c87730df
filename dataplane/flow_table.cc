#include "dataplane/flow_table.h"

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>

#include "absl/strings/str_cat.h"

namespace shroud {
namespace {

// rte_hash has specialised compares for some key sizes, not for 40 bytes, so
// it would call libc memcmp; five 8-byte words compare in a few instructions.
int FlowKeyCompare(const void* a, const void* b, size_t) {
  const auto* x = static_cast<const uint64_t*>(a);
  const auto* y = static_cast<const uint64_t*>(b);
  static_assert(sizeof(FlowKey) == 5 * sizeof(uint64_t));
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) != 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerFlowTable>> WorkerFlowTable::Create(const std::string& name,
                                                             uint32_t max_flows, int socket_id) {
  if (max_flows < 8) {
    return absl::InvalidArgumentError(absl::StrCat("flow table needs at least 8 entries, got ",
                                                   max_flows));
  }
  rte_hash_parameters params = {};
  params.name = name.c_str();
  params.entries = max_flows;
  params.key_len = sizeof(FlowKey);
  params.hash_func = rte_hash_crc;
  params.hash_func_init_val = 0;
  params.socket_id = socket_id;
  // Without the extendable bucket table a cuckoo table can refuse a key well
  // before it holds max_flows; with it, the configured limit is the real one.
  params.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
  std::unique_ptr<WorkerFlowTable> table(new WorkerFlowTable());
  table->hash_ = rte_hash_create(&params);
  if (table->hash_ == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rte_hash_create(", name, ", ", max_flows, " entries) failed: ",
                     rte_strerror(rte_errno),
                     " (with --no-huge, give EAL more memory with -m MB or lower flows.max_flows)"));
  }
  rte_hash_set_cmp_func(table->hash_, FlowKeyCompare);
  table->entries_ = std::make_unique<FlowEntry[]>(max_flows);
  table->capacity_ = max_flows;
  return table;
}

WorkerFlowTable::~WorkerFlowTable() {
  if (hash_ != nullptr) rte_hash_free(hash_);
}

FlowEntry* WorkerFlowTable::Find(const FlowKey& key) {
  const int32_t pos = rte_hash_lookup(hash_, &key);
  return pos < 0 ? nullptr : &entries_[pos];
}

void WorkerFlowTable::LookupBulk(const FlowKey* const* keys, uint32_t n, FlowEntry** out) {
  int32_t positions[RTE_HASH_LOOKUP_BULK_MAX];
  if (n == 0) return;
  if (rte_hash_lookup_bulk(hash_, reinterpret_cast<const void**>(const_cast<const FlowKey**>(keys)),
                           n, positions) != 0) {
    for (uint32_t i = 0; i < n; ++i) out[i] = Find(*keys[i]);
    return;
  }
  for (uint32_t i = 0; i < n; ++i) {
    out[i] = positions[i] < 0 ? nullptr : &entries_[positions[i]];
  }
}

FlowEntry* WorkerFlowTable::FindOrAdd(const FlowKey& key, uint64_t now_ns, bool* created) {
  *created = false;
  const hash_sig_t sig = rte_hash_hash(hash_, &key);
  int32_t pos = rte_hash_lookup_with_hash(hash_, &key, sig);
  if (pos >= 0) return &entries_[pos];
  pos = rte_hash_add_key_with_hash(hash_, &key, sig);
  if (pos < 0 || static_cast<uint32_t>(pos) >= capacity_) {
    if (pos >= 0) rte_hash_del_key_with_hash(hash_, &key, sig);  // never expected
    ++counters_.table_full;
    return nullptr;
  }
  FlowEntry& e = entries_[pos];
  e = FlowEntry{};
  e.key = key;
  e.in_use = true;
  e.last_seen_ns = now_ns;
  ++size_;
  ++counters_.created;
  *created = true;
  return &e;
}

void WorkerFlowTable::Evict(FlowEntry& e) {
  rte_hash_del_key(hash_, &e.key);
  e.in_use = false;
  --size_;
  ++counters_.evicted_idle;
}

}  // namespace shroud
