package worker

import (
	"time"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// Phases is where one training step's time went on this worker, in the
// order the step runs them; they add up to the step's wall time.
type Phases struct {
	DataWait  time.Duration // waiting for the loader's next batch
	Compute   time.Duration // forward, loss and backward (or the emulated wait)
	Exposed   time.Duration // blocked in the all-reduce after backward
	Optimizer time.Duration // the optimizer step and the device's sync
}

// Total is the step's wall time.
func (p Phases) Total() time.Duration { return p.DataWait + p.Compute + p.Exposed + p.Optimizer }

// BusBW is the nccl-tests bus bandwidth of an all-reduce of bytes that ran
// for d on world workers, in bytes/s: algbw x 2(world-1)/world (0 for one
// worker or no time).
func BusBW(bytes int64, d time.Duration, world int) float64 {
	if world < 2 || d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() * 2 * float64(world-1) / float64(world)
}

// stepPhases is the report of one step's phases (res from TrainStep,
// dataWait measured around the loader).
func stepPhases(res StepResult, dataWait time.Duration, world int, emulated bool) *controlpb.StepPhases {
	p := res.Phases
	p.DataWait = dataWait
	return &controlpb.StepPhases{
		StepSeconds:             p.Total().Seconds(),
		DataWaitSeconds:         p.DataWait.Seconds(),
		ComputeSeconds:          p.Compute.Seconds(),
		ExposedAllreduceSeconds: p.Exposed.Seconds(),
		OptimizerSeconds:        p.Optimizer.Seconds(),
		AllreduceSeconds:        res.Comm.Comm.Seconds(),
		HiddenFraction:          res.Comm.HiddenFraction(),
		AllreduceBytes:          res.Comm.Bytes,
		BusbwBytesPerSecond:     BusBW(res.Comm.Bytes, res.Comm.Comm, world),
		Buckets:                 int32(res.Comm.Buckets),
		World:                   int32(world),
		EmulatedCompute:         emulated,
		EndUnixNano:             res.End.UnixNano(),
	}
}
