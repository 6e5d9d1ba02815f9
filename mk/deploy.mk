# Cluster deployment: the Helm chart (deploy/helm/ringtrain) and the images
# (deploy/docker/Dockerfile). See docs/deploy.md.
.PHONY: test-deploy helm-template image image-cuda

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

# Images (needs docker with BuildKit; both binaries in each image).
IMAGE ?= ghcr.io/ringtrain/ringtrain
IMAGE_TAG ?= 0.1.0
DOCKER ?= docker
image:
	$(DOCKER) build -f deploy/docker/Dockerfile --target cpu -t $(IMAGE):$(IMAGE_TAG) .
image-cuda:
	$(DOCKER) build -f deploy/docker/Dockerfile --target cuda -t $(IMAGE):$(IMAGE_TAG)-cuda .
