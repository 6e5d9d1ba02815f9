package worker

import (
	"errors"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Graphs (Trainer.Graphs): the device step's compute (forwardBackward:
// zeroing, forward, loss, counts, backward) is captured once shapes and
// memory are stable and launched as one graph in later steps; the
// uploads before it and the all-reduce, optimizer and read-back after it
// stay eager (the learning rate changes every step). The graph is
// dropped, and the step runs eagerly, when the batch, the input buffers
// or any device memory changed since the capture (a short last batch, an
// evaluation); the next step of the same shapes captures again. A failed
// capture (a backend that cannot, an op that needs the host) turns graphs
// off for the trainer, logged once; nothing of a failed capture ran, so
// the step runs eagerly and loses nothing. Graphs need no dropout (its
// mask depends on the step) and no overlapped gradient copies (their
// hooks copy during backward).

// graphState is the captured device step.
type graphState struct {
	g         nn.Graph
	key       graphKey // what g was captured for
	warm      graphKey // the last eager step's shapes and buffers
	off       bool     // a capture failed: eager from now on
	captures  int
	launches  int
	lastError error
}

// graphKey is what a captured step depends on besides stable memory.
type graphKey struct {
	n, global int
	x, y      uintptr
}

// drop releases the captured graph, if any.
func (g *graphState) drop() {
	if g.g != nil {
		_ = g.g.Close()
		g.g = nil
	}
	g.warm = graphKey{}
}

// GraphStats reports how many graphs the trainer captured and how many
// steps ran as a graph launch.
func (t *Trainer) GraphStats() (captures, launches int) { return t.graph.captures, t.graph.launches }

// graphsWanted reports whether the device step may run as a graph (its
// input must then sit in the fixed buffers a graph captures).
func (t *Trainer) graphsWanted(allowed bool) bool {
	_, ok := t.B.(nn.GraphCapturer)
	return t.Graphs && allowed && ok && !t.graph.off && t.Model.Config().Dropout == 0
}

// deviceCompute issues the device step's compute: as a graph launch when
// graphs are on and a graph of these shapes is captured (capturing it
// when the step before ran eagerly with the same shapes), else eagerly.
// allowed is false when the step's hooks need the host during backward.
func (t *Trainer) deviceCompute(x, y *nn.Tensor, n, global int, allowed bool) error {
	gs := &t.graph
	gc, _ := t.B.(nn.GraphCapturer)
	if !t.graphsWanted(allowed) {
		gs.drop()
		return t.forwardBackward(x, y, n, global)
	}
	key := graphKey{n: n, global: global, x: x.Ptr, y: y.Ptr}
	if gs.g != nil && gs.key != key {
		gs.drop()
	}
	if gs.g != nil {
		err := gs.g.Launch()
		if err == nil {
			gs.launches++
			return nil
		}
		if !errors.Is(err, nn.ErrGraphStale) {
			return err
		}
		gs.drop() // memory moved since the capture: eager now, capture next
	}
	if gs.warm != key {
		gs.warm = key
		return t.forwardBackward(x, y, n, global)
	}
	if err := gc.BeginCapture(); err != nil {
		gs.fail(t, err)
		return t.forwardBackward(x, y, n, global)
	}
	ferr := t.forwardBackward(x, y, n, global)
	g, err := gc.EndCapture()
	if err = errors.Join(ferr, err); err != nil {
		if g != nil {
			_ = g.Close()
		}
		gs.fail(t, err)
		return t.forwardBackward(x, y, n, global) // nothing of the capture ran
	}
	gs.g, gs.key = g, key
	gs.captures++
	if err := g.Launch(); err != nil {
		return err
	}
	gs.launches++
	return nil
}

// fail turns graphs off after a failed capture and logs why, once.
func (g *graphState) fail(t *Trainer, err error) {
	g.drop()
	g.off, g.lastError = true, err
	if t.Logf != nil {
		t.Logf("worker: CUDA graphs off, the steps run eagerly: %v", err)
	}
}
