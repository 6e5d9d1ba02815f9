package data_test

import (
	"context"
	"fmt"

	"github.com/ringtrain/ringtrain/pkg/data"
)

// Two ranks share a global batch of 5; without shuffling the order is the
// dataset's, so rank 0 takes the first 3 samples of each step and rank 1
// the other 2.
func ExampleNewLoader() {
	ds, _ := data.NewSynthetic(10, 1)
	sampler, _ := data.NewSampler(ds.Len(), data.SamplerConfig{})
	for rank := range 2 {
		l, _ := data.NewLoader(context.Background(), data.LoaderConfig{
			Dataset: ds, Sampler: sampler, Transform: data.EvalTransform(),
			GlobalBatch: 5, Rank: rank, World: 2, StopEpoch: 1,
		})
		for {
			b, err := l.Next(context.Background())
			if err != nil {
				break // io.EOF after the epoch
			}
			fmt.Println("rank", rank, b.Pos, "indices", b.Indices, "labels", b.Labels, "values", len(b.X))
		}
		l.Close()
	}
	// Output:
	// rank 0 epoch 0 cursor 0 indices [0 1 2] labels [0 1 2] values 9216
	// rank 0 epoch 0 cursor 5 indices [5 6 7] labels [5 6 7] values 9216
	// rank 1 epoch 0 cursor 0 indices [3 4] labels [3 4] values 6144
	// rank 1 epoch 0 cursor 5 indices [8 9] labels [8 9] values 6144
}
