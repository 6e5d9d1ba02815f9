# Cluster deployment: the Helm chart (deploy/helm/ringtrain) and the images
# (deploy/docker/Dockerfile). See docs/deploy.md.
.PHONY: test-deploy helm-template image test-image image-cuda cluster-e2e

# Loads, lints and renders the chart with the Helm Go SDK and checks the
# manifests as typed Kubernetes objects (a few seconds after compiling).
test-deploy:
	$(GO) test -count=1 ./deploy/...

# Like `helm template`: the manifests for HELM_VALUES (a values file; empty:
# the defaults), written under HELM_OUT.
HELM_OUT ?= $(or $(TMPDIR),/tmp)/ringtrain-helm
HELM_VALUES ?=
helm-template:
	rm -rf $(HELM_OUT) && mkdir -p $(HELM_OUT)
	RINGTRAIN_HELM_OUT=$(abspath $(HELM_OUT)) RINGTRAIN_HELM_VALUES=$(if $(HELM_VALUES),$(abspath $(HELM_VALUES))) \
		$(GO) test -count=1 -run TestRenderToDir ./deploy/helm/
	@find $(HELM_OUT) -type f | sort

# Images without docker and without pulling anything (buildah, podman and runc
# from Debian; as root): the CPU image (coordinator + worker + the glibc files
# their ELF headers ask for, from Debian's libc6) and an etcd image (etcd built
# from the go.etcd.io module in go.mod), FROM scratch, written as OCI archives
# under IMAGE_OUT (podman load -i FILE) after their binaries were started
# inside them. See docs/deploy.md.
IMAGE_OUT ?= build/images
image:
	$(GO) run ./deploy/image --out $(IMAGE_OUT)

# The image tests: a broken image (a runtime file left out) fails loudly;
# both images build, load into a fresh store and run. A few minutes.
test-image:
	RINGTRAIN_PODMAN=1 $(GO) test -count=1 -timeout 30m -v ./deploy/image/ ./deploy/podman/

# The CUDA image stays a Dockerfile: it starts from NVIDIA's CUDA runtime
# image (NVRTC, cuBLAS), so it needs docker with BuildKit and registry access.
IMAGE ?= ghcr.io/ringtrain/ringtrain
IMAGE_TAG ?= 0.1.0
DOCKER ?= docker
image-cuda:
	$(DOCKER) build -f deploy/docker/Dockerfile --target cuda -t $(IMAGE):$(IMAGE_TAG)-cuda .

# The chart run for real (issue 15): renders deploy/helm/ringtrain with the Helm
# Go SDK for deploy/cluster/testdata/values.yaml (3 coordinators, 3 CPU workers,
# bundled etcd, TLS) and runs every pod as a podman container on one podman
# network (deploy/cluster translates the manifests); trains a short job through
# failure drills (SIGKILL a worker, SIGKILL the raft leader, stop/start etcd,
# scale 3 -> 4 -> 2), exercises the probes, then the multi-node layout (2 pods
# x 2 worker processes). Root, podman/buildah/runc; about 10 minutes on 2 cores.
# The last line: "cluster: pods P, kills K, recovered R, samples lost L,
# duplicated D, first step after S s".
CLUSTER_LOG ?= $(or $(TMPDIR),/tmp)/ringtrain-cluster-e2e.log
cluster-e2e: image
	@RINGTRAIN_CLUSTER=1 RINGTRAIN_IMAGES=$(abspath $(IMAGE_OUT)) $(GO) test -count=1 -timeout 40m -v -run TestCluster ./deploy/cluster/ > $(CLUSTER_LOG) 2>&1; rc=$$?; \
		grep -E '^(=== RUN|\s*--- |FAIL|ok|PASS)|(PROBES|RING|PYTORCH|BROKEN|LINGER|recovered|scaled|first step|audit|checkpoints|leader after the kill):' $(CLUSTER_LOG); \
		if [ $$rc -ne 0 ]; then tail -40 $(CLUSTER_LOG); echo "cluster-e2e failed; full log: $(CLUSTER_LOG)"; exit $$rc; fi; \
		grep '^cluster: ' $(CLUSTER_LOG) | tail -1
