#!/usr/bin/env bash
# The main job: set up and build shroud, then analyse real captures shipped in
# the repo and print the adversary's verdict table: a real QEMU live migration
# recorded with background traffic (tests/data/migration-r8-light.pcap) and a
# real background-only capture (tests/data/background-medium.pcap).
#
#   scripts/demo.sh [CAPTURE...]     (default: the two shipped captures)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

scripts/setup.sh --build-dir build >&2
if [ $# -eq 0 ]; then
  set -- tests/data/migration-r8-light.pcap tests/data/background-medium.pcap
fi
echo "== shroud analyze $* ==" >&2
build/shroud analyze "$@"
