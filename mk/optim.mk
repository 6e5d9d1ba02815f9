# Optimizers, LR schedules, safetensors and model-state I/O (pkg/nn). See docs/optim.md.
#   make test-optim          their tests (seconds)
#   make fuzz-safetensors    fuzz the safetensors reader for $(FUZZTIME) (Makefile)
#   make optim-goldens       regenerate the torch goldens (needs python3-torch;
#                            OPTIM_PYTHON: a python3 that can import torch)
OPTIM_PYTHON ?= $(shell for p in /usr/bin/python3 python3; do \
	if $$p -c 'import torch' >/dev/null 2>&1; then echo $$p; break; fi; done)

.PHONY: test-optim fuzz-safetensors optim-goldens
test-optim:
	$(GO) test -count=1 -run 'SGD|Adam|Adagrad|RMSprop|Optim|FMA32|Schedule|Safetensors|Half|Weights|ZeroGrad|SetLR' ./pkg/nn/

fuzz-safetensors:
	$(GO) test -run '^$$' -fuzz '^FuzzReadSafetensors$$' -fuzztime $(FUZZTIME) ./pkg/nn/

optim-goldens:
	@if [ -z "$(OPTIM_PYTHON)" ]; then echo "optim-goldens: no python3 with torch (apt-get install -y python3-torch)" >&2; exit 1; fi
	cd pkg/nn/testdata && $(OPTIM_PYTHON) optim_torch_gen.py optim_torch.safetensors && \
		$(OPTIM_PYTHON) schedule_torch_gen.py schedule_torch.json
