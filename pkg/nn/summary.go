package nn

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A torchsummary-style model summary, computed from shapes alone (the model
// is not run), so it works for any input size.

type summaryRow struct {
	name      string // "Conv2d-1"
	shape     []int  // output shape with the batch dimension
	params    int
	trainable bool
}

// summaryTable collects rows in the order torchsummary's forward hooks
// fire: a module's row comes after its children's.
type summaryTable struct {
	rows []summaryRow
}

func (s *summaryTable) add(kind string, shape []int, params int, trainable bool) {
	s.rows = append(s.rows, summaryRow{
		name:  kind + "-" + strconv.Itoa(len(s.rows)+1),
		shape: shape, params: params, trainable: trainable,
	})
}

func countParams(ps ...*Param) (n int, trainable bool) {
	for _, p := range ps {
		if p != nil {
			n += p.Value.Numel()
		}
	}
	// torchsummary reads requires_grad of the weight.
	return n, len(ps) > 0 && ps[0] != nil && !ps[0].Frozen
}

func (l *Conv2d) summarize(in []int, s *summaryTable) ([]int, error) {
	out, err := l.OutShape(in)
	if err != nil {
		return nil, err
	}
	n, tr := countParams(l.Weight, l.Bias)
	s.add("Conv2d", out, n, tr)
	return out, nil
}

func (l *BatchNorm2d) summarize(in []int, s *summaryTable) ([]int, error) {
	out, err := l.OutShape(in)
	if err != nil {
		return nil, err
	}
	n, tr := countParams(l.Weight, l.Bias)
	s.add("BatchNorm2d", out, n, tr)
	return out, nil
}

func (l *Linear) summarize(in []int, s *summaryTable) ([]int, error) {
	out, err := l.OutShape(in)
	if err != nil {
		return nil, err
	}
	n, tr := countParams(l.Weight, l.Bias)
	s.add("Linear", out, n, tr)
	return out, nil
}

func summarizeNoParams(u unit, kind string, in []int, s *summaryTable) ([]int, error) {
	out, err := u.OutShape(in)
	if err != nil {
		return nil, err
	}
	s.add(kind, out, 0, false)
	return out, nil
}

func (l *ReLU) summarize(in []int, s *summaryTable) ([]int, error) {
	return summarizeNoParams(l, "ReLU", in, s)
}

func (l *MaxPool2d) summarize(in []int, s *summaryTable) ([]int, error) {
	return summarizeNoParams(l, "MaxPool2d", in, s)
}

func (l *GlobalAvgPool) summarize(in []int, s *summaryTable) ([]int, error) {
	return summarizeNoParams(l, "AdaptiveAvgPool2d", in, s)
}

func (l *Dropout) summarize(in []int, s *summaryTable) ([]int, error) {
	return summarizeNoParams(l, "Dropout", in, s)
}

// summarize of Flatten adds no row: torchvision calls torch.flatten.
func (l *Flatten) summarize(in []int, s *summaryTable) ([]int, error) { return l.OutShape(in) }

// summarize of a block follows torchvision's forward: the main path, the
// downsample, the final ReLU, then the block's own row.
func (blk *Block) summarize(in []int, s *summaryTable) ([]int, error) {
	h := in
	for _, u := range blk.Main {
		var err error
		if h, err = u.summarize(h, s); err != nil {
			return nil, err
		}
	}
	sc := in
	for _, u := range blk.Down {
		var err error
		if sc, err = u.summarize(sc, s); err != nil {
			return nil, err
		}
	}
	if !SameShape(h, sc) {
		return nil, CheckShape(blk.Name+" shortcut", sc, h)
	}
	if _, err := blk.ReLU.summarize(h, s); err != nil {
		return nil, err
	}
	s.add(blk.Kind, h, 0, false)
	return h, nil
}

// SummaryInfo is the data behind Summary's table.
type SummaryInfo struct {
	Rows []SummaryRow
	// Total and Trainable parameter counts (torchsummary's way: the weight's
	// requires_grad decides for a whole layer).
	Total, Trainable int
	// Sizes in MiB as torchsummary estimates them (4 bytes per value; the
	// forward/backward size is twice the sum of all row outputs).
	InputMB, ForwardBackwardMB, ParamsMB, TotalMB float64
}

// SummaryRow is one layer of the summary.
type SummaryRow struct {
	Layer  string // "Conv2d-1"
	Output []int  // output shape, batch dimension -1
	Params int
}

// SummarizeConfig is Summarize for the model cfg describes, without
// allocating its parameters (cheap even for ResNet-152).
func SummarizeConfig(cfg ResNetConfig, c, h, w int) (*SummaryInfo, error) {
	m, _, err := buildResNet(nil, cfg)
	if err != nil {
		return nil, err
	}
	return Summarize(m, c, h, w)
}

// Summarize computes the summary of m for an input of c x h x w.
func Summarize(m *Model, c, h, w int) (*SummaryInfo, error) {
	if c != 3 || h < 1 || w < 1 {
		return nil, fmt.Errorf("%w: summary input %dx%dx%d, want 3xHxW", ErrShape, c, h, w)
	}
	var s summaryTable
	shape := []int{1, c, h, w}
	for _, u := range m.units {
		var err error
		if shape, err = u.summarize(shape, &s); err != nil {
			return nil, err
		}
	}
	info := &SummaryInfo{}
	totalOut := 0
	for _, r := range s.rows {
		out := append([]int{-1}, r.shape[1:]...)
		info.Rows = append(info.Rows, SummaryRow{Layer: r.name, Output: out, Params: r.params})
		info.Total += r.params
		if r.trainable {
			info.Trainable += r.params
		}
		totalOut += numel(r.shape[1:])
	}
	const mb = 1024 * 1024
	info.InputMB = float64(c*h*w) * 4 / mb
	info.ForwardBackwardMB = 2 * float64(totalOut) * 4 / mb
	info.ParamsMB = float64(info.Total) * 4 / mb
	info.TotalMB = info.InputMB + info.ForwardBackwardMB + info.ParamsMB
	return info, nil
}

// Summary renders m's summary for an input of c x h x w as torchsummary
// prints it, for example:
//
//	        Layer (type)               Output Shape         Param #
//	================================================================
//	            Conv2d-1         [-1, 64, 112, 112]           9,408
func Summary(m *Model, c, h, w int) (string, error) {
	info, err := Summarize(m, c, h, w)
	if err != nil {
		return "", err
	}
	return info.String(), nil
}

// String renders the table.
func (info *SummaryInfo) String() string {
	const dash = "----------------------------------------------------------------"
	const eq = "================================================================"
	var sb strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&sb, format+"\n", a...) }
	line(dash)
	line("%20s  %25s %15s", "Layer (type)", "Output Shape", "Param #")
	line(eq)
	for _, r := range info.Rows {
		line("%20s  %25s %15s", r.Layer, shapeString(r.Output), commas(r.Params))
	}
	line(eq)
	line("Total params: %s", commas(info.Total))
	line("Trainable params: %s", commas(info.Trainable))
	line("Non-trainable params: %s", commas(info.Total-info.Trainable))
	line(dash)
	line("Input size (MB): %s", fixed2(info.InputMB))
	line("Forward/backward pass size (MB): %s", fixed2(info.ForwardBackwardMB))
	line("Params size (MB): %s", fixed2(info.ParamsMB))
	line("Estimated Total Size (MB): %s", fixed2(info.TotalMB))
	line(dash)
	return sb.String()
}

func shapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.Itoa(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// commas formats n with thousands separators, as Python's "{:,}".
func commas(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var sb strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			sb.WriteByte(',')
		}
		sb.WriteRune(ch)
	}
	if neg {
		return "-" + sb.String()
	}
	return sb.String()
}

// fixed2 is Python's "%0.2f" (round half to even on the binary value, which
// is what strconv does too).
func fixed2(v float64) string {
	if math.IsNaN(v) {
		return "nan"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
