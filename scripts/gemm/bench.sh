#!/usr/bin/env bash
# bench.sh: ringtrain's GEMM vs OpenBLAS on the ResNet-18 convolution shapes
# (pkg/nn/internal/gemm/testdata/shapes.txt), interleaved in one run, medians.
# Installs gcc + libopenblas-dev with apt-get when they are missing, builds
# scripts/gemm/openblas_bench.c into bin/, then runs the Go comparison test.
#
# Environment: GEMM_THREADS (default: all CPUs), GEMM_ROUNDS (3), GEMM_REPS (5),
# OPENBLAS_CORETYPE (default SapphireRapids: OpenBLAS 0.3.21 does not detect
# recent AVX-512 CPUs and falls back to slow generic kernels), GO (go).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

have_openblas() { echo '#include <cblas.h>' | gcc -E -x c - >/dev/null 2>&1; }
if ! command -v gcc >/dev/null || ! have_openblas; then
  if ! command -v apt-get >/dev/null; then
    echo "bench-gemm: needs gcc and OpenBLAS (cblas.h, libopenblas); install them" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  for try in 1 2 3 4 5; do  # the apt lock may be held by another install
    if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc libopenblas-dev >/dev/null; then break; fi
    [ "$try" = 5 ] && { echo "bench-gemm: apt-get install libopenblas-dev failed" >&2; exit 1; }
    $SUDO apt-get update -qq || true
    sleep 10
  done
fi

mkdir -p bin
gcc -O2 -Wall -o bin/openblas_bench scripts/gemm/openblas_bench.c -lopenblas
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SapphireRapids}
export GEMM_OPENBLAS_BENCH=$PWD/bin/openblas_bench
CGO_ENABLED=0 $GO test -count=1 -timeout 30m -run '^TestCompareOpenBLAS$' -v ./pkg/nn/internal/gemm/ |
  grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS$' -e '^ok '
