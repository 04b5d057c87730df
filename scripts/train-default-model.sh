#!/usr/bin/env bash
# Regenerates conf/maxent-default.json, the maximum-entropy model compiled into
# `shroud`, from the recorded corpus (data/captures, made by
# scripts/record-corpus.sh) plus the public background captures in
# ../shared/traces/public. Rebuild afterwards to embed the new model.
#
#   scripts/train-default-model.sh [--build-dir build] [--corpus data/captures] [--out conf/maxent-default.json]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=build corpus=data/captures out=conf/maxent-default.json
traces=${SHROUD_SHARED_TRACES:-$here/../shared/traces/public}
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train-default-model.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/lib/corpus.sh
. "$here/scripts/lib/corpus.sh"
collect_corpus "$corpus" "$traces" || exit 1
"$build/shroud" train --migration "${mig[@]}" --background "${bg[@]}" -o "$out" \
  --comment "default model: scripts/train-default-model.sh on ${#mig[@]} recorded migration captures (data/captures) and ${#bg[@]} background captures (data/captures/bg-*, shared/traces/public)"
