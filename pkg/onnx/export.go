package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
	pb "github.com/ringtrain/ringtrain/proto/onnxpb"
)

// Opset is the ONNX operator set the export uses, IRVersion the IR
// version that goes with it.
const (
	Opset     = 13
	IRVersion = 7
)

// ErrExport is wrapped by errors about a model that cannot be exported.
var ErrExport = errors.New("onnx: cannot export")

// Options configures an export.
type Options struct {
	// FoldBN folds each inference-mode BatchNorm into the convolution
	// before it; otherwise BatchNormalization nodes are kept.
	FoldBN bool
	// Height and Width fix the input size; 0 leaves it symbolic ("H", "W").
	Height, Width int
	// Name is the graph's name (default "ringtrain-<arch>").
	Name string
}

// Export builds the ONNX model of m (its current weights and running
// statistics, evaluation mode).
func Export(m *nn.Model, o Options) (*pb.ModelProto, error) {
	ops, err := m.InferenceGraph()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrExport, err)
	}
	b := m.Backend()
	if err := b.Sync(); err != nil {
		return nil, err
	}
	host := func(t *nn.Tensor) []float32 {
		v := make([]float32, t.Numel())
		b.ToHost(v, t)
		return v
	}
	cfg := m.Config()
	ex := &exporter{}
	// out[i] is the value name of node i's output; folded BN nodes take
	// over their convolution's.
	out := make([]string, len(ops))
	folded := make([]bool, len(ops)) // a Conv whose BN is folded into it
	if o.FoldBN {
		for _, op := range ops {
			if op.Kind == "BatchNorm" && op.Inputs[0] >= 0 && ops[op.Inputs[0]].Kind == "Conv" {
				folded[op.Inputs[0]] = true
			}
		}
	}
	input := func(op nn.GraphOp, k int) string {
		if i := op.Inputs[k]; i >= 0 {
			return out[i]
		}
		return "input"
	}
	for i, op := range ops {
		name := op.Name
		switch op.Kind {
		case "Conv":
			l := op.Conv
			if folded[i] {
				out[i] = name
				continue // emitted with its BatchNorm
			}
			ins := []string{input(op, 0), ex.init(l.Weight.Name, l.Weight.Value.Shape, host(l.Weight.Value))}
			if l.Bias != nil {
				ins = append(ins, ex.init(l.Bias.Name, l.Bias.Value.Shape, host(l.Bias.Value)))
			}
			ex.node("Conv", name, ins, convAttrs(l)...)
		case "BatchNorm":
			l := op.BN
			gamma, beta := host(l.Weight.Value), host(l.Bias.Value)
			mean, vr := host(l.RunningMean.Value), host(l.RunningVar.Value)
			if j := op.Inputs[0]; j >= 0 && folded[j] {
				c := ops[j].Conv
				w, bias := foldBN(host(c.Weight.Value), c.Bias, host, gamma, beta, mean, vr, l.Eps)
				ex.node("Conv", ops[j].Name, []string{input(ops[j], 0),
					ex.init(ops[j].Name+".weight", c.Weight.Value.Shape, w),
					ex.init(ops[j].Name+".bias", []int{len(bias)}, bias)}, convAttrs(c)...)
				out[i] = ops[j].Name
				continue
			}
			ex.node("BatchNormalization", name, []string{input(op, 0),
				ex.init(l.Weight.Name, l.Weight.Value.Shape, gamma),
				ex.init(l.Bias.Name, l.Bias.Value.Shape, beta),
				ex.init(l.RunningMean.Name, l.RunningMean.Value.Shape, mean),
				ex.init(l.RunningVar.Name, l.RunningVar.Value.Shape, vr)},
				attrFloat("epsilon", l.Eps), attrFloat("momentum", 1-l.Momentum))
		case "ReLU":
			ex.node("Relu", name, []string{input(op, 0)})
		case "MaxPool":
			p := op.Pool
			ex.node("MaxPool", name, []string{input(op, 0)},
				attrInts("kernel_shape", p.Kernel, p.Kernel), attrInts("strides", p.Stride, p.Stride),
				attrInts("pads", p.Pad, p.Pad, p.Pad, p.Pad))
		case "Add":
			ex.node("Add", name, []string{input(op, 0), input(op, 1)})
		case "GlobalAvgPool":
			ex.node("GlobalAveragePool", name, []string{input(op, 0)})
		case "Flatten":
			ex.node("Flatten", name, []string{input(op, 0)}, attrInt("axis", 1))
		case "Linear":
			l := op.Linear
			ex.node("Gemm", name, []string{input(op, 0),
				ex.init(l.Weight.Name, l.Weight.Value.Shape, host(l.Weight.Value)),
				ex.init(l.Bias.Name, l.Bias.Value.Shape, host(l.Bias.Value))},
				attrInt("transB", 1))
		default:
			return nil, fmt.Errorf("%w: node kind %q", ErrExport, op.Kind)
		}
		out[i] = name
	}
	if len(ex.nodes) == 0 {
		return nil, fmt.Errorf("%w: empty graph", ErrExport)
	}
	if err := b.Sync(); err != nil {
		return nil, err
	}
	last := ex.nodes[len(ex.nodes)-1]
	last.Output[0] = "logits"
	arch := fmt.Sprintf("resnet%d", cfg.Depth)
	if o.Name == "" {
		o.Name = "ringtrain-" + arch
	}
	dim := func(v int, param string) *pb.TensorShapeProto_Dimension {
		if v > 0 {
			return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: int64(v)}}
		}
		return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: param}}
	}
	g := &pb.GraphProto{
		Name:        proto.String(o.Name),
		Node:        ex.nodes,
		Initializer: ex.inits,
		Input:       []*pb.ValueInfoProto{valueInfo("input", dim(0, "N"), dim(3, ""), dim(o.Height, "H"), dim(o.Width, "W"))},
		Output:      []*pb.ValueInfoProto{valueInfo("logits", dim(0, "N"), dim(cfg.Classes, ""))},
		DocString: proto.String(fmt.Sprintf("%s (%s stem, width %g, %d classes) exported by ringtrain in evaluation mode; input: images normalised with the CIFAR-10 mean/std",
			arch, cfg.Stem, cfg.Width, cfg.Classes)),
	}
	meta := map[string]string{
		"arch": arch, "stem": cfg.Stem, "width": fmt.Sprint(cfg.Width), "classes": fmt.Sprint(cfg.Classes),
		"input_mean": floats(data.CIFARMean), "input_std": floats(data.CIFARStd), "bn": "kept",
	}
	if o.FoldBN {
		meta["bn"] = "folded into the convolutions"
	}
	var props []*pb.StringStringEntryProto
	for _, k := range []string{"arch", "stem", "width", "classes", "bn", "input_mean", "input_std"} {
		props = append(props, &pb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(meta[k])})
	}
	return &pb.ModelProto{
		IrVersion:       proto.Int64(IRVersion),
		OpsetImport:     []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		ProducerName:    proto.String("ringtrain"),
		ProducerVersion: proto.String("1"),
		ModelVersion:    proto.Int64(1),
		Graph:           g,
		MetadataProps:   props,
	}, nil
}

// WriteFile exports m and writes the model to path.
func WriteFile(path string, m *nn.Model, o Options) error {
	mp, err := Export(m, o)
	if err != nil {
		return err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(mp)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrExport, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("onnx: %w", err)
	}
	return nil
}

// foldBN returns w*s and beta + (bias-mean)*s with s = gamma/sqrt(var+eps)
// per output channel, in float64.
func foldBN(w []float32, bias *nn.Param, host func(*nn.Tensor) []float32, gamma, beta, mean, vr []float32, eps float32) ([]float32, []float32) {
	k := len(gamma)
	per := len(w) / k
	var cb []float32
	if bias != nil {
		cb = host(bias.Value)
	}
	fw := make([]float32, len(w))
	fb := make([]float32, k)
	for c := range k {
		s := float64(gamma[c]) / math.Sqrt(float64(vr[c])+float64(eps))
		for i := c * per; i < (c+1)*per; i++ {
			fw[i] = float32(float64(w[i]) * s)
		}
		b0 := 0.0
		if cb != nil {
			b0 = float64(cb[c])
		}
		fb[c] = float32(float64(beta[c]) + (b0-float64(mean[c]))*s)
	}
	return fw, fb
}

// exporter accumulates nodes and initializers.
type exporter struct {
	nodes []*pb.NodeProto
	inits []*pb.TensorProto
}

// init adds a float32 initializer and returns its name.
func (e *exporter) init(name string, shape []int, v []float32) string {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	dims := make([]int64, len(shape))
	for i, d := range shape {
		dims[i] = int64(d)
	}
	e.inits = append(e.inits, &pb.TensorProto{
		Name: proto.String(name), Dims: dims,
		DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), RawData: raw,
	})
	return name
}

// node adds a node whose single output is named after it.
func (e *exporter) node(op, name string, inputs []string, attrs ...*pb.AttributeProto) {
	e.nodes = append(e.nodes, &pb.NodeProto{
		OpType: proto.String(op), Name: proto.String(name),
		Input: inputs, Output: []string{name}, Attribute: attrs,
	})
}

func convAttrs(l *nn.Conv2d) []*pb.AttributeProto {
	return []*pb.AttributeProto{
		attrInts("kernel_shape", l.Kernel, l.Kernel), attrInts("strides", l.Stride, l.Stride),
		attrInts("pads", l.Pad, l.Pad, l.Pad, l.Pad), attrInts("dilations", 1, 1), attrInt("group", 1),
	}
}

func attrInts(name string, v ...int) *pb.AttributeProto {
	a := &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INTS.Enum()}
	for _, x := range v {
		a.Ints = append(a.Ints, int64(x))
	}
	return a
}

func attrInt(name string, v int) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(int64(v))}
}

func attrFloat(name string, v float32) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func valueInfo(name string, dims ...*pb.TensorShapeProto_Dimension) *pb.ValueInfoProto {
	return &pb.ValueInfoProto{
		Name: proto.String(name),
		Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(pb.TensorProto_FLOAT)),
			Shape:    &pb.TensorShapeProto{Dim: dims},
		}}},
	}
}

func floats(v []float32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
