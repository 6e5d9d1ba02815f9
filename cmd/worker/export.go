package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/onnx"
)

func exportCmd() *cobra.Command {
	f := &inferFlags{noClasses: true}
	var format, out string
	var fold bool
	var size int
	cmd := &cobra.Command{
		Use:   "export --format onnx --weights MODEL.safetensors --out MODEL.onnx [flags]",
		Short: "Export saved weights as an ONNX model (opset 13) for other runtimes",
		Long: fmt.Sprintf(`Export saved weights (evaluation mode) as an ONNX model: opset %d (IR version %d),
input "input" (float32, N x 3 x H x W, images normalised with the CIFAR-10 mean/std
as in evaluation), output "logits" (N x classes, before softmax). Initializers
carry the torchvision state_dict names, nodes the torchvision module names. BatchNorm
is kept as BatchNormalization nodes, or folded into the convolutions with --fold-bn.
The architecture is read from the weights file.`, onnx.Opset, onnx.IRVersion),
		Example: `  worker export --format onnx --weights runs/ringtrain/model.safetensors --out model.onnx
  worker export --format onnx --weights model.safetensors --fold-bn --input-size 32 --out model-folded.onnx`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "onnx" {
				return fmt.Errorf("export: --format %q: only onnx is supported", format)
			}
			if out == "" {
				return fmt.Errorf("export: --out FILE.onnx is required")
			}
			if size < 0 {
				return fmt.Errorf("export: --input-size %d: want 0 (any size) or a positive side", size)
			}
			l, err := f.open(cmd, "export")
			if err != nil {
				return err
			}
			defer l.model.Free()
			if size > 0 {
				if _, err := l.model.OutShape([]int{1, 3, size, size}); err != nil {
					return fmt.Errorf("export: --input-size %d: %w", size, err)
				}
			}
			if err := onnx.WriteFile(out, l.model, onnx.Options{FoldBN: fold, Height: size, Width: size}); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			st, err := os.Stat(out)
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			bn := "kept as BatchNormalization nodes"
			if fold {
				bn = "folded into the convolutions"
			}
			hw := "H x W (any size)"
			if size > 0 {
				hw = fmt.Sprintf("%d x %d", size, size)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "export: %s from %s -> %s (%.1f MB)\n", l.arch, l.spec.Transfer.Weights, out, float64(st.Size())/1e6)
			fmt.Fprintf(cmd.OutOrStdout(), "export: ONNX opset %d (IR version %d); batch norm %s\n", onnx.Opset, onnx.IRVersion, bn)
			fmt.Fprintf(cmd.OutOrStdout(), "export: input \"input\" float32 N x 3 x %s, normalised with the CIFAR-10 mean/std; output \"logits\" N x %d; initializers named as the torchvision state_dict\n", hw, l.arch.Classes)
			return nil
		},
	}
	bindInferFlags(cmd, f)
	fs := cmd.Flags()
	fs.StringVar(&format, "format", "onnx", "output format: onnx")
	fs.StringVar(&out, "out", "", "output file (.onnx)")
	fs.BoolVar(&fold, "fold-bn", false, "fold batch norm into the convolutions (default: keep BatchNormalization nodes)")
	fs.IntVar(&size, "input-size", 0, "fix the input's height and width (0: symbolic, any size)")
	return cmd
}
