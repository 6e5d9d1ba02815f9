package gpu

import (
	"fmt"
	"math"
	"testing"
)

// nhwcStatsModel computes what k_nhwc_partial (blocks of t threads) and
// k_chan_finish_wide (blocks of 128) leave in out0 and out1, with every
// float64 operation in the kernels' order: the rows of a chunk are dealt
// to lanes (row lo+lane, lo+lane+L, ...), each lane sums its rows, the
// lanes are added in lane order, and the finish adds the chunks per
// thread (j = t, t+128, ...) and then in block_sum's tree. a, b and y are
// the tensors' values in row-major (rows, c) order; with mode 2, a is
// masked in place as the kernel does.
func nhwcStatsModel(mode int, a, b, y, mean, scale1 []float32, rows, c, splits, t int) (out0, out1 []float32) {
	g := c / 8
	lanes := 1
	if g < t {
		lanes = t / g
	}
	chunk := (rows + splits - 1) / splits
	part := make([][2]float64, c*splits) // [ch*splits + j]
	for j := range splits {
		lo, hi := j*chunk, min(rows, (j+1)*chunk)
		for ch := range c {
			var r0, r1 float64
			for lane := range lanes {
				var s0, s1 float64
				for m := lo + lane; m < hi; m += lanes {
					i := m*c + ch
					if mode == 2 && !(y[i] > 0) {
						a[i] = 0
					}
					v := float64(a[i])
					s0 += v
					if mode == 0 {
						s1 += float64(v * v)
					} else {
						s1 += float64(v * (float64(b[i]) - float64(mean[ch])))
					}
				}
				if lanes == 1 {
					r0, r1 = s0, s1
				} else {
					r0 += s0
					r1 += s1
				}
			}
			part[ch*splits+j] = [2]float64{r0, r1}
		}
	}
	const ft = 128
	out0, out1 = make([]float32, c), make([]float32, c)
	for ch := range c {
		var sh [2][ft]float64
		for th := range ft {
			for j := th; j < splits; j += ft {
				sh[0][th] += part[ch*splits+j][0]
				sh[1][th] += part[ch*splits+j][1]
			}
		}
		for s := ft / 2; s > 0; s >>= 1 {
			for th := range s {
				sh[0][th] += sh[0][th+s]
				sh[1][th] += sh[1][th+s]
			}
		}
		s1 := sh[1][0]
		if scale1 != nil {
			s1 = float64(s1 * float64(scale1[ch]))
		}
		out0[ch], out1[ch] = float32(sh[0][0]), float32(s1)
	}
	return out0, out1
}

// TestNHWCStatsBits: the resident BN statistics (k_nhwc_partial's three
// modes and k_chan_finish_wide) give exactly the bits of their documented
// partition and summation order, with the launch's real block sizes (the
// emulator runs a block's threads as fibers up to each barrier, as the GPU
// does). The shapes cover several lanes per channel group, lanes that do
// not divide the block (C = 192: 24 groups, 10 lanes, 16 idle threads),
// one lane (C = 2048) and threads owning several groups (C = 4096), with
// chunks that are not a multiple of the lane count.
func TestNHWCStatsBits(t *testing.T) {
	e := newEnv(t, PrecisionBF16)
	for _, sh := range [][3]int{{7, 64, 1000}, {3, 16, 37}, {2, 192, 300}, {5, 2048, 9}, {2, 4096, 4}} {
		N, C, HW := sh[0], sh[1], sh[2]
		t.Run(fmt.Sprintf("%dx%dx%d", N, C, HW), func(t *testing.T) {
			rows := N * HW
			splits := nhwcSplits(rows, C, e.g.sms)
			// Small values with a few pairs of +-2^40 in each channel:
			// float64 sums of bf16 values of one scale are exact in any
			// order, these are not (what a +2^40 absorbs before its -2^40
			// comes depends on the order).
			wide := func() tp {
				v := make([]float32, N*C*HW)
				for i := range v {
					v[i] = float32(math.Ldexp(e.rng.NormFloat64(), -20))
				}
				for c := range C {
					for k := range 4 {
						m := e.rng.Intn(rows)
						v[(m/HW*C+c)*HW+m%HW] = float32(math.Ldexp(float64(1-2*(k%2)), 40))
					}
				}
				return e.from(v, N, C, HW, 1)
			}
			x, dy, y := wide(), wide(), e.rand(N, C, HW, 1)
			for _, v := range []tp{x, dy, y} {
				e.makeResident(v)
			}
			mean, invStd := e.rand(C), e.from(positive(e, C), C)
			_, hx := e.host(x)
			_, hdy := e.host(dy)
			_, hy := e.host(y)
			_, hmean := e.host(mean)
			_, hinv := e.host(invStd)
			// The CPU side holds NCHW; the model reads (rows, C).
			nhwc := func(v []float32) []float32 {
				o := make([]float32, len(v))
				for n := range N {
					for c := range C {
						for p := range HW {
							o[(n*HW+p)*C+c] = v[(n*C+c)*HW+p]
						}
					}
				}
				return o
			}
			ax, ady, ay := nhwc(hx), nhwc(hdy), nhwc(hy)

			same := func(what string, got tp, want []float32) {
				t.Helper()
				g, _ := e.host(got)
				bad := 0
				for i := range want {
					if math.Float32bits(g[i]) != math.Float32bits(want[i]) {
						if bad < 3 {
							t.Errorf("%s: channel %d: %v (%#08x), the model gives %v (%#08x)", what, i, g[i], math.Float32bits(g[i]), want[i], math.Float32bits(want[i]))
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d channels differ (splits %d)", what, bad, len(want), splits)
				}
			}

			sum, sq := e.out(C), e.out(C)
			e.g.BatchNormStats(sum[0], sq[0], x[0])
			w0, w1 := nhwcStatsModel(0, ax, nil, nil, nil, nil, rows, C, splits, blockSize)
			same("BatchNormStats sum", sum, w0)
			same("BatchNormStats sumSq", sq, w1)

			sd, sdx := e.out(C), e.out(C)
			e.g.BatchNormBackwardStats(sd[0], sdx[0], dy[0], x[0], mean[0], invStd[0])
			w0, w1 = nhwcStatsModel(1, ady, ax, nil, hmean, hinv, rows, C, splits, blockSize)
			same("BatchNormBackwardStats sumDy", sd, w0)
			same("BatchNormBackwardStats sumDyXhat", sdx, w1)

			e.g.ReLUBatchNormBackwardStats(sd[0], sdx[0], dy[0], y[0], x[0], mean[0], invStd[0])
			w0, w1 = nhwcStatsModel(2, ady, ax, ay, hmean, hinv, rows, C, splits, blockSize)
			same("ReLUBatchNormBackwardStats sumDy", sd, w0)
			same("ReLUBatchNormBackwardStats sumDyXhat", sdx, w1)
			g, _ := e.host(dy)
			masked := nhwc(g)
			for i := range masked {
				if math.Float32bits(masked[i]) != math.Float32bits(ady[i]) {
					t.Fatalf("ReLUBatchNormBackwardStats masked dy: row %d channel %d: %v, want %v", i/C, i%C, masked[i], ady[i])
				}
			}
		})
	}
	if err := e.g.Sync(); err != nil {
		t.Fatal(err)
	}
}
