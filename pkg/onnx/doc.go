// Package onnx exports a pkg/nn ResNet (any depth, both stems) in
// evaluation mode as an ONNX model, with the messages of ONNX's own schema
// (proto/onnxpb, generated from onnx.proto).
//
// Promises:
//
//   - Opset 13 (ir_version 7), operators Conv, BatchNormalization, Relu,
//     MaxPool, Add, GlobalAveragePool, Flatten, Gemm; the file passes
//     onnx.checker (full check) and onnxruntime computes the engine's
//     logits (tests: `make test-export`).
//   - One input "input" (float32, N x 3 x H x W; N, and by default H and W,
//     symbolic) that takes what the engine takes: images after the
//     evaluation transform (the CIFAR-10 mean/std, also stated in the
//     model's metadata); one output "logits" (N x classes, before softmax).
//   - Names: every initializer is named after the torchvision state_dict
//     tensor it holds ("layer1.0.conv1.weight", "layer1.0.bn1.running_mean",
//     "fc.bias"); every node and its output after the torchvision module
//     ("layer1.0.conv1", "layer1.0.relu1", "layer1.0.add"). With FoldBN,
//     each BatchNorm is folded into the convolution before it, whose
//     initializers become "<conv>.weight" and "<conv>.bias" (the folded
//     values) and no BatchNormalization node remains.
//   - Deterministic: the same model and options give the same bytes.
package onnx
