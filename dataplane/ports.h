// Port bring-up and port statistics: the DPDK ethdev calls of the dataplane's
// shell, shared by the gateway and the tap.
#ifndef SHROUD_DATAPLANE_PORTS_H_
#define SHROUD_DATAPLANE_PORTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/core/gateway_config.h"
#include "dataplane/counters_json.h"

struct rte_mempool;

namespace shroud {

struct PortSetup {
  uint16_t rx_queues = 1;
  uint16_t tx_queues = 1;  // 0: receive only (a tap)
  // Spread flows over the rx queues with a symmetric RSS key (both directions
  // of a connection on the same queue, hence the same worker). Only with
  // rx_queues > 1.
  bool rss = false;
};

// Configures, starts and puts `port` in promiscuous mode. Errors name the port,
// its driver and the call that failed.
absl::Status SetUpPort(uint16_t port, const DataplaneSection& dp, const PortSetup& setup,
                       rte_mempool* pool);

// rte_eth_stats of a port, with its name.
PortCounters ReadPortCounters(uint16_t port);

// Stops and closes every port (net_pcap flushes and closes its files then).
void StopPorts(uint16_t ports);

// True when `port`'s driver stores the capture time in the rx timestamp
// (net_pcap: microseconds since the epoch).
bool PortTimestampsAreCaptureTimes(uint16_t port);

}  // namespace shroud

#endif  // SHROUD_DATAPLANE_PORTS_H_
