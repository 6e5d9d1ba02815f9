# pkg/data: CIFAR-10 acquisition, loader tests, fuzzing and throughput.
GO ?= go
DATA_DIR ?= data

.PHONY: data test-data fuzz-data bench-data

# Get CIFAR-10 into $(DATA_DIR)/cifar-10-batches-bin/ (download, or pass
# DATA_FLAGS="-archive path/to/cifar-10-binary.tar.gz" / "-mirror URL -mirror-md5 SUM").
data:
	CGO_ENABLED=0 $(GO) run ./pkg/data/internal/getdata -dir $(DATA_DIR) $(DATA_FLAGS)

test-data:
	CGO_ENABLED=0 $(GO) test -count=1 ./pkg/data/...

# Fuzz the batch-file parser and the archive walker for $(FUZZTIME) each.
fuzz-data:
	$(GO) test -run '^$$' -fuzz '^FuzzParseCIFARBatch$$' -fuzztime $(FUZZTIME) ./pkg/data
	$(GO) test -run '^$$' -fuzz '^FuzzWalkArchive$$' -fuzztime $(FUZZTIME) ./pkg/data

# Augmented images/s of the loader on CIFAR-10 from CIFAR_ARCHIVE (default
# ../shared/data/cifar-10-binary.tar.gz; synthetic images without it). Last
# line: "data: N images/s".
CIFAR_ARCHIVE ?= ../shared/data/cifar-10-binary.tar.gz
bench-data:
	CGO_ENABLED=0 $(GO) run ./pkg/data/internal/benchdata $(if $(wildcard $(CIFAR_ARCHIVE)),-archive $(CIFAR_ARCHIVE))
