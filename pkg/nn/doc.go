// Package nn is ringtrain's training engine: float32 tensors, the Backend
// interface that holds the dozen operations ResNet needs, the CPU backend,
// layers with explicit Forward and Backward, the ResNet family, losses,
// optimizers, learning-rate schedules, safetensors I/O and a model summary.
//
// It promises PyTorch's numerics: every layer, loss and optimizer computes
// what the torch.nn / torch.optim counterpart computes (checked against
// PyTorch golden files by `make parity`), and the CPU backend gives
// bit-identical results whatever the number of threads.
//
// Dimension letters used throughout:
//
//	N batch, C input channels, K output channels, H,W input height/width,
//	P,Q output height/width, R,S kernel height/width, I,O linear in/out features.
//
// Conventions (llm.c style): parameter gradients accumulate (+=), activation
// gradients assign (=).
package nn
