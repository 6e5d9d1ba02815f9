package nn

import (
	"github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"
)

// Winograd F(2x2,3x3) for the CPU backend's 3x3, stride-1, pad-1
// convolutions: forward, backward-data (through its transposed
// convolution, which has the same shape) and the weight gradient.
//
// The output is cut into 2x2 tiles; tile (ty, tx) of plane (n, .) reads
// the 4x4 input patch at padded rows 2ty..2ty+3, columns 2tx..2tx+3.
// With the transforms (B^T, G, A^T of Lavin & Gray, 2016)
//
//	U = G g G^T       (4x4 from each 3x3 filter g = w[k, c])
//	V = B^T d B       (4x4 from each input patch d of channel c)
//	M = sum_c U ⊙ V   (per frequency ξ = 0..15: a K x C by C x tiles GEMM)
//	y = A^T M A       (2x2 outputs per tile)
//
// a tile costs 16 multiply-adds per (k, c) instead of 36: 2.25x fewer.
// The weight gradient runs the same algebra backwards: per frequency
// dU = Σ_tiles Z ⊙ V with Z = A e A^T (e: a tile's 2x2 of dy), a K x tiles
// by tiles x C GEMM, then dw += G^T dU G.
//
// Cache blocking (forward): U is transformed once per call (16 x K x C, in
// the wlive scratch) and each U[ξ] packed once for the GEMM (gemm.PackA,
// in the col scratch). Tiles are processed in blocks of tb (a function of
// the shape only; see winoBlock), one block per goroutine at a time: the
// block's V (16 x C x tb) and M (16 x K x tb) live in the goroutine's
// scratch plane and stay in L2 between the input transform, the 16
// single-threaded GEMMs and the output transform, which writes y directly.
//
// The transforms run 16 tiles at a time, one per lane of an AVX-512
// register (cpu_winograd_amd64.s): tiles in runs of 16, 8 or 4 along a
// tile row (planes 32+, 16 and 8 wide; for the input also 2, planes 4
// wide) load and store contiguously and (de)interleave with permutes;
// others gather and scatter. The Go loops
// (other CPUs, odd plane edges, ragged groups) do the same arithmetic in
// the same order, so both give the same bits.
//
// Determinism: every output element is computed by one goroutine, from
// GEMM elements whose summation order (over C, in fixed KC blocks) does
// not depend on the block or the thread count, followed by fixed
// transforms; the weight gradient sums its blocks of tiles in order, one
// frequency per goroutine: results are bit-identical for any number of
// threads.
//
// Error: TestWinogradErrorBound states and checks the bounds, e.g.
// |y - y_exact| <= γ_(C+16) · A^T (Σ_c |G||g||G^T| ⊙ |B^T||d||B|) A
// (elementwise absolute values); measured, F(2x2,3x3) is as accurate as
// the direct sum and F(4x4,3x3) ~10x less (TestWinogradTileError,
// docs/cpu-speed.md), which is why the backend uses F(2x2,3x3).
//
// CPU.SetWinograd(false) (or CPUOptions.NoWinograd) turns the path off
// for one backend; CPU.winograd and CPU.winogradFilterOn say which shapes
// take it.
//
// Channel thresholds (CPUOptions.WinogradMinChannels, default 16, and
// WinogradMinFilterChannels, default 64): below them the per-frequency
// GEMMs are too thin for the transforms to pay (measured with
// BenchmarkConvWinograd: forward wins 1.35-1.5x at 8 channels; the weight
// gradient wins 1.4x and more from 64, is erratic at 32 (0.7-1.3x) and
// loses below; see docs/cpu-speed.md). Tests lower them to force the path
// on tiny models.

// winoBlockBytes bounds a block's transformed input and output (V and M):
// about the L2 of one core.
const winoBlockBytes = 1 << 20

// winoMaxTiles bounds tiles per block (the per-block offset tables are
// fixed-size arrays).
const winoMaxTiles = 512

// winogradShape reports whether convolution p has the Winograd path's
// shape: 3x3, stride 1, pad 1, planes of at least 2x2 (every tap live).
// Backward-data of p is the forward convolution transposedConv(p), which
// has the same shape.
func winogradShape(p ConvParams) bool {
	return p.R == 3 && p.S == 3 && p.StrideH == 1 && p.StrideW == 1 &&
		p.PadH == 1 && p.PadW == 1 && p.H >= 2 && p.W >= 2
}

// SetWinograd turns this backend's Winograd path on (the default) or off. Off, every convolution is a plain float32
// sum of products, whose rounding error the GPU tests' per-op bounds
// assume.
func (c *CPU) SetWinograd(on bool) { c.noWinograd = !on }

// winograd reports whether this backend computes the forward (and
// backward-data) convolution p on the Winograd path: the shape, enough
// channels, and not turned off (SetWinograd).
func (c *CPU) winograd(p ConvParams) bool {
	return !c.noWinograd && winogradShape(p) && min(p.C, p.K) >= c.tune.WinogradMinChannels
}

// winogradFilterOn reports whether it computes the weight gradient of p
// on the Winograd path.
func (c *CPU) winogradFilterOn(p ConvParams) bool {
	return c.winograd(p) && min(p.C, p.K) >= c.tune.WinogradMinFilterChannels
}

// winoBlock returns the tiles per block of the forward convolution p: as
// many as fit winoBlockBytes, a multiple of 32 (the widest micro-panel),
// but small enough to give at least 8 blocks where the batch has the
// tiles. It depends on the shape only.
func winoBlock(p ConvParams) int {
	total := p.N * ((p.P() + 1) / 2) * ((p.Q() + 1) / 2)
	tb := winoBlockBytes / (4 * 16 * (p.C + p.K)) / 32 * 32
	tb = min(max(tb, 32), winoMaxTiles)
	if total < 8*tb {
		tb = max(32, (total/8+31)/32*32)
	}
	return min(tb, total)
}

// winoFilter writes U = G g G^T for every filter g = w[k, c] (3x3),
// frequency-major and transposed, U[ξ*winoStride(K, C) + c*K + k]: the
// GEMMs take U[ξ] as a transposed A operand, which packs with plain row
// copies. With flipped, w is the weight of the convolution whose
// transposedConv this is (C x K x 3 x 3), and g = w[c, k] rotated by 180
// degrees (flipWeights' values, without the pass that stores them).
func (c *CPU) winoFilter(w []float32, K, C int, flipped bool) []float32 {
	kc := winoStride(K, C)
	u := growF32(&c.wlive, 16*kc)
	c.parallel(C, max(1, 4096/K), func(lo, hi int) {
		var gf [9]float32
		for ch := lo; ch < hi; ch++ {
			for k := 0; k < K; k++ { // writes run along k
				var g []float32
				if flipped {
					src := w[(ch*K+k)*9:][:9]
					for i, v := range src {
						gf[8-i] = v
					}
					g = gf[:]
				} else {
					g = w[(k*C+ch)*9:][:9]
				}
				// G g, by columns s: rows g0, (g0+g2+g1)/2, (g0+g2-g1)/2, g2.
				e0, e1, e2 := g[0]+g[6], g[1]+g[7], g[2]+g[8]
				t10, t11, t12 := 0.5*(e0+g[3]), 0.5*(e1+g[4]), 0.5*(e2+g[5])
				t20, t21, t22 := 0.5*(e0-g[3]), 0.5*(e1-g[4]), 0.5*(e2-g[5])
				// (G g) G^T, by rows r: the same along the row.
				o := ch*K + k
				winoFilterRow(u[o:], kc, g[0], g[1], g[2])
				winoFilterRow(u[o+4*kc:], kc, t10, t11, t12)
				winoFilterRow(u[o+8*kc:], kc, t20, t21, t22)
				winoFilterRow(u[o+12*kc:], kc, g[6], g[7], g[8])
			}
		}
	})
	return u
}

// winoStride is the distance between frequencies of a K x C matrix per
// frequency (U, dU): a cache line more than K*C, so that the 16 streams of
// a transform do not all map to the same L1 set.
func winoStride(K, C int) int { return K*C + 16 }

// winoFilterRow stores row (g0, g1, g2) of G g times G^T, (g0,
// (g0+g2+g1)/2, (g0+g2-g1)/2, g2), at u[0], u[st], u[2st], u[3st].
func winoFilterRow(u []float32, st int, g0, g1, g2 float32) {
	e := g0 + g2
	u[0], u[st], u[2*st], u[3*st] = g0, 0.5*(e+g1), 0.5*(e-g1), g2
}

// winoGroup is the tiles per call of the vector transforms.
const winoGroup = 16

// winoGeom is the tile geometry of a Winograd convolution: tiles are
// numbered image-major, then by tile row, then by tile column.
type winoGeom struct {
	C, K, P, Q int
	th, tw     int // tiles per output plane
	ph, wp, hp int // padded input plane: size, width, height
	vec        bool
}

func newWinoGeom(p ConvParams, pl *convPlan) winoGeom {
	g := winoGeom{C: p.C, K: p.K, P: p.P(), Q: p.Q(), th: (p.P() + 1) / 2, tw: (p.Q() + 1) / 2,
		ph: pl.plane(), wp: pl.wp, hp: pl.hp}
	// The vector transforms address with int32 offsets.
	g.vec = useWinoAsm && p.N*max(g.C*g.ph, g.K*g.P*g.Q) < 1<<31-1
	return g
}

// tiles fills, for the len(xoff) tiles from t0, the offset of each tile's
// input patch in the padded input of channel 0 of its image (xoff), of its
// outputs in y or dy (yoff), and whether it is clipped at an odd plane
// edge.
func (g *winoGeom) tiles(t0 int, xoff, yoff []int32, edge []bool) {
	for j := range xoff {
		t := t0 + j
		n, r := t/(g.th*g.tw), t%(g.th*g.tw)
		ty, tx := r/g.tw, r%g.tw
		xoff[j] = int32(n*g.C*g.ph + 2*ty*g.wp + 2*tx)
		yoff[j] = int32(n*g.K*g.P*g.Q + 2*ty*g.Q + 2*tx)
		edge[j] = 2*ty+3 >= g.hp || 2*tx+3 >= g.wp
	}
}

// input writes V = B^T d B of the group of up to 16 tiles whose offsets are
// xoff (tile t0 first) into v (lane 0 = the group's first tile; channels tb
// apart, frequencies st apart).
func (g *winoGeom) input(v []float32, st, tb int, xp []float32, t0 int, xoff []int32, edge []bool) {
	n := len(xoff)
	if !g.vec || n < winoGroup || anyTrue(edge) {
		winoInputGo(v, xp, g.C, tb, st, 0, n, g.ph, g.wp, g.hp, xoff, edge)
		return
	}
	x0 := xoff[0]
	switch winoRuns(g.tw, t0) {
	case 2: // two runs of 8 tiles (or one of 16)
		winoInputRowAVX512(&v[0], 4*st, &xp[x0], 4*g.ph, g.C, 4*g.wp, 4*tb, 4*int(xoff[8]-x0))
	case 4:
		winoInputQuadAVX512(&v[0], 4*st, &xp[x0], 4*g.ph, g.C, 4*g.wp, 4*tb,
			4*int(xoff[4]-x0), 4*int(xoff[8]-x0), 4*int(xoff[12]-x0))
	case 8:
		var ro [8]int
		for i := range ro {
			ro[i] = 4 * int(xoff[2*i]-x0)
		}
		winoInputOctAVX512(&v[0], 4*st, &xp[x0], 4*g.ph, g.C, 4*g.wp, 4*tb, &ro[0])
	default:
		winoInputAVX512(&v[0], 4*st, &xp[0], 4*g.ph, g.C, &xoff[0], 4*g.wp, 4*tb)
	}
}

// output writes y = A^T M A of a group of tiles (as input; M's channels tb
// apart, frequencies st apart) into yd.
func (g *winoGeom) output(yd, m []float32, st, tb int, t0 int, yoff []int32, edge []bool) {
	n := len(yoff)
	if !g.vec || n < winoGroup || anyTrue(edge) {
		winoOutputGo(yd, m, g.K, tb, st, 0, n, g.P, g.Q, yoff, edge)
		return
	}
	y0 := yoff[0]
	pq := g.P * g.Q
	switch winoRuns(g.tw, t0) {
	case 2:
		winoOutputRowAVX512(&yd[y0], &m[0], 4*st, g.K, 4*tb, 4*pq, 4*g.Q, 4*int(yoff[8]-y0))
	case 4:
		winoOutputQuadAVX512(&yd[y0], &m[0], 4*st, g.K, 4*tb, 4*pq, 4*g.Q,
			4*int(yoff[4]-y0), 4*int(yoff[8]-y0), 4*int(yoff[12]-y0))
	default:
		winoOutputAVX512(&yd[0], &m[0], 4*st, g.K, 4*tb, &yoff[0], 4*pq, 4*g.Q)
	}
}

// gradOut writes Z = A e A^T of a group of tiles (e: the tile's 2x2 values
// of dy, at yoff) into z (as input, with K channels).
func (g *winoGeom) gradOut(z []float32, st, tb int, dyd []float32, t0 int, yoff []int32, edge []bool) {
	n := len(yoff)
	if !g.vec || n < winoGroup || anyTrue(edge) {
		winoGradOutGo(z, dyd, g.K, tb, st, 0, n, g.P, g.Q, yoff, edge)
		return
	}
	y0 := yoff[0]
	pq := g.P * g.Q
	switch winoRuns(g.tw, t0) {
	case 2:
		winoGradOutRowAVX512(&z[0], 4*st, &dyd[y0], g.K, 4*tb, 4*pq, 4*g.Q, 4*int(yoff[8]-y0))
	case 4:
		winoGradOutQuadAVX512(&z[0], 4*st, &dyd[y0], g.K, 4*tb, 4*pq, 4*g.Q,
			4*int(yoff[4]-y0), 4*int(yoff[8]-y0), 4*int(yoff[12]-y0))
	default:
		winoGradOutAVX512(&z[0], 4*st, &dyd[0], g.K, 4*tb, 4*pq, 4*g.Q, &yoff[0])
	}
}

// winogradForward computes y = conv(x, w) for a shape that c.winograd
// accepts; with flipped, w is the weight of the convolution whose
// transposedConv p is, and y = conv(x, flipWeights(w)) (its backward-data).
func (c *CPU) winogradForward(yd, xd, wd []float32, p ConvParams, flipped bool) {
	K, C := p.K, p.C
	tb := winoBlock(p)
	pl := c.plan(p)
	g := newWinoGeom(p, pl)
	total := p.N * g.th * g.tw
	blocks := (total + tb - 1) / tb
	u := c.winoFilter(wd, K, C, flipped)
	// Each U[ξ] is packed once for the GEMMs of every block (in the col
	// scratch, which only strided backward-data uses otherwise).
	asz := gemm.PackedASize(K, C)
	apk := growF32(&c.col, 16*asz)
	var pas [16]gemm.PackedA
	c.parallel(16, 1, func(lo, hi int) {
		for f := lo; f < hi; f++ {
			pas[f] = gemm.PackA(true, K, C, u[f*winoStride(K, C):], K, apk[f*asz:][:asz])
		}
	})
	xp := c.padInput(xd, p, pl)
	// Frequencies are sv (sm) apart in V (M): a cache line more than C*tb
	// (K*tb), so that the 16 streams of a transform do not all map to the
	// same L1 set (their natural distance is a multiple of 4 KiB).
	sv, sm := C*tb+16, K*tb+16
	need := 16 * (sv + sm)
	for part := 0; part < c.threads; part++ {
		c.planeBuf(part, need) // grown here, not inside the goroutines
	}
	c.workspaces()
	c.parallelParts(blocks, 1, func(part, lo, hi int) {
		buf := c.planes[part][:need]
		v, m := buf[:16*sv], buf[16*sv:]
		ws := c.work[part]
		var xoff, yoff [winoMaxTiles]int32
		var edge [winoMaxTiles]bool
		for b := lo; b < hi; b++ {
			t0 := b * tb
			nb := min(tb, total-t0)
			g.tiles(t0, xoff[:nb], yoff[:nb], edge[:nb])
			for j := 0; j < nb; j += winoGroup {
				j1 := min(j+winoGroup, nb)
				g.input(v[j:], sv, tb, xp, t0+j, xoff[j:j1], edge[j:j1])
			}
			for f := 0; f < 16; f++ {
				ws.SgemmPackedA(&pas[f], false, nb, 1, v[f*sv:], tb, 0, m[f*sm:], tb)
			}
			for j := 0; j < nb; j += winoGroup {
				j1 := min(j+winoGroup, nb)
				g.output(yd, m[j:], sm, tb, t0+j, yoff[j:j1], edge[j:j1])
			}
		}
	})
}

// Weight-gradient blocks: CPUOptions.WinogradFilterBlockBytes bounds the
// transformed input and dy (V and Z) of one block, and
// WinogradFilterMinTiles is the least tiles per block (tests shrink them
// to force many blocks). 2 MiB keeps a block in the caches between the
// transforms and the products: with 8 MiB blocks the 64- and 128-channel
// weight gradients of the imagenet stem ran 1.4-1.9x slower
// (BenchmarkConvOps, CPU-ms); at least 128 tiles keep the products of wide
// layers from being bound by their dU reads and writes (k = tiles per
// block).

// winoGradBlock is the tiles per block of the weight gradient of p: as
// many as fit the block bytes, a multiple of 32, at least the minimum
// tiles. It depends on the shape and the options only.
func (c *CPU) winoGradBlock(p ConvParams) int {
	nb := c.tune.WinogradFilterBlockBytes / (4 * 16 * (p.C + p.K)) / 32 * 32
	total := p.N * ((p.P() + 1) / 2) * ((p.Q() + 1) / 2)
	return min(max(nb, c.tune.WinogradFilterMinTiles), (total+31)/32*32)
}

// winogradFilter adds the weight gradient of a convolution that
// c.winogradFilterOn accepts to dw: per frequency ξ, dU[ξ] (K x C) = Σ_tiles Z[ξ] V[ξ]^T with
// Z = A e A^T (e: a tile's 2x2 of dy) and V = B^T d B, then dw += G^T dU G.
// Tiles go in blocks (winoGradBlock); for each block all threads transform
// its tiles, then each frequency's product is added to dU by one thread:
// every dU element is summed over the blocks in order, so the result does
// not depend on the thread count.
func (c *CPU) winogradFilter(dwd, xd, dyd []float32, p ConvParams) {
	K, C := p.K, p.C
	pl := c.plan(p)
	g := newWinoGeom(p, pl)
	total := p.N * g.th * g.tw
	nb := c.winoGradBlock(p)
	sv, sz := C*nb+16, K*nb+16
	buf := growF32(&c.col, 16*(sv+sz))
	v, z := buf[:16*sv], buf[16*sv:]
	kc := winoStride(K, C)
	du := growF32(&c.dwlive, 16*kc)
	xp := c.padInput(xd, p, pl)
	c.workspaces()
	for t0 := 0; t0 < total; t0 += nb {
		n := min(nb, total-t0)
		c.parallel((n+winoGroup-1)/winoGroup, 1, func(lo, hi int) {
			var xoff, yoff [winoGroup]int32
			var edge [winoGroup]bool
			for gr := lo; gr < hi; gr++ {
				j := gr * winoGroup
				m := min(winoGroup, n-j)
				g.tiles(t0+j, xoff[:m], yoff[:m], edge[:m])
				g.input(v[j:], sv, nb, xp, t0+j, xoff[:m], edge[:m])
				g.gradOut(z[j:], sz, nb, dyd, t0+j, yoff[:m], edge[:m])
			}
		})
		beta := float32(min(t0, 1))
		c.parallelParts(16, 1, func(part, lo, hi int) {
			for f := lo; f < hi; f++ {
				c.work[part].Sgemm(false, true, K, C, n, 1, z[f*sz:], nb, v[f*sv:], nb, beta, du[f*kc:], C)
			}
		})
	}
	c.parallel(K*C, 1024, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			// G^T X, by columns s: rows x0 + (x1+x2)/2, (x1-x2)/2, (x1+x2)/2 + x3.
			var q [12]float32 // 3 rows x 4 columns
			for s := 0; s < 4; s++ {
				x0, x1, x2, x3 := du[s*kc+i], du[(4+s)*kc+i], du[(8+s)*kc+i], du[(12+s)*kc+i]
				e := 0.5 * (x1 + x2)
				q[s], q[4+s], q[8+s] = x0+e, 0.5*(x1-x2), e+x3
			}
			// (G^T X) G, by rows, added to dw.
			d := dwd[i*9:][:9]
			for r := 0; r < 3; r++ {
				x0, x1, x2, x3 := q[r*4], q[r*4+1], q[r*4+2], q[r*4+3]
				e := 0.5 * (x1 + x2)
				d[r*3] += x0 + e
				d[r*3+1] += 0.5 * (x1 - x2)
				d[r*3+2] += e + x3
			}
		}
	})
}

// winoRuns is how the 16 tiles from tile t (a multiple of 16) split into
// runs of consecutive tiles within tile rows, for the vector transforms: 2
// (two runs of 8, or one of 16: tw a multiple of 8), 4 (four runs of 4:
// tw = 4), 8 (eight runs of 2: tw = 2; only the input transform has this
// variant) or 0 (gathered).
func winoRuns(tw, t int) int {
	if t%winoGroup != 0 {
		return 0
	}
	switch {
	case tw%8 == 0:
		return 2
	case tw == 4:
		return 4
	case tw == 2:
		return 8
	}
	return 0
}

func anyTrue(b []bool) bool {
	for _, v := range b {
		if v {
			return true
		}
	}
	return false
}

// winoInputGo writes V (16 x C x tb: v[ξ*st + ch*tb + j]) = B^T d B for
// tiles j0 <= j < j1 of a block: d is the 4x4 patch at xp[ch*ph + xoff[j]]
// (rows wp apart; xoff[j] is the tile's offset in channel 0 of its image);
// an edge tile (odd plane sizes) may reach past the padded plane, where it
// reads zeros.
func winoInputGo(v, xp []float32, C, tb, st, j0, j1, ph, wp, hp int, xoff []int32, edge []bool) {
	for ch := 0; ch < C; ch++ {
		out := v[ch*tb:]
		for j := j0; j < j1; j++ {
			var d [16]float32
			o := ch*ph + int(xoff[j])
			if !edge[j] {
				r0, r1, r2, r3 := xp[o:][:4], xp[o+wp:][:4], xp[o+2*wp:][:4], xp[o+3*wp:][:4]
				for i := 0; i < 4; i++ {
					d[i], d[4+i], d[8+i], d[12+i] = r0[i], r1[i], r2[i], r3[i]
				}
			} else {
				y0, x0 := (o%ph)/wp, (o%ph)%wp
				for r := 0; r < 4; r++ {
					for s := 0; s < 4; s++ {
						if y0+r < hp && x0+s < wp {
							d[r*4+s] = xp[o+r*wp+s]
						}
					}
				}
			}
			// B^T d: rows.
			var t [16]float32
			for i := 0; i < 4; i++ {
				d0, d1, d2, d3 := d[i], d[4+i], d[8+i], d[12+i]
				t[i], t[4+i], t[8+i], t[12+i] = d0-d2, d1+d2, d2-d1, d1-d3
			}
			// (B^T d) B: columns.
			for r := 0; r < 4; r++ {
				d0, d1, d2, d3 := t[r*4], t[r*4+1], t[r*4+2], t[r*4+3]
				f := r * 4 * st
				out[f+j] = d0 - d2
				out[f+st+j] = d1 + d2
				out[f+2*st+j] = d2 - d1
				out[f+3*st+j] = d1 - d3
			}
		}
	}
}

// winoOutputGo writes y = A^T M A for tiles j0 <= j < j1 of a block: M is
// m[ξ*st + k*tb + j] (16 x K x tb), and tile j's 2x2 outputs of channel k
// go to yd[k*P*Q + yoff[j]] (rows Q apart), clipped at odd plane edges.
func winoOutputGo(yd, m []float32, K, tb, st, j0, j1, P, Q int, yoff []int32, edge []bool) {
	pq := P * Q
	for k := 0; k < K; k++ {
		in := m[k*tb:]
		for j := j0; j < j1; j++ {
			var s [8]float32 // A^T M: 2 rows x 4 columns
			for c := 0; c < 4; c++ {
				m0, m1, m2, m3 := in[c*st+j], in[(4+c)*st+j], in[(8+c)*st+j], in[(12+c)*st+j]
				s[c], s[4+c] = m0+m1+m2, m1-m2-m3
			}
			y00, y01 := s[0]+s[1]+s[2], s[1]-s[2]-s[3]
			y10, y11 := s[4]+s[5]+s[6], s[5]-s[6]-s[7]
			o := k*pq + int(yoff[j])
			if !edge[j] {
				r0, r1 := yd[o:][:2], yd[o+Q:][:2]
				r0[0], r0[1], r1[0], r1[1] = y00, y01, y10, y11
				continue
			}
			y0, x0 := (o%pq)/Q, o%Q
			yd[o] = y00
			if x0+1 < Q {
				yd[o+1] = y01
			}
			if y0+1 < P {
				yd[o+Q] = y10
				if x0+1 < Q {
					yd[o+Q+1] = y11
				}
			}
		}
	}
}

// winoGradOutGo writes Z = A e A^T for tiles j0 <= j < j1: e is tile j's
// 2x2 of dy channel k at dyd[k*P*Q + yoff[j]] (rows Q apart; zero past an
// odd plane edge), and Z goes to z[ξ*st + k*tb + j].
func winoGradOutGo(z, dyd []float32, K, tb, st, j0, j1, P, Q int, yoff []int32, edge []bool) {
	pq := P * Q
	for k := 0; k < K; k++ {
		out := z[k*tb:]
		for j := j0; j < j1; j++ {
			o := k*pq + int(yoff[j])
			var e00, e01, e10, e11 float32
			if !edge[j] {
				r0, r1 := dyd[o:][:2], dyd[o+Q:][:2]
				e00, e01, e10, e11 = r0[0], r0[1], r1[0], r1[1]
			} else {
				y0, x0 := (o%pq)/Q, o%Q
				e00 = dyd[o]
				if x0+1 < Q {
					e01 = dyd[o+1]
				}
				if y0+1 < P {
					e10 = dyd[o+Q]
					if x0+1 < Q {
						e11 = dyd[o+Q+1]
					}
				}
			}
			// A e: rows (e0, e0+e1, e0-e1, -e1); then the same along columns.
			rows := [4][2]float32{{e00, e01}, {e00 + e10, e01 + e11}, {e00 - e10, e01 - e11}, {-e10, -e11}}
			for r, ab := range rows {
				a, b := ab[0], ab[1]
				f := r * 4 * st
				out[f+j] = a
				out[f+st+j] = a + b
				out[f+2*st+j] = a - b
				out[f+3*st+j] = -b
			}
		}
	}
}
