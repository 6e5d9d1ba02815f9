# pkg/gpu: the CUDA backend. `make gpu-devbin` builds what scripts/gpu-check.sh
# runs on a GPU machine; `make gpu-check` runs it (needs a GPU).
GO ?= go

.PHONY: gpu-test gpu-devbin gpu-check
gpu-test:
	CGO_ENABLED=0 $(GO) test -count=1 ./pkg/gpu/... ./cmd/gpubench/...

gpu-devbin:
	mkdir -p .devbin
	CGO_ENABLED=0 $(GO) test -c -o .devbin/gpu.test ./pkg/gpu
	CGO_ENABLED=0 $(GO) build -o .devbin/gpubench ./cmd/gpubench

gpu-check: gpu-devbin
	./scripts/gpu-check.sh

# The distributed GPU check (scripts/gpu-ring.sh): coordinator, worker and
# the pkg/gpu test binary, stripped and gzip'd so they travel small.
.PHONY: gpu-ringbin gpu-ring
gpu-ringbin:
	mkdir -p .devbin/ring
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o .devbin/ring/ ./cmd/coordinator ./cmd/worker
	CGO_ENABLED=0 $(GO) test -c -ldflags "-s -w" -o .devbin/ring/gpu.test ./pkg/gpu
	gzip -f .devbin/ring/coordinator .devbin/ring/worker .devbin/ring/gpu.test

gpu-ring: gpu-ringbin
	./scripts/gpu-ring.sh

# The same-host GPU ring (scripts/gpu-ipc.sh): ipcbench (host path vs
# device ring, two processes on one GPU), coordinator and worker, stripped
# and gzip'd so they travel small.
.PHONY: gpu-ipcbin gpu-ipc
gpu-ipcbin:
	mkdir -p .devbin/ipc
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o .devbin/ipc/ ./cmd/coordinator ./cmd/worker ./pkg/gpu/internal/ipcbench
	gzip -f .devbin/ipc/coordinator .devbin/ipc/worker .devbin/ipc/ipcbench

gpu-ipc: gpu-ipcbin
	./scripts/gpu-ipc.sh

# The short, focused GPU check (scripts/gpu-quick.sh): the pkg/gpu test
# binary and gpubench, stripped and gzip'd.
.PHONY: gpu-quickbin
gpu-quickbin:
	mkdir -p .devbin/q
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o .devbin/q/ ./cmd/gpubench
	CGO_ENABLED=0 $(GO) test -c -ldflags "-s -w" -o .devbin/q/gpu.test ./pkg/gpu
	gzip -f .devbin/q/gpubench .devbin/q/gpu.test

# Time to accuracy (scripts/gpu-tta.sh): ours vs PyTorch (eager and
# torch.compile) on the recipe examples/cifar10-fast.yaml. `make gpu-ttabin`
# builds what travels to a GPU machine; `make gpu-tta-parts` splits the
# CIFAR-10 archive (CIFAR_ARCHIVE) into parts small enough to carry one per
# call; `make gpu-tta` runs it here (needs a GPU, or DEVICE=cpu for a dry run).
CIFAR_ARCHIVE ?= ../shared/data/cifar-10-binary.tar.gz
.PHONY: gpu-ttabin gpu-tta-parts gpu-tta
gpu-ttabin:
	mkdir -p .devbin/tta
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o .devbin/tta/ ./cmd/coordinator ./cmd/worker
	gzip -f .devbin/tta/coordinator .devbin/tta/worker

gpu-tta-parts:
	rm -rf .devbin/cifar-parts && mkdir -p .devbin/cifar-parts
	split -b 45M -d $(CIFAR_ARCHIVE) .devbin/cifar-parts/part-

gpu-tta: gpu-ttabin
	ARCHIVE=$(CIFAR_ARCHIVE) ./scripts/gpu-tta.sh

# The GPU job against its kernels (scripts/gpu-job.sh): the job's images/s
# (coordinator --workers 1 --device cuda --precision bf16) vs gpubench's,
# eager and with CUDA graphs. `make gpu-jobbin` builds what travels
# (coordinator, worker, gpubench, the pkg/gpu test binary; stripped,
# gzip'd); carry .devbin/job (and .devbin/cifar-parts for real data).
.PHONY: gpu-jobbin gpu-job
gpu-jobbin:
	mkdir -p .devbin/job
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o .devbin/job/ ./cmd/coordinator ./cmd/worker ./cmd/gpubench
	CGO_ENABLED=0 $(GO) test -c -ldflags "-s -w" -o .devbin/job/gpu.test ./pkg/gpu
	gzip -f .devbin/job/coordinator .devbin/job/worker .devbin/job/gpubench .devbin/job/gpu.test

gpu-job: gpu-jobbin
	./scripts/gpu-job.sh

# A whole device session in four back-to-back calls (scripts/gpu-round.sh;
# docs/gpu.md "A device session"): `make gpu-roundbin` packs every binary
# the GPU scripts run into one xz stream and cuts the CIFAR-10 archive so
# that each call stays under the device tool's 64 MiB, and prints what each
# call carries.
.PHONY: gpu-roundbin
gpu-roundbin:
	ARCHIVE=$(CIFAR_ARCHIVE) GO=$(GO) ./scripts/gpu/round-pack.sh
