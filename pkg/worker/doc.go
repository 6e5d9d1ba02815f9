// Package worker is the training side of ringtrain: it turns a job spec
// into a model, an optimizer, a schedule and data (build.go, trainer.go),
// runs training steps locally or over the ring all-reduce, evaluates, and
// follows the coordinator's plans (Run).
//
// # The protocol as a state machine
//
// Run wires the real collaborators (the coordinator's gRPC client, the
// job's etcd directory, the gRPC ring transport, the checkpoint directory)
// and hands them to a state machine. Each state is a method in the file
// named after it; it does its work and returns the next state:
//
//	registering ──► waiting ─────────────── job done, or stopped ─────────────► done
//	                 ▲  │ a running plan that gives this worker a rank
//	                 │  ▼
//	                 │ syncing ──── the ring cannot be opened ───► recovering ─┐
//	                 │  │ state at the committed step; ring open;             │
//	                 │  │ every rank holds the same step and weights          │
//	                 │  ▼                                                     │
//	                 │ training ◄──► committing (a checkpoint step)           │
//	                 │  │  └──────── the ring fails ────────► recovering ─────┤
//	                 │  ▼ the job's length is reached                         │
//	                 │ finishing ──── rank 0 commits the end ──────────► done │
//	                 │  │                                                     │
//	                 └──┴── a newer plan (from syncing, training, finishing) ◄┘
//	                        or the failure reported (recovering)
//
//	waiting ──► benching ──► waiting   (a plan whose bench field is set)
//
// The states:
//   - registering (registering.go): register in the membership, retrying
//     while the id is still held by the lease of a process this one
//     replaces; a lost lease later is renewed in the background.
//   - waiting (waiting.go): the next plan newer than the last one taken.
//     Left out of a plan that has room for it, the worker registers again.
//   - syncing (syncing.go): the trainer goes to the plan's committed step,
//     from memory (a rollback) or the checkpoint store (newest verified one
//     at or before it); the ring opens; the ranks compare step and weight
//     hash and, on any difference, all load the same checkpoint.
//   - training (training.go): one step (and, at an epoch's end, the
//     evaluation) per visit.
//   - committing (committing.go): the state of a checkpoint step is kept in
//     memory; rank 0 writes it in the background and, once durable, commits
//     the step.
//   - finishing (finishing.go): rank 0 saves the model and commits the end
//     of the job; the other ranks wait for the plan that says so.
//   - recovering (recovering.go): probe the ring neighbours for a dead or
//     stalled one and report the failure, naming it.
//   - benching (benching.go): a plan that is a benchmark round (its bench
//     field; coordinator bench on a cluster) gives this worker a rank: it
//     runs the round's steps on a trainer and ring of their own, reports
//     each step (phase "bench"), holds the ring until the round ends and
//     goes back to waiting. The job's trainer is not touched; a failed
//     round is reported, never fatal.
//
// The collaborators are interfaces, each with an in-memory twin that the
// unit tests drive the machine with: ControlPlane (MemControlPlane),
// Membership (MemMembership), the ring's allreduce.Transport
// (allreduce.InmemNetwork) and CheckpointStore (checkpoint.MemStore).
//
// Promises:
//   - A worker trains only under a plan that gives it a rank, starting from
//     the plan's committed step with the same weights as every other rank.
//   - On a device backend (nn.DeviceCounter) a step waits for the device
//     once, after its optimizer update is queued; a NaN/Inf in its input,
//     logits, loss or gradients fails that step with nn.ErrNonFinite
//     before it is committed (the device's parameters may already hold
//     its update), which stops the job (devstep.go). With
//     Trainer.Prefetch and nn.CopyStream, step s+1's input is uploaded on a
//     copy stream while step s computes (prefetch.go): the same batches in
//     the same order and bit-identical results; a batch prefetched for a
//     step that never runs (a failed step, a new plan, a rollback) is
//     dropped and never trained or counted.
//   - A broken ring, a lost lease or a coordinator leader change is not
//     fatal: the worker reports, registers again or reconnects, and follows
//     the next plan. Only an error no plan fixes (a bad spec, a diverged
//     model, an unusable checkpoint store) ends Run with an error.
//   - The checkpoint of the job's committed step is never deleted by
//     retention: the worker marks it in the store (CheckpointStore.Protect)
//     when it syncs to a plan and when one of its commits succeeds, so a
//     refused commit (a coordinator without a leader) cannot leave workers
//     that restart with no state to load. A refused commit is logged at
//     warn level.
//   - Run returns only after every goroutine it started has ended.
package worker
