#!/usr/bin/env bash
# The detector figures in the README: `shroud eval` over the recorded corpus
# (data/captures: real QEMU migrations with real background traffic, and
# background-only captures) plus the public background captures. Prints the
# tables and writes CSV to results/detectors/.
#
#   scripts/evaluate-detectors.sh [--build-dir build] [--corpus data/captures] [shroud eval options]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=build corpus=data/captures
traces=${SHROUD_SHARED_TRACES:-$here/../shared/traces/public}
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
# shellcheck source=scripts/lib/corpus.sh
. "$here/scripts/lib/corpus.sh"
collect_corpus "$corpus" "$traces" || exit 1
start=$(date +%s)
"$build/shroud" eval --migration "${mig[@]}" --background "${bg[@]}" \
  --csv_dir results/detectors "${extra[@]}"
echo "(${#mig[@]} migration captures, ${#bg[@]} background captures; $(($(date +%s) - start)) s on $(nproc) cores, $(uname -m))"
