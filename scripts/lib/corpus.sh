# shellcheck shell=bash
# The labelled corpus used by train-default-model.sh and evaluate-detectors.sh:
# sets the arrays `mig` (CORPUS/mig-*.pcap) and `bg` (CORPUS/bg-*.pcap and the
# public captures in TRACES), or fails with a message when there is no migration.
collect_corpus() {
  local corpus=$1 traces=$2
  shopt -s nullglob
  mig=("$corpus"/mig-*.pcap)
  bg=("$corpus"/bg-*.pcap "$traces"/*.pcap)
  shopt -u nullglob
  if [ ${#mig[@]} -eq 0 ]; then
    echo "$(basename "$0"): no $corpus/mig-*.pcap; record them with scripts/record-corpus.sh" >&2
    return 1
  fi
}
