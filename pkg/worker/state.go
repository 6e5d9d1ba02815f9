package worker

import (
	"bytes"
	"fmt"
	"hash/fnv"

	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Snapshot captures the trainer's full state at its current step (host
// copies: training can go on while it is written).
func (t *Trainer) Snapshot(worldSize int, acc *float64) (*checkpoint.Snapshot, error) {
	return checkpoint.Capture(t.B, t.Model.Params(), t.Model.Buffers(), t.Opt, checkpoint.Meta{
		Step: t.Step, Epoch: int64(t.Pos.Epoch), Cursor: int64(t.Pos.Cursor), WorldSize: worldSize,
		ConfigHash: t.Spec.Hash(), Seed: t.Spec.Seed, DropoutStep: t.Step, LR: t.Opt.LR(), Accuracy: acc,
	})
}

// Restore puts the trainer back to a snapshot taken by Snapshot (the
// in-memory rollback: no disk read).
func (t *Trainer) Restore(s *checkpoint.Snapshot) error {
	var w bytes.Buffer
	if err := nn.EncodeSafetensors(&w, s.Model, nil); err != nil {
		return err
	}
	st, err := nn.ParseSafetensors(w.Bytes())
	if err != nil {
		return err
	}
	var opt *nn.OptimizerState
	if s.Optimizer != nil {
		var ob bytes.Buffer
		if err := nn.EncodeSafetensors(&ob, s.Optimizer, s.OptMeta); err != nil {
			return err
		}
		os, err := nn.ParseSafetensors(ob.Bytes())
		if err != nil {
			return err
		}
		if opt, err = nn.OptimizerStateFrom(os); err != nil {
			return err
		}
	}
	return t.apply(&checkpoint.Loaded{Meta: s.Meta, Weights: st, Optimizer: opt})
}

// Load puts the trainer in the state of a checkpoint read from disk.
func (t *Trainer) Load(l *checkpoint.Loaded) error { return t.apply(l) }

func (t *Trainer) apply(l *checkpoint.Loaded) error {
	if l.Meta.ConfigHash != "" && l.Meta.ConfigHash != t.Spec.Hash() {
		return fmt.Errorf("%w: checkpoint of step %d belongs to another job configuration", checkpoint.ErrMismatch, l.Meta.Step)
	}
	if err := l.Apply(t.B, t.Model.Params(), t.Model.Buffers(), t.Opt); err != nil {
		return err
	}
	if l.Optimizer == nil {
		// A weights-only checkpoint: start the optimizer afresh (the old
		// one's state is freed: on a GPU it is device memory).
		o, err := BuildOptimizer(t.B, t.Spec, t.Model)
		if err != nil {
			return err
		}
		t.Opt.Reset()
		t.Opt = o
	}
	t.Step = l.Meta.Step
	t.Pos = data.Position{Epoch: int(l.Meta.Epoch), Cursor: int(l.Meta.Cursor)}
	t.restored() // a prefetched batch belongs to the state left behind
	t.Model.SetDropoutStep(l.Meta.Step)
	return nil
}

// StateHash is a 48-bit FNV-1a hash of the parameters and buffers (their
// bytes, in order): replicas that hold the same state have the same hash.
func (t *Trainer) StateHash() (uint64, error) {
	ts, err := nn.WeightTensors(t.B, t.Model.Params(), t.Model.Buffers())
	if err != nil {
		return 0, err
	}
	h := fnv.New64a()
	for _, x := range ts {
		h.Write([]byte(x.Name))
		h.Write(x.Data)
	}
	return h.Sum64() & (1<<48 - 1), nil
}
