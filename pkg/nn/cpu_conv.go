package nn

import "github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"

// Convolutions of the CPU backend as GEMMs over a column matrix.
//
// The column matrix of images [n0, n0+g) is (C*T) x (g*P*Q): row ch*T+t
// holds, for every image and output pixel, the input pixel under live tap t
// of channel ch; image i owns columns [i*P*Q, (i+1)*P*Q). Then
//
//	forward:         Y  (K x N*PQ)   = Wt (K x CT) * col
//	backward filter: dWt (K x CT)    += dY (K x N*PQ) * col^T
//	backward data:   dcol (CT x G*PQ) = Wt^T * dY, then col2im into dx
//
// Backward-data of a stride-1 convolution is itself a forward convolution
// of dy (weights transposed and flipped, padding R-1-PadH), so it takes the
// forward path instead: a GEMM with k = K*R*S rather than K, and no col2im.
//
// Forward and backward-filter never store col: the GEMM packs its B
// operand straight from the input (implicit im2col, convB), for the whole
// batch in one product. The packing is a few short contiguous copies per
// row of the panel (gemm.CopySegments: masked vector moves on AVX-512).
// A backward-filter product with a narrow dW (the stem's 7x7 conv: C*T =
// 147) is instead cut into a fixed number of image chunks, one
// single-threaded product each, whose partial sums are added in chunk
// order. Backward-data of a strided convolution stores dcol for chunks of
// G images (G a function of the shape only) and scatters it with col2im.
//
// Padding: the input is first copied into zero-bordered planes of
// (H+2*PadH) x (W+2*PadW) (skipped when there is no padding and stride 1),
// stored as four phase planes for stride 2 (see convPlan), so every gather
// is a plain load and every output row under a tap is one contiguous run.
// col2im accumulates into such a plane and keeps its interior; for small
// planes it instead gathers, per dx pixel, the column entries over it
// (convPlan.pixelTerms), in the same order.
//
// Live taps: a kernel tap (r, s) whose window reads only padding for every
// output pixel contributes exact zeros, so it is left out of the products
// (a 3x3 pad-1 convolution over a 1x1 plane keeps only its centre tap: 9x
// fewer multiply-adds). Wt is then the weight restricted to the live taps
// (gathered per call); with every tap live it is the weight itself. When
// the output is 1x1 and the live taps read the input pixels one each, in
// order (pointwise), x and y as batch matrices are the products' operands
// and no padded copy, gather or scatter is made.
//
// Convolutions whose every output window covers the whole input plane
// (3x3 pad 1 on 2x2 planes) are dense products instead (cpu_dense.go).
//
// Determinism: every output element is produced by one GEMM element (fixed
// summation order, any thread count), by a fixed-order sum of chunk
// partials, or, in col2im, by one goroutine adding its taps in increasing
// order; chunkings depend on the shape only. A 1x1 stride-1 unpadded
// convolution over a large plane skips the column matrix: x_n is already
// its B operand.

// convPlan is the shape-only part of a convolution: live taps and the
// gather table into padded planes.
//
// Layout of a padded plane (hp x wp, the input at row PadH, column PadW):
// row-major for stride 1; for stride 2 it is stored as four phase planes
// (even/odd rows x even/odd columns, hs x ws each), so that a stride-2
// window walks consecutive elements of one phase plane, exactly as a
// stride-1 window walks its plane: every output row under a tap is then one
// contiguous run in both cases.
type convPlan struct {
	taps []int   // live taps r*S+s, increasing
	tab  []int32 // len(taps)*P*Q: plane index read by (tap, pixel)
	// tab[t*PQ+o] = tapOff[t] + pixOff[o]: a tap shifts the window, a
	// pixel places it.
	tapOff []int
	pixOff []int
	hp, wp int  // padded plane
	phase  bool // stride 2: four phase planes of hs x ws
	hs, ws int
	copyIn bool       // planes are copied into the padded layout (padding or phase)
	rowRun bool       // an output row under a tap is contiguous in the plane
	q      int        // output width
	dense  []int      // newDenseTaps, set on first use by a dense convolution
	px     *convTerms // pixelTerms, set on first use by col2im
}

// full reports whether every tap of p is live.
func (pl *convPlan) full(p ConvParams) bool { return len(pl.taps) == p.R*p.S }

// plane is the padded plane's size.
func (pl *convPlan) plane() int {
	if pl.phase {
		return 4 * pl.hs * pl.ws
	}
	return pl.hp * pl.wp
}

// pos is where padded-plane element (y, x) is stored.
func (pl *convPlan) pos(y, x int) int {
	if pl.phase {
		return ((y&1)*2+(x&1))*pl.hs*pl.ws + (y>>1)*pl.ws + x>>1
	}
	return y*pl.wp + x
}

func newConvPlan(p ConvParams) *convPlan {
	P, Q := p.P(), p.Q()
	pl := &convPlan{hp: p.H + 2*p.PadH, wp: p.W + 2*p.PadW, q: Q}
	pl.phase = p.StrideH == 2 && p.StrideW == 2
	pl.hs, pl.ws = (pl.hp+1)/2, (pl.wp+1)/2
	pl.copyIn = p.PadH > 0 || p.PadW > 0 || pl.phase
	pl.rowRun = p.StrideW == 1 || pl.phase
	row := make([]int32, P*Q)
	for r := 0; r < p.R; r++ {
		for s := 0; s < p.S; s++ {
			live := false
			for oh := 0; oh < P; oh++ {
				ih := oh*p.StrideH + r // in padded coordinates
				for ow := 0; ow < Q; ow++ {
					iw := ow*p.StrideW + s
					row[oh*Q+ow] = int32(pl.pos(ih, iw))
					if ih >= p.PadH && ih < p.PadH+p.H && iw >= p.PadW && iw < p.PadW+p.W {
						live = true
					}
				}
			}
			if live {
				pl.taps = append(pl.taps, r*p.S+s)
				pl.tab = append(pl.tab, row...)
				pl.tapOff = append(pl.tapOff, pl.pos(r, s))
			}
		}
	}
	pl.pixOff = make([]int, P*Q)
	for oh := 0; oh < P; oh++ {
		for ow := 0; ow < Q; ow++ {
			if pl.phase {
				pl.pixOff[oh*Q+ow] = oh*pl.ws + ow
			} else {
				pl.pixOff[oh*Q+ow] = oh*p.StrideH*pl.wp + ow*p.StrideW
			}
		}
	}
	return pl
}

// plan returns the cached plan of p's shape (N does not matter).
func (c *CPU) plan(p ConvParams) *convPlan {
	key := p
	key.N = 0
	if pl, ok := c.plans[key]; ok {
		return pl
	}
	if c.plans == nil {
		c.plans = map[ConvParams]*convPlan{}
	}
	pl := newConvPlan(p)
	c.plans[key] = pl
	return pl
}

// convChunk is the number of images per backward-data chunk for shape p:
// the fewest chunks whose dcol fits the ColBudget option, images spread
// evenly.
func (c *CPU) convChunk(p ConvParams, taps int) int {
	per := p.C * taps * p.P() * p.Q()
	g := max(1, min(c.tune.ColBudget/max(per, 1), p.N))
	chunks := (p.N + g - 1) / g
	return (p.N + chunks - 1) / chunks
}

// convDirect reports whether the convolution is a plain matrix product per
// image (1x1 kernel, stride 1, no padding) over a plane big enough that a
// per-image GEMM is efficient.
func convDirect(p ConvParams) bool {
	return p.R == 1 && p.S == 1 && p.StrideH == 1 && p.StrideW == 1 &&
		p.PadH == 0 && p.PadW == 0 && p.H*p.W >= 256
}

// padInput returns x as padded planes (N*C planes of pl.plane()): x itself
// when the layout is x's own (no padding, stride 1), else a copy in the
// backend's scratch (shared by all shapes: each plane's padding is zeroed
// here, with the interior copied in).
func (c *CPU) padInput(x []float32, p ConvParams, pl *convPlan) []float32 {
	if !pl.copyIn {
		return x
	}
	hw, ph := p.H*p.W, pl.plane()
	xp := growF32(&c.xpad, p.N*p.C*ph)
	if usePadAsm && !pl.phase && p.W <= 16 && p.N*p.C*hw > 0 {
		// Small planes: one call per range of planes (a clear and a
		// masked store per row), no per-plane calls.
		_ = x[p.N*p.C*hw-1]
		off := p.PadH*pl.wp + p.PadW
		c.parallel(p.N*p.C, max(1, elemGrain/ph), func(lo, hi int) {
			padPlanesAVX512(&xp[lo*ph], &x[lo*hw], hi-lo, p.H, p.W, pl.wp, ph, off)
		})
		return xp
	}
	if usePadAsm && pl.phase && p.W <= 32 && p.N*p.C*hw > 0 {
		_ = x[p.N*p.C*hw-1]
		c.parallel(p.N*p.C, max(1, elemGrain/ph), func(lo, hi int) {
			padPhaseAVX512(&xp[lo*ph], &x[lo*hw], hi-lo, p.H, p.W, p.PadH, p.PadW, pl.hs, pl.ws, &laneTables)
		})
		return xp
	}
	// Loop constants in locals: the stores into xp could alias pl's
	// fields as far as the compiler knows.
	H, W, padH, padW, hsws, ws := p.H, p.W, p.PadH, p.PadW, pl.hs*pl.ws, pl.ws
	c.parallel(p.N*p.C, max(1, elemGrain/ph), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			dst, src := xp[u*ph:][:ph], x[u*hw:][:hw]
			if pl.phase {
				clear(dst)
				for h := 0; h < H; h++ {
					// Even and odd padded columns go to two phase planes.
					in, y := src[h*W:][:W], padH+h
					for b := 0; b < 2; b++ {
						row := dst[((y&1)*2+b)*hsws+(y>>1)*ws:][:ws]
						for w := (b - padW) & 1; w < W; w += 2 {
							row[(padW+w)>>1] = in[w]
						}
					}
				}
				continue
			}
			// One clear of the plane, then the rows: for small planes the
			// per-row clears of the borders cost more than the copies.
			clear(dst)
			for h := 0; h < p.H; h++ {
				copyShort(dst[(p.PadH+h)*pl.wp+p.PadW:][:p.W], src[h*p.W:][:p.W])
			}
		}
	})
	return xp
}

// planeBuf returns goroutine part's scratch plane of n elements.
func (c *CPU) planeBuf(part, n int) []float32 {
	for len(c.planes) <= part {
		c.planes = append(c.planes, nil)
	}
	return growF32(&c.planes[part], n)
}

// col2im sets dx for images [n0, n0+g) to the sum of the column-matrix
// entries (col: C*T rows, leading dimension ld) that the gather reads from
// each pixel, adding the taps of a pixel in increasing order.
func (c *CPU) col2im(dx []float32, col []float32, ld int, n0, g int, p ConvParams, pl *convPlan) {
	pq := p.P() * p.Q()
	hw, ph := p.H*p.W, pl.plane()
	T := len(pl.taps)
	for part := 0; part < c.threads; part++ {
		c.planeBuf(part, ph) // grown here, not inside the goroutines
	}
	// Loop constants in locals: the stores into buf could alias pl's
	// fields as far as the compiler knows.
	W, padH, padW, hsws, ws := p.W, p.PadH, p.PadW, pl.hs*pl.ws, pl.ws
	if p.R == 1 && p.S == 1 && p.PadH == 0 && p.PadW == 0 {
		// A 1x1 kernel without padding (the strided downsample): each
		// pixel is under at most one column entry, so dx is that entry
		// or 0, written straight from col.
		P, Q, sh, sw := p.P(), p.Q(), p.StrideH, p.StrideW
		c.parallel(g*p.C, max(1, elemGrain/hw), func(lo, hi int) {
			for u := lo; u < hi; u++ {
				i, ch := u/p.C, u%p.C
				out := dx[((n0+i)*p.C+ch)*hw:][:hw]
				src := col[ch*ld+i*pq:][:pq]
				clear(out)
				for oh := 0; oh < P; oh++ {
					row := out[oh*sh*W:]
					for ow, v := range src[oh*Q : oh*Q+Q] {
						row[ow*sw] = v
					}
				}
			}
		})
		return
	}
	if px := pl.pixelTerms(p, c.tune.PixelTermsMax); px != nil {
		// Small planes: each pixel gathers its few column entries (at most
		// one per tap, in increasing tap order from 0: the same sums as
		// the plane buffer below, with no clear, scatter or copy-out).
		c.parallel(g*p.C, max(1, elemGrain/(4*hw)), func(lo, hi int) {
			for u := lo; u < hi; u++ {
				i, ch := u/p.C, u%p.C
				out := dx[((n0+i)*p.C+ch)*hw:][:hw]
				src := col[ch*T*ld+i*pq:]
				for j := range out {
					v := float32(0)
					for _, tm := range px.terms[px.start[j]:px.start[j+1]] {
						v += src[int(tm.t)*ld+int(tm.o)]
					}
					out[j] = v
				}
			}
		})
		return
	}
	c.parallelParts(g*p.C, 1, func(part, lo, hi int) {
		buf := c.planes[part][:ph]
		for u := lo; u < hi; u++ {
			i, ch := u/p.C, u%p.C
			clear(buf)
			for t := 0; t < T; t++ {
				src := col[(ch*T+t)*ld+i*pq:][:pq]
				idx := pl.tab[t*pq:][:pq]
				if !pl.rowRun {
					for o, j := range idx {
						buf[j] += src[o]
					}
					continue
				}
				for o := 0; o < pq; o += pl.q { // one output row: contiguous in buf
					dst := buf[idx[o]:][:pl.q]
					for k, v := range src[o : o+pl.q] {
						dst[k] += v
					}
				}
			}
			out := dx[((n0+i)*p.C+ch)*hw:][:hw]
			for h := 0; h < p.H; h++ {
				if !pl.phase {
					copyShort(out[h*p.W:][:p.W], buf[(p.PadH+h)*pl.wp+p.PadW:][:p.W])
					continue
				}
				// Even and odd padded columns come from two phase planes
				// (padInput's layout, read back).
				o, y := out[h*W:][:W], padH+h
				for b := 0; b < 2; b++ {
					row := buf[((y&1)*2+b)*hsws+(y>>1)*ws:][:ws]
					for w := (b - padW) & 1; w < W; w += 2 {
						o[w] = row[(padW+w)>>1]
					}
				}
			}
		}
	})
}

// convTerms lists, per input pixel j of a plane, the column entries that
// col2im adds into it: terms[start[j]:start[j+1]], each a live tap t and
// an output pixel o, in increasing t (one entry per tap at most).
type convTerms struct {
	start []int32
	terms []struct{ t, o int32 }
}

// pixelTerms returns the plan's per-pixel col2im terms (built on first
// use), or nil for planes with more than maxTerms terms (the PixelTermsMax
// option: larger planes use col2im's plane buffer).
func (pl *convPlan) pixelTerms(p ConvParams, maxTerms int) *convTerms {
	P, Q, T := p.P(), p.Q(), len(pl.taps)
	if T*P*Q > maxTerms {
		return nil
	}
	if pl.px != nil {
		return pl.px
	}
	hw := p.H * p.W
	pix := make([]int32, T*P*Q) // input pixel of (t, o), or -1
	count := make([]int32, hw+1)
	for t, tap := range pl.taps {
		r, s := tap/p.S, tap%p.S
		for o := 0; o < P*Q; o++ {
			ih, iw := o/Q*p.StrideH+r-p.PadH, o%Q*p.StrideW+s-p.PadW
			pix[t*P*Q+o] = -1
			if ih >= 0 && ih < p.H && iw >= 0 && iw < p.W {
				pix[t*P*Q+o] = int32(ih*p.W + iw)
				count[ih*p.W+iw+1]++
			}
		}
	}
	for j := 0; j < hw; j++ {
		count[j+1] += count[j]
	}
	px := &convTerms{start: count, terms: make([]struct{ t, o int32 }, count[hw])}
	fill := append([]int32(nil), count[:hw]...)
	for t := 0; t < T; t++ { // increasing t: each pixel's terms in tap order
		for o := 0; o < P*Q; o++ {
			if j := pix[t*P*Q+o]; j >= 0 {
				px.terms[fill[j]] = struct{ t, o int32 }{int32(t), int32(o)}
				fill[j]++
			}
		}
	}
	pl.px = px
	return px
}

// gatherChunk copies dy of images [n0,n0+g), (g,K,PQ), into m (K x g*PQ).
func (c *CPU) gatherChunk(m, dy []float32, n0, g, k, pq int) {
	ld := g * pq
	c.parallel(g*k, max(1, 4096/pq), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, kk := u/k, u%k
			dst, src := m[kk*ld+i*pq:][:pq], dy[((n0+i)*k+kk)*pq:][:pq]
			if pq < 16 {
				for j := range dst {
					dst[j] = src[j]
				}
				continue
			}
			copy(dst, src)
		}
	})
}

// scatterChunk copies m (K x g*PQ) into y of images [n0,n0+g), (g,K,PQ).
func (c *CPU) scatterChunk(y, m []float32, n0, g, k, pq int) {
	ld := g * pq
	c.parallel(g*k, max(1, 4096/pq), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, kk := u/k, u%k
			dst, src := y[((n0+i)*k+kk)*pq:][:pq], m[kk*ld+i*pq:][:pq]
			if pq < 16 {
				for j := range dst {
					dst[j] = src[j]
				}
				continue
			}
			copy(dst, src)
		}
	})
}

// convB is the column matrix of all images of x (padded planes) as a GEMM
// B operand packed on the fly (implicit im2col): op(B)[k, j] with
// k = ch*T+t (channel, live tap) and j = i*PQ+o (image, output pixel) is
// plane (i, ch) at tab[t*PQ+o]. The forward product uses it as B; the
// backward-filter product uses its transpose (trans). The packed values
// are exactly the column matrix's, so the products are bit-identical to an
// explicit im2col followed by Sgemm.
type convB struct {
	x     []float32 // padded planes (N*C of pl.plane())
	C, T  int
	pq    int
	pl    *convPlan
	trans bool // op(B) = col^T: k = i*PQ+o, j = ch*T+t
}

// maxNR bounds the micro-panel width a packer supports (the widest kernel
// has 32 columns).
const maxNR = 64

// PackB implements gemm.BPacker.
func (b *convB) PackB(dst, scratch []float32, nr, p0, kc, j0, nc int) {
	if nr > maxNR {
		panic("nn: convB: micro-panel wider than maxNR")
	}
	for q := 0; q*nr < nc; q++ {
		panel := dst[q*nr*kc:][:nr*kc]
		cols := min(nr, nc-q*nr)
		if b.trans {
			b.packT(panel, scratch[:nr*kc], nr, p0, kc, j0+q*nr, cols)
		} else {
			b.pack(panel, nr, p0, kc, j0+q*nr, cols)
		}
		if cols < nr {
			for p := 0; p < kc; p++ {
				clear(panel[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// copyShort is copy for the short rows of small planes, where memmove's
// call costs more than the copy: 16-byte moves (the compiler turns larger
// fixed-size array moves back into memmove calls), then single elements.
func copyShort(dst, src []float32) {
	n := len(dst)
	if n > 64 {
		copy(dst, src)
		return
	}
	src = src[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		*(*[4]float32)(dst[i : i+4]) = *(*[4]float32)(src[i : i+4])
	}
	for ; i < n; i++ {
		dst[i] = src[i]
	}
}

// segments cuts the column-matrix columns [j, j+n) (image, pixel) into
// runs (at most gemm.MaxSegment long) whose x offsets (image plane block +
// pixOff) are consecutive: Pos is the run's first position (0-based from
// j), Off its x offset. segs must hold n entries.
func (b *convB) segments(segs []gemm.Segment, j, n int) []gemm.Segment {
	ph := b.pl.plane()
	out := segs[:0]
	i, o := j/b.pq, j%b.pq
	for k := 0; k < n; k++ {
		off := i*b.C*ph + b.pl.pixOff[o]
		if m := len(out); m > 0 && out[m-1].Off+out[m-1].N == off && out[m-1].N < gemm.MaxSegment {
			out[m-1].N++
		} else {
			out = append(out, gemm.Segment{Pos: k, N: 1, Off: off})
		}
		if o++; o == b.pq {
			o, i = 0, i+1
		}
	}
	return out
}

// rowOff is the x offset of column-matrix row k = (ch, t) (plus a
// column's offset gives the element).
func (b *convB) rowOff(k int) int {
	return (k/b.T)*b.pl.plane() + b.pl.tapOff[k%b.T]
}

// maxKC bounds the k extent of one packed block (the GEMM's KC is 256).
const maxKC = 256

// pack fills one panel of op(B) = col: rows p = (ch, t) from p0, columns
// (image, pixel) from j. The columns' runs of consecutive sources are the
// same for every row, so the panel is one gemm.CopySegments.
func (b *convB) pack(panel []float32, nr, p0, kc, j, cols int) {
	if kc > maxKC {
		panic("nn: convB: k block larger than maxKC")
	}
	var sbuf [maxNR]gemm.Segment
	segs := b.segments(sbuf[:], j, cols)
	var offs [maxKC]int
	ph := b.pl.plane()
	ch, t := p0/b.T, p0%b.T
	chOff := ch * ph
	for p := 0; p < kc; p++ { // walk (ch, t) without dividing
		offs[p] = chOff + b.pl.tapOff[t]
		if t++; t == b.T {
			t, chOff = 0, chOff+ph
		}
	}
	gemm.CopySegments(panel, nr, b.x, offs[:kc], segs)
}

// packT fills one panel of op(B) = col^T: rows p = (image, pixel) from p0,
// columns (ch, t) from j. Each column's pixels are copied contiguously into
// scratch tmp (nr*kc values; runs of consecutive sources, the same for
// every column), then the block is transposed into the panel.
func (b *convB) packT(panel, tmp []float32, nr, p0, kc, j, cols int) {
	if kc > maxKC {
		panic("nn: convB: k block larger than maxKC")
	}
	tmp = tmp[:cols*kc]
	var sbuf [maxKC]gemm.Segment
	segs := b.segments(sbuf[:], p0, kc)
	var offs [maxNR]int
	for c := 0; c < cols; c++ {
		offs[c] = b.rowOff(j + c)
	}
	gemm.CopySegments(tmp, kc, b.x, offs[:cols], segs)
	gemm.PackPanelT(panel, tmp, kc, kc, cols, nr)
}

// pointwise reports whether convolution p is a plain matrix product over
// the batch: a 1x1 output plane whose live taps read the input pixels one
// each, in order (tap t reads pixel t; ResNet's 3x3 convolutions on 1x1
// planes keep only the centre tap, and a 3x3 stride-2 one from 2x2 to 1x1
// keeps the four taps over the plane). Then x, as (N x C*T), is already
// the column matrix and y, as (N x K), the output: Y = X Wt^T,
// dX = dY Wt (every pixel under exactly one tap), dWt = dY^T X, with no
// padded copy, gather, scatter or col2im.
func pointwise(p ConvParams, pl *convPlan) bool {
	if p.P() != 1 || p.Q() != 1 || len(pl.taps) != p.H*p.W {
		return false
	}
	for t, tap := range pl.taps {
		if (tap/p.S-p.PadH)*p.W+tap%p.S-p.PadW != t {
			return false
		}
	}
	return true
}

// liveWeights returns w (K x C*R*S) restricted to the live taps, (K x C*T):
// w itself when every tap is live, else a gathered copy in scratch.
func (c *CPU) liveWeights(w []float32, p ConvParams, pl *convPlan) []float32 {
	if pl.full(p) {
		return w
	}
	rs, T := p.R*p.S, len(pl.taps)
	wt := growF32(&c.wlive, p.K*p.C*T)
	if T == 1 {
		tap := pl.taps[0]
		c.parallel(p.K*p.C, 4096, func(lo, hi int) {
			dst := wt[lo:hi]
			src := w[lo*rs+tap : (hi-1)*rs+tap+1]
			for i := range dst {
				dst[i] = src[i*rs]
			}
		})
		return wt
	}
	c.parallel(p.K*p.C, 4096, func(lo, hi int) {
		for kc := lo; kc < hi; kc++ {
			src, dst := w[kc*rs:][:rs], wt[kc*T:][:T]
			for t, tap := range pl.taps {
				dst[t] = src[tap]
			}
		}
	})
	return wt
}

// Conv2d implements Backend.
func (c *CPU) Conv2d(y, x, w *Tensor, p ConvParams) {
	c.convForward(mustHost(y), mustHost(x), mustHost(w), p)
}

// convForward is Conv2d on host slices.
func (c *CPU) convForward(yd, xd, wd []float32, p ConvParams) {
	pq := p.P() * p.Q()
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			c.sgemm(false, false, p.K, pq, p.C, 1, wd, p.C, xd[n*chw:], pq, 0, yd[n*kpq:], pq)
		}
		return
	}
	if c.dense(p) {
		c.denseForward(yd, xd, wd, p)
		return
	}
	if c.winograd(p) {
		c.winogradForward(yd, xd, wd, p, false)
		return
	}
	pl := c.plan(p)
	ct := p.C * len(pl.taps)
	wt := c.liveWeights(wd, p, pl)
	if pointwise(p, pl) {
		c.sgemm(false, true, p.N, p.K, ct, 1, xd, ct, wt, ct, 0, yd, p.K)
		return
	}
	ld := p.N * pq
	xp := c.padInput(xd, p, pl)
	if p.N == 1 || pq >= perImagePlane {
		// One product per image, straight into y (no scatter, no scratch):
		// images are shared among the goroutines, each running
		// single-threaded products (no hand-over per image; a product's
		// result does not depend on its thread count).
		ph := pl.plane()
		if c.threads == 1 || p.N == 1 {
			for n := 0; n < p.N; n++ {
				bp := &convB{x: xp[n*p.C*ph:], C: p.C, T: len(pl.taps), pq: pq, pl: pl}
				c.sgemmPacker(false, p.K, pq, ct, 1, wt, ct, bp, 0, yd[n*kpq:], pq)
			}
			return
		}
		c.workspaces()
		c.parallelParts(p.N, 1, func(part, lo, hi int) {
			for n := lo; n < hi; n++ {
				bp := &convB{x: xp[n*p.C*ph:], C: p.C, T: len(pl.taps), pq: pq, pl: pl}
				c.work[part].SgemmPacker(false, p.K, pq, ct, 1, wt, ct, bp, 0, yd[n*kpq:], pq)
			}
		})
		return
	}
	bp := &convB{x: xp, C: p.C, T: len(pl.taps), pq: pq, pl: pl}
	out := growF32(&c.tmp, p.K*ld)
	c.sgemmPacker(false, p.K, ld, ct, 1, wt, ct, bp, 0, out, ld)
	c.scatterChunk(yd, out, 0, p.N, p.K, pq)
}

// transposedConv returns, for a stride-1 convolution p with PadH < R and
// PadW < S (used when p has no dead taps), the convolution that computes its input gradient from dy:
// dx = conv(dy, w'), w'[c,k,r,s] = w[k,c,R-1-r,S-1-s], padding R-1-PadH.
func transposedConv(p ConvParams) (ConvParams, bool) {
	if p.StrideH != 1 || p.StrideW != 1 || p.PadH >= p.R || p.PadW >= p.S {
		return ConvParams{}, false
	}
	return ConvParams{N: p.N, C: p.K, H: p.P(), W: p.Q(), K: p.C, R: p.R, S: p.S,
		StrideH: 1, StrideW: 1, PadH: p.R - 1 - p.PadH, PadW: p.S - 1 - p.PadW}, true
}

// flipWeights writes w' of transposedConv into scratch.
func (c *CPU) flipWeights(w []float32, p ConvParams) []float32 {
	rs := p.R * p.S
	wf := growF32(&c.wflip, p.K*p.C*rs)
	c.parallel(p.K, max(1, 4096/(p.C*rs)), func(lo, hi int) {
		for k := lo; k < hi; k++ {
			for ch := 0; ch < p.C; ch++ {
				src, dst := w[(k*p.C+ch)*rs:][:rs], wf[(ch*p.K+k)*rs:][:rs]
				for i, v := range src {
					dst[rs-1-i] = v
				}
			}
		}
	})
	return wf
}

// Conv2dBackwardData implements Backend.
func (c *CPU) Conv2dBackwardData(dx, dy, w *Tensor, p ConvParams) {
	dxd, dyd, wd := mustHost(dx), mustHost(dy), mustHost(w)
	pq := p.P() * p.Q()
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			c.sgemm(true, false, p.C, pq, p.K, 1, wd, p.C, dyd[n*kpq:], pq, 0, dxd[n*chw:], pq)
		}
		return
	}
	if c.dense(p) {
		c.denseBackwardData(dxd, dyd, wd, p)
		return
	}
	if pt, ok := transposedConv(p); ok && c.plan(p).full(p) {
		// A forward convolution of dy: implicit GEMM with long k, no col2im
		// (or Winograd, which flips the weights as it transforms them).
		if c.winograd(pt) {
			c.winogradForward(dxd, dyd, wd, pt, true)
			return
		}
		c.convForward(dxd, dyd, c.flipWeights(wd, p), pt)
		return
	}
	pl := c.plan(p)
	ct := p.C * len(pl.taps)
	wt := c.liveWeights(wd, p, pl)
	if pointwise(p, pl) {
		c.sgemm(false, false, p.N, ct, p.K, 1, dyd, p.K, wt, ct, 0, dxd, ct)
		return
	}
	G := c.convChunk(p, len(pl.taps))
	col := growF32(&c.col, ct*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		m := dyd[n0*kpq:]
		if g > 1 {
			m = growF32(&c.tmp, p.K*ld)
			c.gatherChunk(m, dyd, n0, g, p.K, pq)
		}
		c.sgemm(true, false, ct, ld, p.K, 1, wt, ct, m, ld, 0, col, ld)
		c.col2im(dxd, col, ld, n0, g, p, pl)
	}
}

// perImagePlane is the output plane size (P*Q) from which convolutions run
// one product per image: each is then big enough to share among threads,
// and the batch-wide product's output scatter (forward) or dY gather
// (backward-filter), and their scratch, are saved.
const perImagePlane = 256

// filterChunkCols is the dW width (C*T) below which the backward-filter
// product is split over images instead of over dW: a product that narrow
// has too few column tiles to share among threads (the stem's 7x7 conv:
// 147 columns), and every thread would pack all of dY.
const filterChunkCols = 256

// filterChunks is the number of image chunks of the backward-filter
// product of p (1: one product over the batch). It depends on the shape
// only, so the summation order never depends on the thread count.
func filterChunks(p ConvParams, ct int) int {
	if ct >= filterChunkCols || p.N < 2 {
		return 1
	}
	return min(p.N, 8)
}

// filterByChunks computes dst = beta*dst + dY * col^T (K x CT) as the sum
// of one single-threaded product per chunk of images (chunks share the
// threads), each into its own partial, then adds the partials to dst in
// chunk order.
func (c *CPU) filterByChunks(dst []float32, beta float32, xp, dyd []float32, p ConvParams, pl *convPlan, chunks int) {
	pq := p.P() * p.Q()
	T := len(pl.taps)
	ct := p.C * T
	kct := p.K * ct
	per := (p.N + chunks - 1) / chunks
	partial := growF32(&c.dwpart, chunks*kct)
	var m []float32
	if pq < perImagePlane {
		m = growF32(&c.tmp, p.K*p.N*pq)
	}
	ph := pl.plane()
	c.workspaces()
	c.parallelParts(chunks, 1, func(part, lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			n0 := ch * per
			g := min(per, p.N-n0)
			out := partial[ch*kct:][:kct]
			if g <= 0 {
				clear(out)
				continue
			}
			if pq >= perImagePlane { // one product per image, in order
				for i := 0; i < g; i++ {
					bp := &convB{x: xp[(n0+i)*p.C*ph:], C: p.C, T: T, pq: pq, pl: pl, trans: true}
					c.work[part].SgemmPacker(false, p.K, ct, pq, 1, dyd[(n0+i)*p.K*pq:], pq, bp, float32(min(i, 1)), out, ct)
				}
				continue
			}
			ld := g * pq
			a := m[n0*p.K*pq:][:p.K*ld]
			for i := 0; i < g; i++ { // dY of the chunk as K x g*PQ
				for k := 0; k < p.K; k++ {
					copy(a[k*ld+i*pq:][:pq], dyd[((n0+i)*p.K+k)*pq:][:pq])
				}
			}
			bp := &convB{x: xp[n0*p.C*ph:], C: p.C, T: T, pq: pq, pl: pl, trans: true}
			c.work[part].SgemmPacker(false, p.K, ct, ld, 1, a, ld, bp, 0, out, ct)
		}
	})
	c.parallel(kct, elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := partial[i]
			for ch := 1; ch < chunks; ch++ {
				v += partial[ch*kct+i]
			}
			if beta == 0 {
				dst[i] = v
			} else {
				dst[i] += v
			}
		}
	})
}

// Conv2dBackwardFilter implements Backend.
func (c *CPU) Conv2dBackwardFilter(dw, x, dy *Tensor, p ConvParams) {
	dwd, xd, dyd := mustHost(dw), mustHost(x), mustHost(dy)
	pq := p.P() * p.Q()
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			c.sgemm(false, true, p.K, p.C, pq, 1, dyd[n*kpq:], pq, xd[n*chw:], pq, 1, dwd, p.C)
		}
		return
	}
	if c.dense(p) {
		c.denseBackwardFilter(dwd, xd, dyd, p)
		return
	}
	if c.winogradFilterOn(p) {
		c.winogradFilter(dwd, xd, dyd, p)
		return
	}
	pl := c.plan(p)
	T := len(pl.taps)
	ct := p.C * T
	// With dead taps the product goes to a K x C*T scratch, added to dw
	// afterwards.
	dst, beta := dwd, float32(1)
	if !pl.full(p) {
		dst, beta = growF32(&c.dwlive, p.K*ct), 0
	}
	if pointwise(p, pl) {
		c.sgemm(true, false, p.K, ct, p.N, 1, dyd, p.K, xd, ct, beta, dst, ct)
	} else if chunks := filterChunks(p, ct); chunks > 1 {
		c.filterByChunks(dst, beta, c.padInput(xd, p, pl), dyd, p, pl, chunks)
	} else {
		c.filterProduct(dst, beta, c.padInput(xd, p, pl), dyd, p, pl)
	}
	if !pl.full(p) {
		rs := p.R * p.S
		c.parallel(p.K*p.C, 4096, func(lo, hi int) {
			if T == 1 {
				tap := pl.taps[0]
				d, s := dwd[lo*rs+tap:(hi-1)*rs+tap+1], dst[lo:hi]
				for i, v := range s {
					d[i*rs] += v
				}
				return
			}
			for kc := lo; kc < hi; kc++ {
				d, s := dwd[kc*rs:][:rs], dst[kc*T:][:T]
				for t, tap := range pl.taps {
					d[tap] += s[t]
				}
			}
		})
	}
}

// filterProduct computes dst = beta*dst + dY * col^T (K x CT) for the
// backward filter of p over the padded planes xp, as one product over the
// batch or, for large planes, one per image added in image order.
func (c *CPU) filterProduct(dst []float32, beta float32, xp, dyd []float32, p ConvParams, pl *convPlan) {
	pq := p.P() * p.Q()
	kpq := p.K * pq
	T := len(pl.taps)
	ct := p.C * T
	ld := p.N * pq
	if pq >= perImagePlane {
		// One product per image, accumulated in image order: dY of an
		// image is already K x PQ (no gather, no scratch).
		ph := pl.plane()
		for n := 0; n < p.N; n++ {
			bp := &convB{x: xp[n*p.C*ph:], C: p.C, T: T, pq: pq, pl: pl, trans: true}
			c.sgemmPacker(false, p.K, ct, pq, 1, dyd[n*kpq:], pq, bp, beta, dst, ct)
			beta = 1
		}
	} else {
		// One product over the whole batch: k = N*P*Q, summed in increasing k.
		m := dyd
		if p.N > 1 {
			m = growF32(&c.tmp, p.K*ld)
			c.gatherChunk(m, dyd, 0, p.N, p.K, pq)
		}
		bp := &convB{x: xp, C: p.C, T: T, pq: pq, pl: pl, trans: true}
		c.sgemmPacker(false, p.K, ct, ld, 1, m, ld, bp, beta, dst, ct)
	}
}
