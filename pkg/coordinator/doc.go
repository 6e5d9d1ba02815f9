// Package coordinator is ringtrain's control plane: the job state machine
// replicated with hashicorp/raft, ring planning, and the Control gRPC
// service (proto/controlpb) that workers call.
//
// The pieces, each in its own file:
//
//   - state.go: JobState and the pure transition function apply(state, command);
//     planning (replan) lives here so that every replica computes the same plan.
//   - fsm.go: the raft.FSM over JobState, with snapshots and change notification.
//   - node.go: one raft replica (bolt log/stable store and file snapshots in
//     the state directory, TCP or in-memory transport).
//   - service.go: the Control service; on the leader it also follows etcd
//     membership and turns it into plans.
//   - client.go: a worker-side client that follows leader redirects.
//   - coordinator.go: Start, which wires a node, the service and a gRPC
//     server together (what cmd/coordinator runs).
//
// Promises: plan generations only increase; a planned worker keeps its
// position relative to the other survivors; every replica applies the same
// commands in the same order to reach the same JobState; only the leader
// answers control calls, followers name the leader; a job given a start
// quorum (SpecInput.StartWorkers, the --workers N of one-machine mode) does
// not run before that many workers are live, so its first steps never run
// on a smaller ring because one worker registered late.
package coordinator
