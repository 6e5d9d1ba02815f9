package nn

import (
	"fmt"
	"math"
)

// CrossEntropy is torch.nn.CrossEntropyLoss(label_smoothing=Smoothing)
// with mean reduction:
//
//	loss = mean_n [(1-s)*(-log p[n,y_n]) + s*mean_k(-log p[n,k])]
//
// GradScale multiplies dlogits (0 means 1); data-parallel workers set it to
// localBatch/globalBatch so that the sum of their gradients is the global
// mean. The zero value is the plain mean cross entropy.
type CrossEntropy struct {
	Smoothing float32
	GradScale float32

	loss    *Tensor // (1)
	dlogits actBuf  // (N,K)
	host    [1]float32
	b       Backend
}

// Compute returns the loss over logits (N,K) with labels in [0,K) and
// dlogits = d(loss)/d(logits) * GradScale, a tensor owned by c and valid
// until its next Compute. Bad labels wrap ErrLabel, a bad logits shape
// ErrShape, a non-finite loss ErrNonFinite.
func (c *CrossEntropy) Compute(b Backend, logits *Tensor, labels []int32) (float32, *Tensor, error) {
	if logits == nil || len(logits.Shape) != 2 || logits.Shape[0] < 1 || logits.Shape[1] < 1 {
		var shape []int
		if logits != nil {
			shape = logits.Shape
		}
		return 0, nil, fmt.Errorf("%w: logits have shape %v, want (N,K)", ErrShape, shape)
	}
	n, k := logits.Shape[0], logits.Shape[1]
	if err := checkLabels(labels, n, k); err != nil {
		return 0, nil, err
	}
	if !(c.Smoothing >= 0 && c.Smoothing <= 1) {
		return 0, nil, fmt.Errorf("%w: label smoothing %v (want 0 <= s <= 1)", ErrConfig, c.Smoothing)
	}
	if c.b != b {
		if c.b != nil {
			c.free()
		}
		c.b = b
	}
	if c.loss == nil {
		c.loss = b.New(1)
	}
	scale := c.GradScale
	if scale == 0 {
		scale = 1
	}
	dl := c.dlogits.get(b, n, k)
	b.SoftmaxCrossEntropy(c.loss, dl, nil, logits, labels, c.Smoothing, scale)
	b.ToHost(c.host[:], c.loss)
	loss := c.host[0]
	if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
		return loss, dl, fmt.Errorf("%w: loss is %v", ErrNonFinite, loss)
	}
	return loss, dl, nil
}

func (c *CrossEntropy) free() {
	if c.loss != nil {
		c.b.Free(c.loss)
		c.loss = nil
	}
	c.dlogits.free(c.b)
}

func checkLabels(labels []int32, n, k int) error {
	if len(labels) != n {
		return fmt.Errorf("%w: %d labels for a batch of %d", ErrLabel, len(labels), n)
	}
	for i, y := range labels {
		if y < 0 || int(y) >= k {
			return fmt.Errorf("%w: label %d of sample %d outside [0,%d)", ErrLabel, y, i, k)
		}
	}
	return nil
}

// TopKCorrect counts the rows of logits (N,K) whose label is among the k
// largest logits. Ties are broken towards the lower class index (as argmax
// picks the first maximum); a NaN logit never counts as correct.
func TopKCorrect(b Backend, logits *Tensor, labels []int32, k int) (int, error) {
	if logits == nil || len(logits.Shape) != 2 {
		return 0, fmt.Errorf("%w: logits must be (N,K)", ErrShape)
	}
	n, classes := logits.Shape[0], logits.Shape[1]
	if k < 1 {
		return 0, fmt.Errorf("%w: top-%d", ErrConfig, k)
	}
	if err := checkLabels(labels, n, classes); err != nil {
		return 0, err
	}
	host := make([]float32, n*classes)
	b.ToHost(host, logits)
	return topKHost(host, labels, classes, k), nil
}

func topKHost(host []float32, labels []int32, classes, k int) int {
	correct := 0
	for i, y := range labels {
		row := host[i*classes : (i+1)*classes]
		v := row[y]
		if v != v {
			continue
		}
		rank := 0
		for j, u := range row {
			if u > v || (u == v && j < int(y)) || u != u {
				rank++
			}
		}
		if rank < k {
			correct++
		}
	}
	return correct
}

// Accuracy is TopKCorrect with k = 1.
func Accuracy(b Backend, logits *Tensor, labels []int32) (int, error) {
	return TopKCorrect(b, logits, labels, 1)
}
