# The tutorial's last chapters (issue 18): predict, explain, export, transfer
# learning. See docs/tutorial.md.
#   make test-export   npm's onnxruntime-node (installed into $(ORT_DIR) with
#                      --ignore-scripts: its native library ships inside the
#                      package) runs exported ResNet-18/34/50, both stems, BN
#                      kept and folded, on 16 CIFAR-10 test images
#                      ($(CIFAR_ARCHIVE), synthetic images without it); also
#                      onnx.checker (python3-onnx) and the export command.
#   make tutorial-transfer   the transfer-learning walkthrough end to end
#                      (scripts/tutorial/transfer.sh: torchvision ResNet-18
#                      weights, frozen backbone, new head, Adam, an image
#                      folder, then evaluate/predict/explain; minutes on 2
#                      cores). Ends "transfer: ... validation accuracy A".
ORT_DIR ?= bin/ort
ORT_VERSION ?= 1.31.1
EXPORT_CIFAR ?= ../shared/data/cifar-10-binary.tar.gz

.PHONY: test-export ort-node tutorial-transfer
tutorial-transfer:
	GO=$(GO) scripts/tutorial/transfer.sh

ort-node:
	@command -v npm >/dev/null || { echo "npm not found: apt-get install -y npm (or nodejs)" >&2; exit 1; }
	mkdir -p $(ORT_DIR)
	test -f $(ORT_DIR)/node_modules/onnxruntime-node/package.json || \
		(cd $(ORT_DIR) && npm install --ignore-scripts --no-audit --no-fund --no-save onnxruntime-node@$(ORT_VERSION))

test-export: ort-node
	RINGTRAIN_ORT_NODE_MODULES=$(abspath $(ORT_DIR))/node_modules \
	RINGTRAIN_CIFAR_ARCHIVE=$(if $(wildcard $(EXPORT_CIFAR)),$(abspath $(EXPORT_CIFAR))) \
		$(GO) test -count=1 -v -timeout 20m -run 'ONNX|Export' ./pkg/onnx/ ./cmd/worker/
