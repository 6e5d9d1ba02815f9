package data

import "testing"

func BenchmarkSyntheticGet(b *testing.B) {
	ds, _ := NewSynthetic(50000, 1)
	dst := make([]float32, 3072)
	i := 0
	for b.Loop() {
		ds.Get(i%50000, dst)
		i++
	}
}

func BenchmarkCIFARGetTransform(b *testing.B) {
	labels := make([]uint8, 100)
	ds, _ := NewCIFAR10(labels, make([]uint8, 100*3072), []string{"a"})
	src, dst := make([]float32, 3072), make([]float32, 3072)
	tr := TrainTransform()
	i := 0
	for b.Loop() {
		ds.Get(i%100, src)
		tr.Apply(dst, src, CIFARShape, 1, 0, i)
		i++
	}
}
