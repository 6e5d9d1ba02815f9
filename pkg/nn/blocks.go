package nn

// Residual blocks: torchvision's BasicBlock and Bottleneck (v1.5: the
// stride sits on the 3x3 conv).
//
//	BasicBlock: x -> conv3x3(s) -> bn -> relu -> conv3x3 -> bn -> (+ shortcut(x)) -> relu
//	Bottleneck: x -> conv1x1 -> bn -> relu -> conv3x3(s) -> bn -> relu -> conv1x1(x4) -> bn -> (+ shortcut(x)) -> relu
//
// shortcut(x) is x, or downsample.0 (1x1 conv, stride s) + downsample.1
// (BN) when the stride or the channel count changes.

// Block is a residual block: a main path ending in a BatchNorm2d, an
// optional projection shortcut, the residual add and a final ReLU.
// x (N,C,H,W) -> y (N,K,P,Q).
type Block struct {
	Kind string // "BasicBlock" or "Bottleneck" (the summary's row name)
	Name string // state_dict prefix, e.g. "layer2.0"
	Main []unit // conv/bn/relu..., ending with a BatchNorm2d
	Down []unit // nil (identity) or {Conv2d, BatchNorm2d}
	ReLU *ReLU  // the final, in-place ReLU

	e *env
}

// downsample is the projection shortcut (1x1 conv with the block's stride
// + BN, torchvision's "downsample.0/.1") when the stride or the channel
// count changes; nil (identity) otherwise.
func downsample(bd *builder, name string, inC, out, stride int) []unit {
	if stride == 1 && inC == out {
		return nil
	}
	return []unit{
		bd.conv2d(name+".downsample.0", inC, out, 1, stride, 0, false),
		bd.batchNorm(name+".downsample.1", out),
	}
}

func newBasicBlock(bd *builder, name string, inC, planes, stride int) *Block {
	blk := &Block{Kind: "BasicBlock", Name: name, e: bd.e}
	blk.Main = []unit{
		bd.conv2d(name+".conv1", inC, planes, 3, stride, 1, false),
		bd.batchNorm(name+".bn1", planes),
		&ReLU{InPlace: true, e: bd.e},
		bd.conv2d(name+".conv2", planes, planes, 3, 1, 1, false),
		bd.batchNorm(name+".bn2", planes),
	}
	blk.Down = downsample(bd, name, inC, planes, stride)
	blk.ReLU = &ReLU{InPlace: true, e: bd.e}
	fuseBNReLU(blk.Main)
	return blk
}

func newBottleneck(bd *builder, name string, inC, planes, stride int) *Block {
	const expansion = 4
	out := planes * expansion
	blk := &Block{Kind: "Bottleneck", Name: name, e: bd.e}
	blk.Main = []unit{
		bd.conv2d(name+".conv1", inC, planes, 1, 1, 0, false),
		bd.batchNorm(name+".bn1", planes),
		&ReLU{InPlace: true, e: bd.e},
		bd.conv2d(name+".conv2", planes, planes, 3, stride, 1, false),
		bd.batchNorm(name+".bn2", planes),
		&ReLU{InPlace: true, e: bd.e},
		bd.conv2d(name+".conv3", planes, out, 1, 1, 0, false),
		bd.batchNorm(name+".bn3", out),
	}
	blk.Down = downsample(bd, name, inC, out, stride)
	blk.ReLU = &ReLU{InPlace: true, e: bd.e}
	fuseBNReLU(blk.Main)
	return blk
}

// OutShape implements unit.
func (blk *Block) OutShape(in []int) ([]int, error) {
	h := in
	for _, u := range blk.Main {
		var err error
		if h, err = u.OutShape(h); err != nil {
			return nil, err
		}
	}
	s := in
	for _, u := range blk.Down {
		var err error
		if s, err = u.OutShape(s); err != nil {
			return nil, err
		}
	}
	if !SameShape(h, s) {
		return nil, CheckShape(blk.Name+" shortcut", s, h)
	}
	return h, nil
}

// Forward: y = relu(main(x) + shortcut(x)); the sum is formed in place in
// the last BatchNorm2d's output (its Backward does not read it).
func (blk *Block) Forward(x *Tensor) (*Tensor, error) {
	h := x
	for _, u := range blk.Main {
		var err error
		if h, err = u.Forward(h); err != nil {
			return nil, err
		}
	}
	s := x
	for _, u := range blk.Down {
		var err error
		if s, err = u.Forward(s); err != nil {
			return nil, err
		}
	}
	if err := CheckShape(blk.Name+" shortcut", s.Shape, h.Shape); err != nil {
		return nil, err
	}
	if f, ok := blk.e.b.(FusedOps); ok && blk.ReLU.InPlace {
		f.AddReLU(h, h, s)
		blk.ReLU.done = h // the ReLU's Forward only records h
	} else {
		blk.e.b.Add(h, h, s)
	}
	return blk.ReLU.Forward(h)
}

// Backward: the final ReLU's mask (in place on dy), then the shortcut
// (largest parameter indices first), then the main path in reverse; dx is
// the sum of both paths' input gradients.
func (blk *Block) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	e := blk.e
	g, err := blk.ReLU.Backward(dy, true)
	if err != nil {
		return nil, err
	}
	// g shares dy's storage, which the caller owns: never released here.
	gs := g
	for i := len(blk.Down) - 1; i >= 0; i-- {
		ng, err := blk.Down[i].Backward(gs, i > 0 || needDx)
		if gs != g && !sameStorage(ng, gs) {
			e.release(gs, g)
		}
		if err != nil {
			return nil, err
		}
		gs = ng
	}
	h := g
	for i := len(blk.Main) - 1; i >= 0; i-- {
		nh, err := blk.Main[i].Backward(h, i > 0 || needDx)
		if !sameStorage(h, g) && !sameStorage(nh, h) {
			e.release(h, g)
		}
		if err != nil {
			if !sameStorage(gs, g) {
				e.release(gs, g)
			}
			return nil, err
		}
		h = nh
	}
	if !needDx {
		return nil, nil
	}
	e.b.Add(h, h, gs)
	e.release(gs, g)
	return h, nil
}

func (blk *Block) params() []*Param {
	var ps []*Param
	for _, u := range blk.Main {
		ps = append(ps, u.params()...)
	}
	for _, u := range blk.Down {
		ps = append(ps, u.params()...)
	}
	return ps
}

func (blk *Block) free() {
	for _, u := range blk.Main {
		u.free()
	}
	for _, u := range blk.Down {
		u.free()
	}
	blk.ReLU.free()
}
