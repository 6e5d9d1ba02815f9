package nn

// This file holds the engine's public model contract. The implementation
// (layers, blocks, the ResNet family) lives in layers*.go and resnet.go.

// Param is one trainable tensor, named as in torchvision's state_dict
// ("conv1.weight", "layer1.0.bn1.weight", "fc.bias"). Value and Grad are
// views into the model's flat parameter and gradient tensors, so the
// optimizer and the all-reduce each see one contiguous slice.
type Param struct {
	Name   string
	Value  *Tensor
	Grad   *Tensor
	Frozen bool // not updated and given no optimizer state (transfer learning)
}

// Buffer is a non-trainable state tensor in the state_dict (BN running_mean
// and running_var). num_batches_tracked is an int64 in torch: it is held in
// Count (Value is nil) and saved as an I64 scalar.
type Buffer struct {
	Name  string
	Value *Tensor
	Count *int64
}

// ChannelReducer all-reduces small per-channel vectors in place (sum over
// the workers of a job). BatchNorm layers in SyncBatchNorm mode call it
// between their two halves; pkg/allreduce provides the implementation.
// A nil ChannelReducer means single-worker batch norm.
type ChannelReducer interface {
	AllReduceSum(v []float32) error
}

// ResNetConfig selects a member of the ResNet family.
type ResNetConfig struct {
	Depth   int     // 18, 34 (BasicBlock); 50, 101, 152 (Bottleneck)
	Stem    string  // "imagenet" (7x7/2 conv + 3x3/2 max-pool; default) or "cifar" (3x3/1 conv, no pool)
	Width   float64 // channel multiplier on (64,128,256,512); 0 means 1
	Classes int     // output classes; 0 means 1000
	Dropout float32 // dropout probability before fc; 0 = none
	Seed    int64   // initialisation seed (torchvision's scheme, our RNG)
}
