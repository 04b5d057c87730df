# Counted checks for the shell tests (sourced; bash). Each test ends by
# printing "$passed passed, $failed failed" and failing when $failed > 0.
#   ok NAME               a check passed
#   bad NAME [DETAIL]     a check failed; DETAIL (a command's output, a log)
#                         follows indented, its last 25 lines (where errors are)
#   skip_check NAME       a check that could not be judged here (counted; the
#                         test decides what a skip means for its exit status)
passed=0 failed=0 skipped=0
ok() { echo "ok   - $1"; passed=$((passed + 1)); }
bad() {
    echo "FAIL - $1"
    if [[ -n ${2:-} ]]; then tail -n 25 <<<"$2" | sed 's/^/       /'; fi
    failed=$((failed + 1))
}
skip_check() { echo "skip - $1"; skipped=$((skipped + 1)); }
