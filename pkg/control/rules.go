package control

// Rules of the Control service that its in-memory twin for worker tests
// (worker.MemControlPlane) must apply the same way.

// CheckpointOfJob reports whether a checkpoint of step computed under plan
// generation gen may be recorded as the job's latest: it is a state of the
// current plan (current), or the committed state itself (committedGen,
// committedStep: recorded after its commit, the plan may have moved on).
// Generation 0 means unknown (an older worker) and is accepted. A state of
// an abandoned plan is refused with ErrStaleGeneration.
func CheckpointOfJob(gen uint64, step int64, current, committedGen uint64, committedStep int64) bool {
	return gen == 0 || gen == current || (gen == committedGen && step == committedStep)
}
