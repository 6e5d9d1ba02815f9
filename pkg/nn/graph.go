package nn

import "fmt"

// The model's inference graph, for exporters (pkg/onnx): the layers in
// evaluation mode as a list of nodes in execution order, each naming the
// nodes its inputs come from. Dropout is the identity in evaluation mode
// and does not appear.

// GraphOp is one node of the inference graph. Exactly one of Conv, BN,
// Pool, Linear is set for the kinds that have parameters or settings.
type GraphOp struct {
	Kind   string // "Conv", "BatchNorm", "ReLU", "MaxPool", "Add", "GlobalAvgPool", "Flatten", "Linear"
	Name   string // torchvision's module name ("conv1", "layer1.0.bn1", "layer1.0.relu2", "fc", ...)
	Inputs []int  // indices of the nodes feeding it, in order; -1 is the model input
	Conv   *Conv2d
	BN     *BatchNorm2d
	Pool   *MaxPool2d
	Linear *Linear
}

// InferenceGraph lists the model's nodes in execution order; the last
// one's output is the logits. The layer pointers are the model's own
// (their parameters are the model's tensors): read them, do not change them.
func (m *Model) InferenceGraph() ([]GraphOp, error) {
	var g []GraphOp
	add := func(op GraphOp) int {
		g = append(g, op)
		return len(g) - 1
	}
	// node appends one leaf unit fed by in and returns its index.
	node := func(u unit, name string, in int) (int, error) {
		switch l := u.(type) {
		case *Conv2d:
			return add(GraphOp{Kind: "Conv", Name: l.Name, Inputs: []int{in}, Conv: l}), nil
		case *BatchNorm2d:
			return add(GraphOp{Kind: "BatchNorm", Name: l.Name, Inputs: []int{in}, BN: l}), nil
		case *ReLU:
			return add(GraphOp{Kind: "ReLU", Name: name, Inputs: []int{in}}), nil
		case *MaxPool2d:
			return add(GraphOp{Kind: "MaxPool", Name: name, Inputs: []int{in}, Pool: l}), nil
		case *GlobalAvgPool:
			return add(GraphOp{Kind: "GlobalAvgPool", Name: name, Inputs: []int{in}}), nil
		case *Flatten:
			return add(GraphOp{Kind: "Flatten", Name: name, Inputs: []int{in}}), nil
		case *Dropout:
			return in, nil
		case *Linear:
			return add(GraphOp{Kind: "Linear", Name: l.Name, Inputs: []int{in}, Linear: l}), nil
		}
		return 0, fmt.Errorf("%w: no graph node for %T", ErrConfig, u)
	}
	h := -1
	var err error
	stem := map[string]string{"*nn.ReLU": "relu", "*nn.MaxPool2d": "maxpool", "*nn.GlobalAvgPool": "avgpool", "*nn.Flatten": "flatten"}
	for _, u := range m.units {
		blk, ok := u.(*Block)
		if !ok {
			if h, err = node(u, stem[fmt.Sprintf("%T", u)], h); err != nil {
				return nil, err
			}
			continue
		}
		x := h
		relus := 0
		for _, v := range blk.Main {
			name := ""
			if _, isReLU := v.(*ReLU); isReLU {
				relus++
				name = fmt.Sprintf("%s.relu%d", blk.Name, relus)
			}
			if h, err = node(v, name, h); err != nil {
				return nil, err
			}
		}
		s := x
		for _, v := range blk.Down {
			if s, err = node(v, "", s); err != nil {
				return nil, err
			}
		}
		h = add(GraphOp{Kind: "Add", Name: blk.Name + ".add", Inputs: []int{h, s}})
		h = add(GraphOp{Kind: "ReLU", Name: blk.Name + ".relu", Inputs: []int{h}})
	}
	return g, nil
}
