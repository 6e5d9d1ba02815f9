package nn

import (
	"fmt"
	"math"
	"testing"
)

// Winograd transforms as matrices (rows of float64), for the error bound
// and for the generic F(m x m, 3x3) used to compare tile sizes.
type winoMats struct {
	name      string
	m         int         // output tile side (alpha = m + 2 input side)
	bt, g, at [][]float64 // B^T (alpha x alpha), G (alpha x 3), A^T (m x alpha)
}

var winoF2 = winoMats{name: "F(2x2,3x3)", m: 2,
	bt: [][]float64{{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}},
	g:  [][]float64{{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}},
	at: [][]float64{{1, 1, 1, 0}, {0, 1, -1, -1}},
}

var winoF4 = winoMats{name: "F(4x4,3x3)", m: 4,
	bt: [][]float64{
		{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
		{0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}},
	g: [][]float64{
		{1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
		{1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}},
	at: [][]float64{{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}},
}

// mat64 computes a*b*c^T (a: r x p, b: p x q, c: s x q) in float64; with
// abs, on the absolute values of all three.
func mat64(a, b, c [][]float64, abs bool) [][]float64 {
	f := func(v float64) float64 {
		if abs {
			return math.Abs(v)
		}
		return v
	}
	t := make([][]float64, len(a))
	for i := range a {
		t[i] = make([]float64, len(b[0]))
		for j := range b[0] {
			for k := range b {
				t[i][j] += f(a[i][k]) * f(b[k][j])
			}
		}
	}
	out := make([][]float64, len(a))
	for i := range a {
		out[i] = make([]float64, len(c))
		for j := range c {
			for k := range c[j] {
				out[i][j] += t[i][k] * f(c[j][k])
			}
		}
	}
	return out
}

// mat32 is a*b*c^T with float32 data (b) and float32 arithmetic: each
// output is a left-to-right sum over the nonzero coefficients.
func mat32(a [][]float64, b [][]float32, c [][]float64) [][]float32 {
	t := make([][]float32, len(a))
	for i := range a {
		t[i] = make([]float32, len(b[0]))
		for j := range b[0] {
			var s float32
			for k := range b {
				if a[i][k] != 0 {
					s += float32(a[i][k]) * b[k][j]
				}
			}
			t[i][j] = s
		}
	}
	out := make([][]float32, len(a))
	for i := range a {
		out[i] = make([]float32, len(c))
		for j := range c {
			var s float32
			for k := range c[j] {
				if c[j][k] != 0 {
					s += t[i][k] * float32(c[j][k])
				}
			}
			out[i][j] = s
		}
	}
	return out
}

// gamma is the rounding-error factor γ_n = n·u/(1 - n·u) of float32 (u =
// 2^-24): a value computed through at most n roundings of sums and
// products differs from the exact value by at most γ_n times the same
// computation on absolute values.
func gamma(n int) float64 {
	u := math.Ldexp(1, -24)
	return float64(n) * u / (1 - float64(n)*u)
}

// winoRounds is the depth n of the bound for C input channels: G g G^T
// (2 roundings per side: an add then an add or subtract; the halvings are
// exact), B^T d B (1 per side), the GEMM over C (one rounding per fused
// multiply-add, or 2 per term without FMA, plus one per KC=256 block added
// into the output), A^T M A (2 per side): 4 + 2 + (C+1) + ceil(C/256) + 4,
// rounded up to C + 16.
func winoRounds(C int) int { return C + 16 }

// winoGradBound is the elementwise error bound of the Winograd weight
// gradient of p (from zero) for x and dy: γ_n · G^T (Σ_tiles |A||e||A^T| ⊙
// |B^T||d||B|) G per weight, e a tile's 2x2 of dy. n counts the roundings
// along any path: B^T d B (2), A e A^T (2; negation is exact), the sum over
// the T tiles (at most 2 per term without FMA, plus one per KC=256 block
// and one per block of at least 64 tiles added into dU), G^T dU G (4) and
// the add into dw (1): 2T + T/32 + 16 bounds it.
func winoGradBound(x, dy []float64, p ConvParams) []float64 {
	P, Q := p.P(), p.Q()
	th, tw := (P+1)/2, (Q+1)/2
	T := p.N * th * tw
	gam := gamma(2*T + T/32 + 16)
	mt := winoF2
	a := [][]float64{{1, 0}, {1, 1}, {1, -1}, {0, -1}} // A = (A^T)^T
	gt := [][]float64{{1, 0.5, 0.5, 0}, {0, 0.5, -0.5, 0}, {0, 0.5, 0.5, 1}}
	out := make([]float64, p.K*p.C*9)
	for k := 0; k < p.K; k++ {
		for ch := 0; ch < p.C; ch++ {
			s := make([][]float64, 4)
			for i := range s {
				s[i] = make([]float64, 4)
			}
			for n := 0; n < p.N; n++ {
				for ty := 0; ty < th; ty++ {
					for tx := 0; tx < tw; tx++ {
						d := make([][]float64, 4)
						for r := range d {
							d[r] = make([]float64, 4)
							for c := range d[r] {
								y, xx := 2*ty-1+r, 2*tx-1+c
								if y >= 0 && y < p.H && xx >= 0 && xx < p.W {
									d[r][c] = x[((n*p.C+ch)*p.H+y)*p.W+xx]
								}
							}
						}
						e := make([][]float64, 2)
						for r := range e {
							e[r] = make([]float64, 2)
							for c := range e[r] {
								if y, xx := 2*ty+r, 2*tx+c; y < P && xx < Q {
									e[r][c] = dy[((n*p.K+k)*P+y)*Q+xx]
								}
							}
						}
						zt, v := mat64(a, e, a, true), mat64(mt.bt, d, mt.bt, true)
						for i := range s {
							for j := range s[i] {
								s[i][j] += zt[i][j] * v[i][j]
							}
						}
					}
				}
			}
			wb := mat64(gt, s, gt, true)
			for r := 0; r < 3; r++ {
				for c := 0; c < 3; c++ {
					out[(k*p.C+ch)*9+r*3+c] = gam * wb[r][c]
				}
			}
		}
	}
	return out
}

// winoBound is the elementwise error bound of the F(2x2,3x3) output of
// p (N, K, P, Q) for x and w: γ_(C+16) · A^T (Σ_c |G||g||G^T| ⊙
// |B^T||d||B|) A, per output element.
func winoBound(x, w []float64, p ConvParams) []float64 {
	P, Q := p.P(), p.Q()
	out := make([]float64, p.N*p.K*P*Q)
	gam := gamma(winoRounds(p.C))
	mt := winoF2
	for n := 0; n < p.N; n++ {
		for k := 0; k < p.K; k++ {
			for ty := 0; ty < (P+1)/2; ty++ {
				for tx := 0; tx < (Q+1)/2; tx++ {
					s := make([][]float64, 4)
					for i := range s {
						s[i] = make([]float64, 4)
					}
					for ch := 0; ch < p.C; ch++ {
						g := make([][]float64, 3)
						for r := range g {
							g[r] = w[((k*p.C+ch)*3+r)*3:][:3]
						}
						d := make([][]float64, 4)
						for r := range d {
							d[r] = make([]float64, 4)
							for c := range d[r] {
								y, xx := 2*ty-1+r, 2*tx-1+c
								if y >= 0 && y < p.H && xx >= 0 && xx < p.W {
									d[r][c] = x[((n*p.C+ch)*p.H+y)*p.W+xx]
								}
							}
						}
						u, v := mat64(mt.g, g, mt.g, true), mat64(mt.bt, d, mt.bt, true)
						for i := range s {
							for j := range s[i] {
								s[i][j] += u[i][j] * v[i][j]
							}
						}
					}
					y := mat64(mt.at, s, mt.at, true)
					for i := 0; i < 2; i++ {
						for j := 0; j < 2; j++ {
							if 2*ty+i < P && 2*tx+j < Q {
								out[((n*p.K+k)*P+2*ty+i)*Q+2*tx+j] = gam * y[i][j]
							}
						}
					}
				}
			}
		}
	}
	return out
}

// checkBound fails t unless |got - want| <= bound elementwise (plus the
// float64 reference's own rounding, 2^-40 of the bound's scale), and
// reports the worst ratio error/bound.
func checkBound(t *testing.T, what string, got []float32, want, bound []float64) {
	t.Helper()
	worst, at := 0.0, -1
	for i := range got {
		e := math.Abs(float64(got[i]) - want[i])
		lim := bound[i] * (1 + math.Ldexp(1, -40))
		if !(e <= lim) {
			t.Fatalf("%s[%d] = %v, want %v: error %.3g > bound %.3g", what, i, got[i], want[i], e, bound[i])
		}
		if r := e / bound[i]; bound[i] > 0 && r > worst {
			worst, at = r, i
		}
	}
	if testing.Verbose() {
		t.Logf("%s: worst error/bound %.3g at %d", what, worst, at)
	}
}

// forcedWinograd are the options that send every eligible shape, however
// narrow, to the Winograd path (all three ops).
var forcedWinograd = CPUOptions{WinogradMinChannels: 1, WinogradMinFilterChannels: 1}

// winogradCPU returns a backend of threads goroutines with o's knobs that
// takes the Winograd path for every eligible shape, also for shapes that
// would take the dense path.
func winogradCPU(threads int, o CPUOptions) *CPU {
	o.Threads, o.WinogradMinChannels, o.WinogradMinFilterChannels = threads, forcedWinograd.WinogradMinChannels, forcedWinograd.WinogradMinFilterChannels
	c := NewCPUWith(o)
	c.noDense = true
	return c
}

// flippedRef returns w' (C x K x 3 x 3) of transposedConv: the weights of
// the convolution that computes the input gradient.
func flippedRef(w []float64, K, C int) []float64 {
	out := make([]float64, len(w))
	for k := 0; k < K; k++ {
		for ch := 0; ch < C; ch++ {
			for i := 0; i < 9; i++ {
				out[(ch*K+k)*9+8-i] = w[(k*C+ch)*9+i]
			}
		}
	}
	return out
}

// TestWinogradErrorBound: the three ops through the Winograd path agree
// with the float64 references within the bounds derived from the
// transforms, on even and odd planes, ragged blocks and one-tile planes.
func TestWinogradErrorBound(t *testing.T) {
	r := NewRNG(31)
	for _, p := range []ConvParams{
		{N: 3, C: 5, H: 8, W: 8, K: 6},
		{N: 2, C: 7, H: 9, W: 5, K: 3},    // odd planes: clipped edge tiles
		{N: 5, C: 16, H: 2, W: 2, K: 9},   // one tile per plane
		{N: 9, C: 12, H: 10, W: 12, K: 8}, // several blocks, a ragged last one
		{N: 2, C: 300, H: 4, W: 3, K: 4},  // C past one KC block
		{N: 2, C: 3, H: 32, W: 32, K: 5},  // tile rows of 16: the row-run transforms
		{N: 1, C: 4, H: 31, W: 64, K: 3},  // row runs, and clipped tiles in the last row
	} {
		p.R, p.S, p.StrideH, p.StrideW, p.PadH, p.PadW = 3, 3, 1, 1, 1, 1
		t.Run(fmt.Sprintf("N%dC%dK%d_%dx%d", p.N, p.C, p.K, p.H, p.W), func(t *testing.T) {
			be := winogradCPU(2, CPUOptions{WinogradFilterBlockBytes: 1, WinogradFilterMinTiles: 64}) // weight-gradient blocks of 64 tiles: several per shape
			if !be.winograd(p) || !be.winogradFilterOn(p) {
				t.Fatal("shape does not take the Winograd path")
			}
			x := randVec(r, p.N*p.C*p.H*p.W, 1)
			w := randVec(r, p.K*p.C*9, 1)
			y := be.New(p.N, p.K, p.P(), p.Q())
			be.Conv2d(y, hostTensor(x, p.N, p.C, p.H, p.W), hostTensor(w, p.K, p.C, 3, 3), p)
			checkBound(t, "y", y.Data, convRef(x, w, p), winoBound(x, w, p))

			dy := randVec(r, p.N*p.K*p.P()*p.Q(), 1)
			dx := be.New(p.N, p.C, p.H, p.W)
			be.Conv2dBackwardData(dx, hostTensor(dy, y.Shape...), hostTensor(w, p.K, p.C, 3, 3), p)
			wdx, _ := convBackRef(dy, x, w, p)
			pt, _ := transposedConv(p)
			checkBound(t, "dx", dx.Data, wdx, winoBound(dy, flippedRef(w, p.K, p.C), pt))

			dw := be.New(p.K, p.C, 3, 3)
			be.Conv2dBackwardFilter(dw, hostTensor(x, p.N, p.C, p.H, p.W), hostTensor(dy, y.Shape...), p)
			_, wdw := convBackRef(dy, x, w, p)
			checkBound(t, "dw", dw.Data, wdw, winoGradBound(x, dy, p))
			// Gradients accumulate: a second call adds the same again.
			be.Conv2dBackwardFilter(dw, hostTensor(x, p.N, p.C, p.H, p.W), hostTensor(dy, y.Shape...), p)
			bound := winoGradBound(x, dy, p)
			for i := range wdw {
				wdw[i] *= 2
				bound[i] = 2*bound[i] + math.Abs(wdw[i])*gamma(1)
			}
			checkBound(t, "dw accumulated", dw.Data, wdw, bound)
		})
	}
}

// winoTile32 computes one m x m output tile of a C-channel 3x3
// convolution with the generic float32 Winograd of mt (the GEMM's sum over
// channels in increasing order with float32 adds): d[ch] are the
// (m+2) x (m+2) patches, g[ch] the filters.
func winoTile32(mt winoMats, d, g [][][]float32) [][]float32 {
	a := mt.m + 2
	s := make([][]float32, a)
	for i := range s {
		s[i] = make([]float32, a)
	}
	for ch := range d {
		u, v := mat32(mt.g, g[ch], mt.g), mat32(mt.bt, d[ch], mt.bt)
		for i := range s {
			for j := range s[i] {
				s[i][j] += u[i][j] * v[i][j]
			}
		}
	}
	return mat32(mt.at, s, mt.at)
}

// TestWinogradTileError measures, on random data (inputs in [-1,1), He-
// scaled filters), the float32 error of F(2x2,3x3) and F(4x4,3x3) tiles
// and of the direct float32 sum against float64, relative to the largest
// output. It checks that F(2x2,3x3) stays within its derived bound and
// that F(4x4,3x3) is the less accurate of the two (the reason this backend
// uses F(2x2,3x3)); -v prints the figures quoted in docs/cpu-speed.md.
func TestWinogradTileError(t *testing.T) {
	r := NewRNG(41)
	for _, C := range []int{64, 256} {
		errs := map[string]float64{}
		boundF2 := 0.0
		var maxY float64
		for trial := 0; trial < 16; trial++ {
			d4, g4 := make([][][]float32, C), make([][][]float32, C) // F(4): 6x6 patches
			dd, gg := make([][][]float64, C), make([][][]float64, C)
			scale := math.Sqrt(2.0 / float64(9*C))
			for ch := 0; ch < C; ch++ {
				d4[ch], dd[ch] = make([][]float32, 6), make([][]float64, 6)
				for i := range d4[ch] {
					d4[ch][i], dd[ch][i] = make([]float32, 6), make([]float64, 6)
					for j := range d4[ch][i] {
						v := float32(2*r.Float64() - 1)
						d4[ch][i][j], dd[ch][i][j] = v, float64(v)
					}
				}
				g4[ch], gg[ch] = make([][]float32, 3), make([][]float64, 3)
				for i := range g4[ch] {
					g4[ch][i], gg[ch][i] = make([]float32, 3), make([]float64, 3)
					for j := range g4[ch][i] {
						v := float32(scale * r.Normal())
						g4[ch][i][j], gg[ch][i][j] = v, float64(v)
					}
				}
			}
			// Exact outputs of the 4x4 tile, and the direct float32 sums.
			var exact [4][4]float64
			var direct [4][4]float32
			for oy := 0; oy < 4; oy++ {
				for ox := 0; ox < 4; ox++ {
					for ch := 0; ch < C; ch++ {
						for i := 0; i < 3; i++ {
							for j := 0; j < 3; j++ {
								exact[oy][ox] += dd[ch][oy+i][ox+j] * gg[ch][i][j]
								direct[oy][ox] += d4[ch][oy+i][ox+j] * g4[ch][i][j]
							}
						}
					}
					maxY = math.Max(maxY, math.Abs(exact[oy][ox]))
					errs["direct"] = math.Max(errs["direct"], math.Abs(float64(direct[oy][ox])-exact[oy][ox]))
				}
			}
			y4 := winoTile32(winoF4, d4, g4)
			for oy := 0; oy < 4; oy++ {
				for ox := 0; ox < 4; ox++ {
					errs[winoF4.name] = math.Max(errs[winoF4.name], math.Abs(float64(y4[oy][ox])-exact[oy][ox]))
				}
			}
			// F(2x2,3x3): the four 2x2 tiles of the same 4x4 output.
			for ty := 0; ty < 2; ty++ {
				for tx := 0; tx < 2; tx++ {
					d2, dd2 := make([][][]float32, C), make([][][]float64, C)
					for ch := 0; ch < C; ch++ {
						d2[ch], dd2[ch] = make([][]float32, 4), make([][]float64, 4)
						for i := 0; i < 4; i++ {
							d2[ch][i] = d4[ch][2*ty+i][2*tx : 2*tx+4]
							dd2[ch][i] = dd[ch][2*ty+i][2*tx : 2*tx+4]
						}
					}
					y2 := winoTile32(winoF2, d2, g4)
					s := make([][]float64, 4)
					for i := range s {
						s[i] = make([]float64, 4)
					}
					for ch := 0; ch < C; ch++ {
						u, v := mat64(winoF2.g, gg[ch], winoF2.g, true), mat64(winoF2.bt, dd2[ch], winoF2.bt, true)
						for i := range s {
							for j := range s[i] {
								s[i][j] += u[i][j] * v[i][j]
							}
						}
					}
					bnd := mat64(winoF2.at, s, winoF2.at, true)
					for i := 0; i < 2; i++ {
						for j := 0; j < 2; j++ {
							e := math.Abs(float64(y2[i][j]) - exact[2*ty+i][2*tx+j])
							lim := gamma(winoRounds(C)+C) * bnd[i][j] // no FMA here: 2 roundings per term
							if e > lim {
								t.Fatalf("C=%d: F(2x2,3x3) error %.3g > bound %.3g", C, e, lim)
							}
							errs[winoF2.name] = math.Max(errs[winoF2.name], e)
							boundF2 = math.Max(boundF2, lim)
						}
					}
				}
			}
		}
		t.Logf("C=%d: max error / max|y|: direct %.3g, %s %.3g, %s %.3g (F2 bound %.3g)", C,
			errs["direct"]/maxY, winoF2.name, errs[winoF2.name]/maxY, winoF4.name, errs[winoF4.name]/maxY, boundF2/maxY)
		if errs[winoF4.name] <= errs[winoF2.name] {
			t.Errorf("C=%d: F(4x4,3x3) error %.3g not above F(2x2,3x3)'s %.3g", C, errs[winoF4.name], errs[winoF2.name])
		}
	}
}

// winoOps runs the three convolution ops of p on be and returns y, dx and
// dw.
func winoOps(be *CPU, p ConvParams, x, w, dy []float64) (y, dx, dw []float32) {
	yt := be.New(p.N, p.K, p.P(), p.Q())
	wt := hostTensor(w, p.K, p.C, 3, 3)
	xt := hostTensor(x, p.N, p.C, p.H, p.W)
	be.Conv2d(yt, xt, wt, p)
	dxt := be.New(p.N, p.C, p.H, p.W)
	dyt := hostTensor(dy, yt.Shape...)
	be.Conv2dBackwardData(dxt, dyt, wt, p)
	dwt := be.New(p.K, p.C, 3, 3)
	be.Conv2dBackwardFilter(dwt, xt, dyt, p)
	return yt.Data, dxt.Data, dwt.Data
}

// TestWinogradBitIdentical: the Winograd path gives bit-identical results
// for 1 and 3 threads, and with the vector transforms (AVX-512: gathered,
// and runs of 16, 8 and 4 tiles) as with the Go loops.
func TestWinogradBitIdentical(t *testing.T) {
	r := NewRNG(51)
	for _, p := range []ConvParams{
		{N: 7, C: 9, H: 8, W: 8, K: 11},  // four runs of 4 tiles per group, several blocks
		{N: 9, C: 5, H: 4, W: 4, K: 6},   // runs of 2 (input), scattered outputs, a ragged block
		{N: 5, C: 4, H: 16, W: 16, K: 3}, // two runs of 8
		{N: 3, C: 5, H: 32, W: 32, K: 4}, // one run of 16
		{N: 2, C: 6, H: 33, W: 31, K: 5}, // row runs and clipped edges
		{N: 40, C: 3, H: 6, W: 2, K: 2},  // one-column tiles, ragged groups
	} {
		p.R, p.S, p.StrideH, p.StrideW, p.PadH, p.PadW = 3, 3, 1, 1, 1, 1
		t.Run(fmt.Sprintf("N%dC%dK%d_%dx%d", p.N, p.C, p.K, p.H, p.W), func(t *testing.T) {
			if tb := winoBlock(p); (p.N*((p.H+1)/2)*((p.W+1)/2)+tb-1)/tb < 2 {
				t.Fatalf("only one block: the threads would not split the work")
			}
			x := randVec(r, p.N*p.C*p.H*p.W, 1)
			w := randVec(r, p.K*p.C*9, 1)
			dy := randVec(r, p.N*p.K*p.H*p.W, 1)
			y1, dx1, dw1 := winoOps(winogradCPU(1, CPUOptions{}), p, x, w, dy)
			y3, dx3, dw3 := winoOps(winogradCPU(3, CPUOptions{}), p, x, w, dy)
			for _, c := range []struct {
				name string
				a, b []float32
			}{{"y", y1, y3}, {"dx", dx1, dx3}, {"dw", dw1, dw3}} {
				if i := bitsEqual(c.a, c.b); i >= 0 {
					t.Fatalf("%s differs between 1 and 3 threads at %d", c.name, i)
				}
			}
			// Backward-data flips the weights inside the filter transform:
			// the same bits as the forward convolution of the flipped weights.
			be := winogradCPU(2, CPUOptions{})
			pt, _ := transposedConv(p)
			wf := hostTensor(flippedRef(w, p.K, p.C), p.C, p.K, 3, 3)
			dxf := be.New(p.N, p.C, p.H, p.W)
			be.Conv2d(dxf, hostTensor(dy, p.N, p.K, p.P(), p.Q()), wf, pt)
			if i := bitsEqual(dx1, dxf.Data); i >= 0 {
				t.Fatalf("dx differs from the forward convolution with flipped weights at %d", i)
			}
			if !useWinoAsm {
				t.Skip("no vector transforms on this CPU")
			}
			useWinoAsm = false
			yg, dxg, dwg := winoOps(winogradCPU(2, CPUOptions{}), p, x, w, dy)
			useWinoAsm = true
			for _, c := range []struct {
				name string
				a, b []float32
			}{{"y", y1, yg}, {"dx", dx1, dxg}, {"dw", dw1, dwg}} {
				if i := bitsEqual(c.a, c.b); i >= 0 {
					t.Fatalf("%s differs between the vector and Go transforms at %d", c.name, i)
				}
			}
		})
	}
}

// TestWinogradModelThreads: whole training steps of the tiny models with
// every eligible convolution on the Winograd path are bit-identical for 1
// and 3 threads (TestThreadCountBitIdentical with the path forced).
func TestWinogradModelThreads(t *testing.T) {
	for _, tc := range tinyConfigs[:2] {
		t.Run(tc.name, func(t *testing.T) {
			one := trainSteps(t, winogradCPU(1, CPUOptions{}), tc.cfg, tc.in, 2)
			three := trainSteps(t, winogradCPU(3, CPUOptions{}), tc.cfg, tc.in, 2)
			for i := range one {
				if j := bitsEqual(one[i], three[i]); j >= 0 {
					t.Fatalf("result %d differs between 1 and 3 threads at element %d", i, j)
				}
			}
		})
	}
}

// TestUseWinograd: which shapes take the path, and the off switch.
func TestUseWinograd(t *testing.T) {
	c := NewCPU(1)
	base := ConvParams{N: 8, C: 64, H: 8, W: 8, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	if !c.winograd(base) {
		t.Errorf("%+v: want Winograd", base)
	}
	for _, f := range []func(*ConvParams){
		func(p *ConvParams) { p.StrideH, p.StrideW = 2, 2 },
		func(p *ConvParams) { p.PadH, p.PadW = 0, 0 },
		func(p *ConvParams) { p.R, p.S, p.PadH, p.PadW = 1, 1, 0, 0 },
		func(p *ConvParams) { p.H, p.W = 1, 1 }, // dead taps: the direct path drops them
		func(p *ConvParams) { p.C = 3 },         // the cifar stem's first convolution
	} {
		p := base
		f(&p)
		if c.winograd(p) {
			t.Errorf("%+v: want the direct path", p)
		}
	}
	if !c.winogradFilterOn(base) {
		t.Errorf("%+v: want a Winograd weight gradient", base)
	}
	narrow := base
	narrow.C, narrow.K = 32, 32
	if !c.winograd(narrow) || c.winogradFilterOn(narrow) {
		t.Errorf("%+v: want Winograd forward and a direct weight gradient", narrow)
	}
	if f := winogradCPU(1, CPUOptions{}); !f.winograd(narrow) || !f.winogradFilterOn(narrow) {
		t.Errorf("%+v: forced options do not send it to the Winograd path", narrow)
	}
	if o := NewCPUWith(CPUOptions{NoWinograd: true}); o.winograd(base) {
		t.Error("NoWinograd: still Winograd")
	}
	c.SetWinograd(false)
	if c.winograd(base) || c.winogradFilterOn(base) {
		t.Error("SetWinograd(false): still Winograd")
	}
}
