# Protobuf/gRPC code generation. Every proto/*.proto and proto/*/*.proto
# is compiled (with -I proto) into
# proto/<go package dir>/ (the go_package option decides the directory).
# Pinned tools: protoc from Debian's protobuf-compiler (3.21.x; install with
# `apt-get install -y protobuf-compiler`), protoc-gen-go and
# protoc-gen-go-grpc built from the versions below into ./bin/tools.
PROTOC ?= protoc
PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.0
PROTO_TOOLS := $(CURDIR)/bin/tools
PROTO_FILES := $(wildcard proto/*.proto proto/*/*.proto)

.PHONY: proto proto-tools
proto-tools: $(PROTO_TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION) $(PROTO_TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)

$(PROTO_TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	mkdir -p $(PROTO_TOOLS)
	GOBIN=$(PROTO_TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	touch $@

$(PROTO_TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	mkdir -p $(PROTO_TOOLS)
	GOBIN=$(PROTO_TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@

proto: proto-tools
	@command -v $(PROTOC) >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
	$(PROTOC) --version
	PATH="$(PROTO_TOOLS):$$PATH" $(PROTOC) -I proto \
		--go_out=. --go_opt=module=github.com/ringtrain/ringtrain \
		--go-grpc_out=. --go-grpc_opt=module=github.com/ringtrain/ringtrain \
		$(PROTO_FILES)
