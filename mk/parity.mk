# PyTorch parity of the training engine (see docs/parity.md).
#   make parity        compare pkg/nn with the committed golden files
#   make parity-torch  regenerate goldens with live PyTorch (full-width
#                      ResNet-18, both stems, plus the small set) into a
#                      temporary directory and compare the same way
#   make parity-gen    rewrite the committed goldens (pkg/nn/testdata/parity)
# PARITY_PYTHON: a python3 that can `import torch` (Debian: apt-get install
# python3-torch python3-torchvision). By default the system python3 is tried
# first, since a pyenv/venv python3 earlier on PATH usually lacks torch.
PARITY_PYTHON ?= $(shell for p in /usr/bin/python3 python3; do \
	if $$p -c 'import torch' >/dev/null 2>&1; then echo $$p; break; fi; done)

.PHONY: parity parity-torch parity-gen parity-python
parity:
	@GO="$(GO)" sh scripts/parity/check.sh

parity-python:
	@if [ -z "$(PARITY_PYTHON)" ]; then \
		echo "parity: no python3 with torch found (apt-get install -y python3-torch python3-torchvision, or set PARITY_PYTHON)" >&2; \
		exit 1; fi

parity-torch: parity-python
	@dir=$$(mktemp -d) || exit 1; trap 'rm -rf "$$dir"' EXIT; \
	"$(PARITY_PYTHON)" scripts/parity/gen.py --full --out "$$dir" || exit 1; \
	GO="$(GO)" sh scripts/parity/check.sh "$$dir"

parity-gen: parity-python
	"$(PARITY_PYTHON)" scripts/parity/gen.py --out pkg/nn/testdata/parity
