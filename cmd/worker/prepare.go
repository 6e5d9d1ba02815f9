package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

func prepareCmd() *cobra.Command {
	var world int
	cmd := &cobra.Command{
		Use:   "prepare < SPEC.json",
		Short: "Fetch and check a job's data before training (the coordinator's --workers N runs it once)",
		Long: `Reads a job spec (JSON, as the coordinator replicates it) on standard input,
downloads the data when missing, checks the input (classes, batch size, every
image of a folder, initial weights) and prints the training set's size as JSON:
{"train_samples": N, "classes": C}. A bad input exits with the input-error code.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := io.ReadAll(cmd.InOrStdin())
			if err != nil {
				return err
			}
			spec, err := job.Unmarshal(b)
			if err != nil {
				return err
			}
			p, err := worker.Prepare(cmd.Context(), spec, world)
			if errors.Is(err, data.ErrUnavailable) {
				return fmt.Errorf("%w\n(a local copy of the archive: --cifar-mirror /path/to/cifar-10-binary.tar.gz; or train offline on procedurally drawn images: --dataset synthetic)", err)
			}
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(p)
		},
	}
	cmd.Flags().IntVar(&world, "world", 0, "the number of workers that will train: also check that every worker's part of a step can be trained")
	return cmd
}
