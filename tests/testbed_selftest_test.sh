#!/usr/bin/env bash
# scripts/testbed selftest as a test: the namespaces, the gateway pair on
# af_packet, the user-space WAN with its emulated delay, the tap's
# shroud-control listing an iperf3 flow, and nothing left after `down`.
#
#   tests/testbed_selftest_test.sh BUILD_DIR
# Needs root (skips with exit 77 otherwise, as the selftest itself does).
set -euo pipefail
build=$(cd "${1:?usage: testbed_selftest_test.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/shroud-testbed-selftest.XXXXXX)
trap 'rm -rf "$work"' EXIT
SHROUD_TESTBED_DIR=$work/testbed SHROUD_BUILD_DIR=$build "$root/scripts/testbed" selftest
