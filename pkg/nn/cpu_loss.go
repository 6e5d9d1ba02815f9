package nn

import (
	"fmt"
	"math"
)

// SoftmaxCrossEntropy implements Backend. Each row is computed in float64;
// the row losses are then added in order of n.
//
//	loss_n = (1-s)*(-log p_y) + s*mean_k(-log p_k)
//	dlogits[n,k] = (p_k - (1-s)*[k==y] - s/K) * gradScale / N
func (c *CPU) SoftmaxCrossEntropy(loss, dlogits, probs, logits *Tensor, labels []int32, smoothing, gradScale float32) {
	ld := mustHost(logits)
	n, k := logits.Shape[0], logits.Shape[1]
	if len(labels) != n {
		panic(fmt.Sprintf("nn: SoftmaxCrossEntropy: %d labels for %d rows", len(labels), n))
	}
	var dd, pd []float32
	if dlogits != nil {
		dd = mustHost(dlogits)
	}
	if probs != nil {
		pd = mustHost(probs)
	}
	rows := growF64(&c.rows, n)
	s := float64(smoothing)
	fk := float64(k)
	scale := float64(gradScale) / float64(n)
	c.parallel(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := ld[i*k : i*k+k]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var se, sumLogit float64
			for _, v := range row {
				se += math.Exp(float64(v) - mx)
				sumLogit += float64(v)
			}
			lse := mx + math.Log(se)
			y := int(labels[i])
			nll := lse - float64(row[y])
			smooth := lse - sumLogit/fk // mean_k(-log p_k)
			rows[i] = (1-s)*nll + s*smooth
			for j, v := range row {
				p := math.Exp(float64(v) - lse)
				if pd != nil {
					pd[i*k+j] = float32(p)
				}
				if dd != nil {
					g := p - s/fk
					if j == y {
						g -= 1 - s
					}
					dd[i*k+j] = float32(g * scale)
				}
			}
		}
	})
	var tot float64
	for _, v := range rows {
		tot += v
	}
	mustHost(loss)[0] = float32(tot / float64(n))
}
