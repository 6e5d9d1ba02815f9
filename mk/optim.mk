# Optimizers, LR schedules, safetensors and model-state I/O (pkg/nn). See docs/optim.md.
#   make test-optim          their tests (seconds)
#   make fuzz-safetensors    fuzz the safetensors reader; FUZZTIME=2m
#   make optim-goldens       regenerate the torch goldens (needs python3-torch)
FUZZTIME ?= 2m
PYTHON ?= python3

.PHONY: test-optim fuzz-safetensors optim-goldens
test-optim:
	$(GO) test -count=1 -run 'SGD|Adam|Adagrad|RMSprop|Optim|FMA32|Schedule|Safetensors|Half|Weights|ZeroGrad|SetLR' ./pkg/nn/

fuzz-safetensors:
	$(GO) test -run '^$$' -fuzz '^FuzzReadSafetensors$$' -fuzztime $(FUZZTIME) ./pkg/nn/

optim-goldens:
	cd pkg/nn/testdata && $(PYTHON) optim_torch_gen.py optim_torch.safetensors && \
		$(PYTHON) schedule_torch_gen.py schedule_torch.json
