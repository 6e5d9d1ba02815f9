#!/usr/bin/env bash
# round-pack.sh (`make gpu-roundbin`): what a device session carries for
# scripts/gpu-round.sh, sized to the device tool's limit of 64 MiB a call
# (the working tree that travels plus the carried paths):
#   .devbin/round/bins.tar.xz  every binary the GPU scripts run (coordinator,
#                              worker, gpubench, ipcbench, arbench, the
#                              pkg/gpu test binary), stripped, one xz stream;
#   .devbin/round/gloo.py      the gloo peer of arbench (../shared/reference);
#   .devbin/round/part-NN      the CIFAR-10 archive cut so that call 1 carries
#                              the binaries and part-00 and each later call
#                              one part, each call under the limit.
# Prints the carry list of each call. ARCHIVE (the archive), LIMIT (bytes a
# call may carry, 64 MiB) and MARGIN (bytes kept free, 2 MiB) can be set.
set -euo pipefail
D=.devbin/round
ARCHIVE=${ARCHIVE:-../shared/data/cifar-10-binary.tar.gz}
GLOO=${GLOO:-../shared/reference/torch_gloo_allreduce.py}
LIMIT=${LIMIT:-$((64 << 20))}
MARGIN=${MARGIN:-$((2 << 20))}
GO=${GO:-go}
if [ "${KEEP_BINS:-0}" = 1 ] && [ -f "$D/bins.tar.xz" ]; then
  rm -f "$D"/part-*
else
  rm -rf "$D" && mkdir -p "$D/build"
  CGO_ENABLED=0 $GO build -ldflags "-s -w" -o "$D/build/" ./cmd/coordinator ./cmd/worker ./cmd/gpubench \
    ./pkg/gpu/internal/ipcbench ./pkg/allreduce/internal/arbench
  CGO_ENABLED=0 $GO test -c -ldflags "-s -w" -o "$D/build/gpu.test" ./pkg/gpu
  # One xz stream over all of them: they share most of their code, so this
  # is about a third of their gzip'd sizes.
  (cd "$D/build" && tar -cf - -- *) | xz -9 -T0 >"$D/bins.tar.xz"
  rm -rf "$D/build"
fi
[ -f "$GLOO" ] && cp "$GLOO" "$D/gloo.py"

# What travels besides the carried paths: tracked files and untracked ones
# git does not ignore.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
room=$((LIMIT - MARGIN - tree))
first=$((room - $(stat -c %s "$D/bins.tar.xz") - $(stat -c %s "$D/gloo.py" 2>/dev/null || echo 0)))
[ "$first" -gt $((1 << 20)) ] || { echo "round-pack: the tree ($tree bytes) and binaries leave no room for data"; exit 1; }
if [ -f "$ARCHIVE" ]; then
  size=$(stat -c %s "$ARCHIVE")
  off=0 i=0 n=$first
  while [ "$off" -lt "$size" ]; do
    dd if="$ARCHIVE" of="$D/part-$(printf %02d $i)" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$n" status=none
    off=$((off + n)) i=$((i + 1)) n=$room
  done
  echo "round-pack: $ARCHIVE ($size bytes, SHA-256 $(sha256sum "$ARCHIVE" | cut -c1-16)...) in $i parts"
else
  echo "round-pack: no archive at $ARCHIVE: the calls carry no data (the real-data stages will say so)"
fi
echo "round-pack: tree $tree bytes, room per call $room bytes; carry, one call each, back to back:"
shopt -s nullglob
parts=("$D"/part-*)
[ ${#parts[@]} -gt 0 ] || echo "  $D/bins.tar.xz$([ -f "$D/gloo.py" ] && echo " $D/gloo.py") (no data)"
for p in "${parts[@]}"; do
  if [ "$p" = "$D/part-00" ]; then
    c=("$D/bins.tar.xz" "$p"); [ -f "$D/gloo.py" ] && c+=("$D/gloo.py")
  else
    c=("$p")
  fi
  echo "  [$(du -cb "${c[@]}" | tail -1 | cut -f1) bytes] ${c[*]}"
done
