// Package explain interprets a trained ResNet of pkg/nn: Grad-CAM maps of a
// residual stage and Shapley values of image patches, and the pictures of
// both. It runs the model's own Forward and Backward on whatever backend
// the model lives on (CPU or GPU); it holds no second implementation of
// any layer.
//
// Images are model inputs: float32, channel-major (3, H, W), already
// normalised (data.EvalTransform).
//
// Promises:
//
//   - Grad-CAM is Selvaraju et al.'s: alpha_k = mean over (p,q) of
//     dy_c/dA_k[p,q], map = ReLU(sum_k alpha_k A_k), where A is the chosen
//     layer's output in evaluation mode and y_c the class logit (before
//     softmax); the map is upsampled to the input size bilinearly with
//     align_corners=False (torch.nn.functional.interpolate's default).
//     It equals PyTorch's computation for the same weights and image (the
//     package test checks a relative error <= 1e-4 against python3-torch).
//   - Shapley values treat a G x G grid of patches as players; a patch is
//     absent when its pixels take the baseline image's values. The
//     estimate averages marginal contributions over uniformly drawn
//     permutations (each permutation's coalitions are evaluated in batched
//     forward passes); each value comes with its standard error (sample
//     standard deviation / sqrt(permutations)). Every permutation's
//     contributions telescope to f(image) - f(baseline) as computed inside
//     its own batch, so the efficiency check (Result.Efficiency) compares
//     the sum with a separate forward pass of the image and the baseline:
//     a mismatch means a wrong coalition image or batch, not bad luck.
//   - The model's mode and frozen flags are restored on return and its tap
//     removed; its parameter gradients are left untouched (every parameter
//     is frozen while explaining).
package explain
