package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/internal/backend"
	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

func summaryCmd() *cobra.Command {
	spec := job.Default()
	var input string
	cmd := &cobra.Command{
		Use:   "summary",
		Short: "Print a torchsummary-style table of a model",
		Example: `  worker summary --model resnet18 --input 3,224,224 --classes 1000
  worker summary --model resnet50 --stem cifar --input 3,32,32 --classes 10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			chw, err := parseInput(input)
			if err != nil {
				return err
			}
			if w := spec.Model.Width; !(w > 0 && w <= job.MaxWidth) {
				return fmt.Errorf("summary: --width %g must be in (0, %d] (1: the paper's channel counts)", w, job.MaxWidth)
			}
			classes := spec.Model.Classes
			if classes == 0 {
				classes = 10
			}
			m, err := worker.BuildModel(nn.NewCPU(1), spec, classes)
			if err != nil {
				return err
			}
			defer m.Free()
			s, err := nn.Summary(m, chw[0], chw[1], chw[2])
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), s)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Model.Arch, "model", spec.Model.Arch, "resnet18|resnet34|resnet50|resnet101|resnet152")
	f.StringVar(&spec.Model.Stem, "stem", spec.Model.Stem, "imagenet | cifar")
	f.Float64Var(&spec.Model.Width, "width", spec.Model.Width, "channel width multiplier")
	f.IntVar(&spec.Model.Classes, "classes", 10, "output classes")
	f.Float32Var(&spec.Model.Dropout, "dropout", 0, "dropout before the classifier")
	f.BoolVar(&spec.Transfer.FreezeBackbone, "freeze-backbone", false, "show the backbone as frozen (non-trainable)")
	f.StringVar(&input, "input", "3,32,32", "input size C,H,W")
	return cmd
}

func parseInput(s string) ([3]int, error) {
	var out [3]int
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return out, fmt.Errorf("--input %q: want C,H,W, e.g. 3,224,224", s)
	}
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return out, fmt.Errorf("--input %q: %q is not a positive integer", s, p)
		}
		out[i] = v
	}
	return out, nil
}

func evaluateCmd() *cobra.Command {
	spec := job.Default()
	var config string
	cmd := &cobra.Command{
		Use:   "evaluate --weights MODEL.safetensors [job flags]",
		Short: "Evaluate saved weights on the test set and print loss and accuracy",
		Example: `  worker evaluate --weights runs/ringtrain/model.safetensors
  worker evaluate --weights model.safetensors --model resnet18 --stem cifar --dataset synthetic`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := job.Resolve(cmd.Flags(), &spec, config)
			if err != nil {
				return err
			}
			if s.Transfer.Weights == "" {
				return fmt.Errorf("evaluate: --weights is required")
			}
			log := cli.NewLogger("evaluate", env.Log())
			defer log.Sync()
			b, err := backend.Open(s.Device, s.Threads, gpuOptions(s.Precision), log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			train, test, err := worker.OpenDatasets(ctx, s)
			if err != nil {
				return err
			}
			tr, err := worker.NewTrainer(s, b, train, test)
			if err != nil {
				return err
			}
			defer tr.Close()
			r, err := tr.Evaluate(context.Background(), nil, 0, 1, allreduce.Tag{})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "evaluate: %d samples, loss %.4f, accuracy %.2f%%\n", r.N, r.Loss, 100*r.Accuracy)
			return nil
		},
	}
	job.BindFlags(cmd.Flags(), &spec)
	cmd.Flags().StringVar(&config, "config", "", "YAML job file (flags override it)")
	return cmd
}
