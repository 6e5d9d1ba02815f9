package explain

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// ShapleyOptions configures a Shapley estimate.
type ShapleyOptions struct {
	Grid     int       // G: the image is cut into G x G patches (the players); default 4
	Samples  int       // permutations drawn; default 64
	Baseline []float32 // (3,H,W) values of absent patches; nil = zeros (the dataset mean after normalisation)
	Class    int       // the explained class logit; < 0 = the predicted class
	Seed     uint64    // permutation stream
	Batch    int       // images per forward pass; default G*G+1 (one permutation)
}

// Shapley is the attribution of one class logit to the patches of an image.
type Shapley struct {
	Grid      int
	Class     int
	Predicted int
	Samples   int       // permutations (0 for exact values)
	Values    []float64 // phi_i, G x G row-major
	StdErr    []float64 // standard error of each value (0 for exact values)
	FImage    float64   // f(image): the class logit, from its own forward pass
	FBaseline float64   // f(baseline)
	SumStdErr float64   // standard error of sum(Values) over the permutations
}

// Sum is the sum of the values.
func (s *Shapley) Sum() float64 {
	var t float64
	for _, v := range s.Values {
		t += v
	}
	return t
}

// Efficiency compares sum(Values) with f(image) - f(baseline): gap is the
// difference, tol what it is allowed to be (3 standard errors of the sum
// plus float32 rounding of the logits), ok whether it holds.
func (s *Shapley) Efficiency() (gap, tol float64, ok bool) {
	want := s.FImage - s.FBaseline
	gap = s.Sum() - want
	tol = 3*s.SumStdErr + 1e-4*(math.Abs(s.FImage)+math.Abs(s.FBaseline)+1)
	return gap, tol, math.Abs(gap) <= tol
}

func (o *ShapleyOptions) normalize(h, w int) error {
	if o.Grid == 0 {
		o.Grid = 4
	}
	if o.Samples == 0 {
		o.Samples = 64
	}
	if o.Grid < 1 || o.Grid > h || o.Grid > w {
		return fmt.Errorf("%w: a %dx%d patch grid on a %dx%d image", ErrInput, o.Grid, o.Grid, h, w)
	}
	if o.Samples < 2 {
		return fmt.Errorf("%w: %d permutations (want at least 2 for a standard error)", ErrInput, o.Samples)
	}
	if o.Baseline != nil && len(o.Baseline) != 3*h*w {
		return fmt.Errorf("%w: baseline of %d values for 3x%dx%d", ErrInput, len(o.Baseline), h, w)
	}
	if o.Batch <= 0 {
		o.Batch = o.Grid*o.Grid + 1
	}
	return nil
}

// patchOf maps each pixel (y*w+x) to its patch index in a g x g grid.
func patchOf(g, h, w int) []int {
	p := make([]int, h*w)
	for y := range h {
		for x := range w {
			p[y*w+x] = (y*g/h)*g + x*g/w
		}
	}
	return p
}

// evaluator turns coalitions into images and images into class logits,
// in batched forward passes.
type evaluator struct {
	m         *nn.Model
	img, base []float32
	h, w      int
	patch     []int
	batch     int
	class     int
	buf       []float32 // the batch being composed
}

// compose writes the image of coalition in (patch present = image value,
// absent = baseline) into dst.
func (e *evaluator) compose(dst []float32, in []bool) {
	plane := e.h * e.w
	for c := range 3 {
		o := c * plane
		for i, p := range e.patch {
			if in[p] {
				dst[o+i] = e.img[o+i]
			} else {
				dst[o+i] = e.base[o+i]
			}
		}
	}
}

// eval returns the class logit of every coalition, in order.
func (e *evaluator) eval(coalitions [][]bool) ([]float64, error) {
	n := 3 * e.h * e.w
	out := make([]float64, 0, len(coalitions))
	for lo := 0; lo < len(coalitions); lo += e.batch {
		hi := min(lo+e.batch, len(coalitions))
		k := hi - lo
		if cap(e.buf) < k*n {
			e.buf = make([]float32, k*n)
		}
		buf := e.buf[:k*n]
		for j, c := range coalitions[lo:hi] {
			e.compose(buf[j*n:(j+1)*n], c)
		}
		logits, classes, err := forward(e.m, buf, k, e.h, e.w)
		if err != nil {
			return nil, err
		}
		for j := range k {
			out = append(out, float64(logits[j*classes+e.class]))
		}
	}
	return out, nil
}

// setup validates the inputs, runs the image and the baseline through the
// model and returns the evaluator and the partly filled result.
func setup(m *nn.Model, img []float32, h, w int, o *ShapleyOptions) (*evaluator, *Shapley, error) {
	if err := checkImage(img, h, w); err != nil {
		return nil, nil, err
	}
	if err := o.normalize(h, w); err != nil {
		return nil, nil, err
	}
	base := o.Baseline
	if base == nil {
		base = make([]float32, len(img))
	}
	two := append(append(make([]float32, 0, 2*len(img)), img...), base...)
	logits, classes, err := forward(m, two, 2, h, w)
	if err != nil {
		return nil, nil, err
	}
	r := &Shapley{Grid: o.Grid, Class: o.Class, Predicted: argmax(logits[:classes])}
	if r.Class < 0 {
		r.Class = r.Predicted
	}
	if r.Class >= classes {
		return nil, nil, fmt.Errorf("%w: class %d, the model has %d classes", ErrInput, r.Class, classes)
	}
	r.FImage, r.FBaseline = float64(logits[r.Class]), float64(logits[classes+r.Class])
	e := &evaluator{m: m, img: img, base: base, h: h, w: w, patch: patchOf(o.Grid, h, w), batch: o.Batch, class: r.Class}
	return e, r, nil
}

// EstimateShapley estimates the Shapley value of every patch for the class
// logit by permutation sampling: o.Samples uniformly random orders of the
// patches; in each, the patches are added one by one to the baseline and
// each one's value is the change of the logit it causes. Values are the
// means over permutations, StdErr the sample standard deviations over
// sqrt(Samples).
func EstimateShapley(m *nn.Model, img []float32, h, w int, o ShapleyOptions) (*Shapley, error) {
	s := begin(m)
	defer s.end()
	e, r, err := setup(m, img, h, w, &o)
	if err != nil {
		return nil, err
	}
	players := o.Grid * o.Grid
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed5ab1e))
	sum := make([]float64, players)
	sumSq := make([]float64, players)
	var tot, totSq float64
	for range o.Samples {
		perm := rng.Perm(players)
		coal := make([][]bool, players+1)
		in := make([]bool, players)
		coal[0] = append([]bool(nil), in...)
		for j, p := range perm {
			in[p] = true
			coal[j+1] = append([]bool(nil), in...)
		}
		f, err := e.eval(coal)
		if err != nil {
			return nil, err
		}
		var t float64
		for j, p := range perm {
			d := f[j+1] - f[j]
			sum[p] += d
			sumSq[p] += d * d
			t += d
		}
		tot += t
		totSq += t * t
	}
	n := float64(o.Samples)
	r.Samples = o.Samples
	r.Values, r.StdErr = make([]float64, players), make([]float64, players)
	for i := range players {
		mean := sum[i] / n
		v := math.Max(sumSq[i]/n-mean*mean, 0) * n / (n - 1)
		r.Values[i], r.StdErr[i] = mean, math.Sqrt(v/n)
	}
	mean := tot / n
	r.SumStdErr = math.Sqrt(math.Max(totSq/n-mean*mean, 0) * n / (n - 1) / n)
	return r, nil
}

// MaxExactPlayers bounds ExactShapley: 2^players coalitions are evaluated.
const MaxExactPlayers = 12

// ExactShapley computes the Shapley values exactly, from all 2^(G*G)
// coalitions: phi_i = sum over S not containing i of
// |S|! (n-|S|-1)! / n! (f(S+i) - f(S)). For G*G <= MaxExactPlayers.
func ExactShapley(m *nn.Model, img []float32, h, w int, o ShapleyOptions) (*Shapley, error) {
	s := begin(m)
	defer s.end()
	if o.Grid == 0 {
		o.Grid = 2
	}
	o.Samples = max(o.Samples, 2) // unused; keeps normalize quiet
	e, r, err := setup(m, img, h, w, &o)
	if err != nil {
		return nil, err
	}
	n := o.Grid * o.Grid
	if n > MaxExactPlayers {
		return nil, fmt.Errorf("%w: exact Shapley values of %d patches need 2^%d forward passes (at most %d patches)", ErrInput, n, n, MaxExactPlayers)
	}
	coal := make([][]bool, 1<<n)
	for mask := range coal {
		c := make([]bool, n)
		for i := range n {
			c[i] = mask&(1<<i) != 0
		}
		coal[mask] = c
	}
	f, err := e.eval(coal)
	if err != nil {
		return nil, err
	}
	fact := make([]float64, n+1)
	fact[0] = 1
	for i := 1; i <= n; i++ {
		fact[i] = fact[i-1] * float64(i)
	}
	r.Values, r.StdErr = make([]float64, n), make([]float64, n)
	for i := range n {
		var phi float64
		for mask := range coal {
			if mask&(1<<i) != 0 {
				continue
			}
			k := bitsSet(mask)
			phi += fact[k] * fact[n-k-1] / fact[n] * (f[mask|1<<i] - f[mask])
		}
		r.Values[i] = phi
	}
	return r, nil
}

func bitsSet(x int) int {
	c := 0
	for ; x != 0; x &= x - 1 {
		c++
	}
	return c
}
