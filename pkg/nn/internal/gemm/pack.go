package gemm

import "fmt"

// Packing copies a block of op(A) or op(B) into the layout the micro-kernel
// streams through: op(A)[i0:i0+mc, p0:p0+kc] becomes ceil(mc/mr) micro-panels,
// panel q holding rows q*mr.. as kc groups of mr values (k-major); op(B)
// [p0:p0+kc, j0:j0+nc] becomes ceil(nc/nr) panels of kc groups of nr values.
// Rows or columns past the block's edge are zero. Panel q starts at q*mr*kc
// (A) or q*nr*kc (B) in dst.

// packA packs op(A)[i0:i0+mc, p0:p0+kc] into dst.
func packA(kn *kernel, dst, a []float32, lda int, trans bool, i0, mc, p0, kc int) {
	mr := kn.mr
	for ir := 0; ir < mc; ir += mr {
		panel := dst[ir*kc : ir*kc+mr*kc]
		rows := min(mr, mc-ir)
		if trans {
			// op(A)[i, p] = a[p*lda+i]: each k step is a contiguous row piece.
			base := p0*lda + i0 + ir
			if kn.packCopy != nil && rows == mr && kn.packCopy(panel, a[base:], lda, kc, mr) {
				continue
			}
			for p := 0; p < kc; p++ {
				d := panel[p*mr : p*mr+mr]
				copy(d, a[base+p*lda:base+p*lda+rows])
				clear(d[rows:])
			}
			continue
		}
		if kn.packT != nil && rows == mr && kn.packT(panel, a[(i0+ir)*lda+p0:], lda, kc, mr) {
			continue
		}
		// op(A)[i, p] = a[i*lda+p]: read rows, write with stride mr.
		for r := 0; r < rows; r++ {
			src := a[(i0+ir+r)*lda+p0 : (i0+ir+r)*lda+p0+kc]
			for p, v := range src {
				panel[p*mr+r] = v
			}
		}
		for r := rows; r < mr; r++ {
			for p := 0; p < kc; p++ {
				panel[p*mr+r] = 0
			}
		}
	}
}

// packB packs op(B)[p0:p0+kc, j0:j0+nc] into dst.
func packB(kn *kernel, dst, b []float32, ldb int, trans bool, p0, kc, j0, nc int) {
	nr := kn.nr
	for jr := 0; jr < nc; jr += nr {
		panel := dst[jr*kc : jr*kc+nr*kc]
		cols := min(nr, nc-jr)
		if !trans {
			// op(B)[p, j] = b[p*ldb+j]: each k step is a contiguous row piece.
			base := p0*ldb + j0 + jr
			if kn.packCopy != nil && cols == nr && kn.packCopy(panel, b[base:], ldb, kc, nr) {
				continue
			}
			for p := 0; p < kc; p++ {
				d := panel[p*nr : p*nr+nr]
				copy(d, b[base+p*ldb:base+p*ldb+cols])
				clear(d[cols:])
			}
			continue
		}
		if kn.packT != nil && cols == nr && kn.packT(panel, b[(j0+jr)*ldb+p0:], ldb, kc, nr) {
			continue
		}
		// op(B)[p, j] = b[j*ldb+p]: read rows of b, write with stride nr.
		for c := 0; c < cols; c++ {
			src := b[(j0+jr+c)*ldb+p0 : (j0+jr+c)*ldb+p0+kc]
			for p, v := range src {
				panel[p*nr+c] = v
			}
		}
		for c := cols; c < nr; c++ {
			for p := 0; p < kc; p++ {
				panel[p*nr+c] = 0
			}
		}
	}
}

// PackPanelT writes one micro-panel of width nr for a BPacker from w <= nr
// rows of src (row r starts at src[r*ld] and holds kc values):
// dst[p*nr+r] = src[r*ld+p] for r < w, and 0 for w <= r < nr. A full panel
// (w == nr) uses the active path's register transposes where it has them.
func PackPanelT(dst, src []float32, ld, kc, w, nr int) {
	if w < 0 || w > nr || kc < 0 || len(dst) < nr*kc || (w > 0 && kc > 0 && len(src) < (w-1)*ld+kc) {
		panic(&ArgError{"PackPanelT", fmt.Sprintf("w %d nr %d kc %d ld %d len(dst) %d len(src) %d", w, nr, kc, ld, len(dst), len(src))})
	}
	if w == 0 || kc == 0 {
		clear(dst[:nr*kc])
		return
	}
	if kn := active(); w == nr && kn.packT != nil && kn.packT(dst, src, ld, kc, nr) {
		return
	}
	for r := 0; r < w; r++ {
		for p, v := range src[r*ld : r*ld+kc] {
			dst[p*nr+r] = v
		}
	}
	for r := w; r < nr; r++ {
		for p := 0; p < kc; p++ {
			dst[p*nr+r] = 0
		}
	}
}
