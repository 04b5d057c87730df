#include "dataplane/ports.h"

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"

namespace shroud {
namespace {

// 0x6D5A repeated: Toeplitz hashing with it gives the same queue for (a, b)
// and (b, a), so a worker sees both directions of its connections.
uint8_t kSymmetricRssKey[40] = {
    0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A,
    0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A,
    0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A, 0x6D, 0x5A};

}  // namespace

absl::Status SetUpPort(uint16_t port, const DataplaneSection& dp, const PortSetup& setup,
                       rte_mempool* pool) {
  rte_eth_dev_info info;
  if (int rc = rte_eth_dev_info_get(port, &info); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, ": rte_eth_dev_info_get: ", rte_strerror(-rc)));
  }
  if (setup.rx_queues > info.max_rx_queues) {
    return absl::InvalidArgumentError(absl::StrCat(
        "port ", port, " (", info.driver_name, ") has at most ", info.max_rx_queues,
        " rx queue(s), dataplane.rx_queues asks for ", setup.rx_queues,
        " (net_pcap: one rx queue per rx_pcap= argument; net_af_packet: qpairs=N)"));
  }
  rte_eth_conf conf = {};
  if (setup.rss && setup.rx_queues > 1) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = kSymmetricRssKey;
    conf.rx_adv_conf.rss_conf.rss_key_len = sizeof(kSymmetricRssKey);
    conf.rx_adv_conf.rss_conf.rss_hf =
        (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    if (conf.rx_adv_conf.rss_conf.rss_hf == 0) {
      // Virtual devices spread by their own means (af_packet fanout, one
      // pcap file per queue); they take no RSS configuration.
      conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
      conf.rx_adv_conf.rss_conf.rss_key = nullptr;
      conf.rx_adv_conf.rss_conf.rss_key_len = 0;
      LOG(WARNING) << "port " << port << " (" << info.driver_name
                   << "): no RSS offload; queues get whatever the driver spreads";
    }
  }
  if (int rc = rte_eth_dev_configure(port, setup.rx_queues, setup.tx_queues, &conf); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, " (", info.driver_name,
                                            "): rte_eth_dev_configure(", setup.rx_queues, " rx, ",
                                            setup.tx_queues, " tx): ", rte_strerror(-rc)));
  }
  uint16_t rx_desc = static_cast<uint16_t>(dp.rx_descriptors);
  uint16_t tx_desc = static_cast<uint16_t>(dp.tx_descriptors);
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rx_desc, &tx_desc); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, ": descriptor counts: ", rte_strerror(-rc)));
  }
  const int socket = rte_eth_dev_socket_id(port);
  const unsigned sock = socket < 0 ? SOCKET_ID_ANY : static_cast<unsigned>(socket);
  for (uint16_t q = 0; q < setup.rx_queues; ++q) {
    if (int rc = rte_eth_rx_queue_setup(port, q, rx_desc, sock, nullptr, pool); rc != 0) {
      return absl::InternalError(absl::StrCat("port ", port, ": rx queue ", q, " setup (", rx_desc,
                                              " descriptors): ", rte_strerror(-rc)));
    }
  }
  for (uint16_t q = 0; q < setup.tx_queues; ++q) {
    if (int rc = rte_eth_tx_queue_setup(port, q, tx_desc, sock, nullptr); rc != 0) {
      return absl::InternalError(absl::StrCat("port ", port, ": tx queue ", q, " setup (", tx_desc,
                                              " descriptors): ", rte_strerror(-rc)));
    }
  }
  if (int rc = rte_eth_dev_start(port); rc != 0) {
    return absl::InternalError(absl::StrCat("port ", port, " (", info.driver_name,
                                            "): start failed: ", rte_strerror(-rc)));
  }
  // A bump in the wire forwards, and a tap sees, every frame, whoever it is
  // addressed to.
  if (int rc = rte_eth_promiscuous_enable(port); rc != 0 && rc != -ENOTSUP) {
    LOG(WARNING) << "port " << port << ": promiscuous mode: " << rte_strerror(-rc);
  }
  char name[RTE_ETH_NAME_MAX_LEN] = "?";
  rte_eth_dev_get_name_by_port(port, name);
  LOG(INFO) << absl::StrFormat("port %u: %s (%s), %u rx queue(s) of %u descriptors, %u tx queue(s)",
                               port, name, info.driver_name, setup.rx_queues, rx_desc,
                               setup.tx_queues);
  return absl::OkStatus();
}

PortCounters ReadPortCounters(uint16_t port) {
  PortCounters pc;
  pc.port = port;
  char name[RTE_ETH_NAME_MAX_LEN] = "?";
  rte_eth_dev_get_name_by_port(port, name);
  pc.name = name;
  rte_eth_stats st;
  if (rte_eth_stats_get(port, &st) == 0) {
    pc.rx_packets = st.ipackets;
    pc.rx_bytes = st.ibytes;
    pc.tx_packets = st.opackets;
    pc.tx_bytes = st.obytes;
    pc.rx_missed = st.imissed;
    pc.rx_errors = st.ierrors;
    pc.tx_errors = st.oerrors;
    pc.rx_nombuf = st.rx_nombuf;
  }
  return pc;
}

void StopPorts(uint16_t ports) {
  for (uint16_t port = 0; port < ports; ++port) {
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
  }
}

bool PortTimestampsAreCaptureTimes(uint16_t port) {
  rte_eth_dev_info info;
  if (rte_eth_dev_info_get(port, &info) != 0 || info.driver_name == nullptr) return false;
  return std::strcmp(info.driver_name, "net_pcap") == 0;
}

}  // namespace shroud
