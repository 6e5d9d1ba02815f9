#!/bin/sh
# check.sh [DIR] — run the Go PyTorch-parity test (pkg/nn, TestParity) against
# the golden files in DIR (default: the committed pkg/nn/testdata/parity) and
# end with the test's summary line
#
#   parity: N checks, F failed, worst relative error E
#
# The exit status is the test's: non-zero when any check failed (or when the
# test could not run to its summary). GO selects the go command (default go).
set -u
GO=${GO:-go}
root=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
dir=${1:-}
if [ -n "$dir" ]; then
	dir=$(cd "$dir" && pwd) || { echo "parity: no golden directory $1" >&2; exit 1; }
fi
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT
cd "$root" || exit 1
PARITY_DIR=$dir "$GO" test -count=1 -timeout 60m -run '^TestParity$' -v ./pkg/nn/ >"$log" 2>&1
rc=$?
grep -v '^parity: [0-9]* checks' "$log"
line=$(grep '^parity: [0-9]* checks' "$log" | tail -n 1)
if [ -z "$line" ]; then
	echo "parity: the Go parity test stopped (exit status $rc) before printing its summary"
	exit 1
fi
echo "$line"
exit $rc
