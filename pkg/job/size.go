package job

// ModelFile is the final model in the output directory (torchvision names).
const ModelFile = "model.safetensors"

// CIFAR10TrainSize is the number of training images of CIFAR-10.
const CIFAR10TrainSize = 50000

// TrainSize is the size of the spec's training set when the spec alone
// says it (CIFAR-10, synthetic data); false for an image folder, whose
// size only its files tell.
func (s Spec) TrainSize() (int, bool) {
	switch s.Data.Dataset {
	case "cifar10":
		return CIFAR10TrainSize, true
	case "synthetic":
		return s.Data.SyntheticSize, true
	}
	return 0, false
}

// StepsPerEpoch is the number of steps of the spec's global batch in one
// epoch of a training set of n samples (with drop_last, the last partial
// batch is not a step). It equals data.Sampler's count for the same
// settings.
func (s Spec) StepsPerEpoch(n int) int {
	b := s.GlobalBatch
	if b <= 0 || n <= 0 {
		return 0
	}
	if s.Data.DropLast {
		n = n / b * b
	}
	return (n + b - 1) / b
}
