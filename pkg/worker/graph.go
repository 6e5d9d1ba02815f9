package worker

import "github.com/ringtrain/ringtrain/pkg/nn"

// graphState is the captured device step (Trainer.Graphs).
type graphState struct {
	g nn.Graph
}

// drop releases the captured graph, if any.
func (g *graphState) drop() {
	if g.g != nil {
		_ = g.g.Close()
		g.g = nil
	}
}

// deviceCompute issues the device step's compute (forwardBackward).
func (t *Trainer) deviceCompute(x, y *nn.Tensor, n, global int) error {
	return t.forwardBackward(x, y, n, global)
}
