#!/usr/bin/env bash
# Installs what shroud needs on Debian 12 (as root) and builds it with meson.
# Idempotent: installs only missing packages, configures the build dir once.
#
#   scripts/setup.sh [--build-dir DIR] [--no-build] [--with-capture-tools] [--with-bench-tools]
#
# --with-capture-tools also installs what scripts/record-migration.sh,
# scripts/testbed and scripts/evaluate need (QEMU, tcpdump, iperf3, nginx,
# curl, socat, matplotlib, ...); --with-bench-tools what the
# bench scripts compare against (tshark, hyperfine). The tests need neither.
# The base set includes iperf3, ethtool and jq for the dataplane's netns test.
set -euo pipefail

usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; }

build_dir=build
do_build=1
capture_tools=0
bench_tools=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --with-capture-tools) capture_tools=1; shift ;;
    --with-bench-tools) bench_tools=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)

# Build and test dependencies. Boost 1.81 (not the default 1.74) because
# Boost.Math's Kolmogorov-Smirnov distribution arrived in 1.75.
packages=(
  build-essential meson ninja-build pkg-config python3
  libdpdk-dev dpdk libhyperscan-dev
  libabsl-dev libgflags-dev libgoogle-glog-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcap-dev libboost1.81-dev nlohmann-json3-dev libtoml11-dev libsodium-dev
  # shroud-control's HTTP API; curl for the demo and for users of the API
  libcpp-httplib-dev curl
  clang libclang-rt-14-dev
  # setpriv (the control socket refuses other users: tested as uid 65534)
  util-linux
  # end-to-end tests of the dataplane: real kernel TCP across namespaces
  iproute2 ethtool iperf3 jq
  # the dashboard's browser test (tests/dashboard_browser_test.sh): headless
  # chromium driven over the DevTools pipe (python3 only, no websocket module)
  chromium
)
# dpdk-dev ships dpdk-testpmd, the baseline of scripts/bench-dataplane.sh.
[ "$bench_tools" = 1 ] && packages+=(tshark hyperfine iproute2 dpdk-dev)
if [ "$capture_tools" = 1 ]; then
  # shellcheck disable=SC1091
  . "$here/scripts/lib/netns.sh" 2>/dev/null || true
  # shellcheck disable=SC2206
  packages+=(${SHROUD_CAPTURE_PACKAGES:-qemu-system-x86 tcpdump iperf3 nginx-light curl ethtool iproute2})
  # scripts/testbed and scripts/evaluate: the dashboard forwarder, the plots
  packages+=(socat python3-matplotlib python3-numpy)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: missing packages: ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # tshark asks whether non-root users may capture; the default (no) is fine.
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "$do_build" = 1 ]; then
  cd "$here"
  if [ ! -f "$build_dir/build.ninja" ]; then
    meson setup "$build_dir" --buildtype=debugoptimized
  fi
  meson compile -C "$build_dir" -j "$(nproc)"
fi
