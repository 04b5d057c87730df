// Test frames in and out of DPDK rings (the rx/tx rings behind
// rte_eth_from_rings ports), for the in-process dataplane tests.
#ifndef SHROUD_TESTS_RING_FRAMES_H_
#define SHROUD_TESTS_RING_FRAMES_H_

#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/frame_builder.h"

namespace shroud::test_frames {

// A copy of `f` in a fresh mbuf from `pool`; null when the pool is empty or
// the frame does not fit one segment.
inline rte_mbuf* FrameToMbuf(rte_mempool* pool, const Frame& f) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (m == nullptr) return nullptr;
  char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(f.size()));
  if (p == nullptr) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  std::memcpy(p, f.data(), f.size());
  return m;
}

// Enqueues a copy of every frame; a failure is a test failure.
inline void InjectFrames(rte_mempool* pool, rte_ring* ring, const std::vector<Frame>& frames) {
  for (const Frame& f : frames) {
    rte_mbuf* m = FrameToMbuf(pool, f);
    ASSERT_NE(m, nullptr);
    ASSERT_EQ(rte_ring_enqueue(ring, m), 0);
  }
}

// Everything in `ring`, as frames, in order; the mbufs are freed.
inline std::vector<Frame> DrainFrames(rte_ring* ring) {
  std::vector<Frame> out;
  void* obj = nullptr;
  while (rte_ring_dequeue(ring, &obj) == 0) {
    auto* m = static_cast<rte_mbuf*>(obj);
    const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*);
    out.emplace_back(d, d + rte_pktmbuf_data_len(m));
    rte_pktmbuf_free(m);
  }
  return out;
}

// Starts EAL for an in-process test: --no-huge with `memory_mb`, one lcore,
// no shared config and a per-process file prefix (tests run in parallel).
// False when EAL cannot start here; the caller then exits 77 (skipped).
inline bool StartTestEal(const std::string& name, int memory_mb) {
  std::vector<std::string> args = {name, "--no-huge", "-m", std::to_string(memory_mb),
                                   "--no-shconf", "--no-pci", "--no-telemetry", "-l", "0",
                                   "--file-prefix=" + name + "_" + std::to_string(getpid()),
                                   "--log-level=warning"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return rte_eal_init(static_cast<int>(argv.size()), argv.data()) >= 0;
}

// A started ethdev port on `rx`/`tx` (one queue each, 1024 descriptors);
// its port id, or -1 when any step failed.
inline int StartRingPort(const std::string& name, rte_ring* rx, rte_ring* tx, rte_mempool* pool) {
  const int port = rte_eth_from_rings(name.c_str(), &rx, 1, &tx, 1, SOCKET_ID_ANY);
  if (port < 0) return -1;
  rte_eth_conf conf = {};
  const auto p = static_cast<uint16_t>(port);
  const bool ok = rte_eth_dev_configure(p, 1, 1, &conf) == 0 &&
                  rte_eth_rx_queue_setup(p, 0, 1024, SOCKET_ID_ANY, nullptr, pool) == 0 &&
                  rte_eth_tx_queue_setup(p, 0, 1024, SOCKET_ID_ANY, nullptr) == 0 &&
                  rte_eth_dev_start(p) == 0;
  return ok ? port : -1;
}

}  // namespace shroud::test_frames

#endif  // SHROUD_TESTS_RING_FRAMES_H_
