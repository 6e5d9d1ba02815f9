# The control plane (pkg/cluster: etcd; pkg/coordinator: raft + Control
# gRPC service; proto/controlpb). See docs/control.md.
#   make test-control        both packages' tests (embedded etcd, raft over
#                            TCP and in memory, real gRPC; ~30 s on 2 cores)
#   make test-control-race   the same under the race detector (needs cgo)
#   make proto-control       regenerate proto/controlpb with the tools pinned
#                            in mk/proto.mk (`make proto` covers it once
#                            mk/proto.mk compiles proto/*/*.proto too)

.PHONY: test-control test-control-race proto-control
test-control:
	$(GO) test -count=1 ./pkg/cluster/ ./pkg/coordinator/

test-control-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./pkg/cluster/ ./pkg/coordinator/

proto-control: proto-tools
	PATH="$(PROTO_TOOLS):$$PATH" $(PROTOC) -I proto \
		--go_out=. --go_opt=module=github.com/ringtrain/ringtrain \
		--go-grpc_out=. --go-grpc_opt=module=github.com/ringtrain/ringtrain \
		proto/controlpb/control.proto
