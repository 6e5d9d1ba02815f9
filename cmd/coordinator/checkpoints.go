package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
)

func checkpointsCmd() *cobra.Command {
	var stateDir, output, jobName string
	var endpoints []string
	var tf tlsconf.Files
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List a job's checkpoints from etcd: step, epoch, accuracy, size, verified",
		Example: `  coordinator checkpoints --output runs/ringtrain
  coordinator checkpoints --etcd-endpoints http://etcd:2379 --job cifar --output /shared/runs/cifar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stateDir == "" {
				stateDir = filepath.Join(output, "state")
			}
			tc, err := tf.Load()
			if err != nil {
				return err
			}
			cl, err := cluster.Open(cmd.Context(), cluster.Options{Endpoints: endpoints, Dir: stateDir, Start: startEtcd, DialTimeout: 5 * time.Second, TLS: tc.EtcdTLS()})
			if err != nil {
				return err
			}
			defer cl.Close()
			j, err := cl.Job(jobName)
			if err != nil {
				return err
			}
			ms, err := j.ListManifests(cmd.Context())
			if err != nil {
				return err
			}
			root := filepath.Join(output, "checkpoints")
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STEP\tEPOCH\tCURSOR\tACCURACY\tSIZE\tWORLD\tCREATED\tVERIFIED")
			for _, m := range ms {
				acc := "-"
				if m.Accuracy != nil {
					acc = fmt.Sprintf("%.2f%%", 100**m.Accuracy)
				}
				ver := "yes"
				if _, err := os.Stat(manifest.Dir(root, m.Step)); errors.Is(err, os.ErrNotExist) {
					ver = "deleted (retention)"
				} else if _, err := manifest.Verify(root, m.Step); err != nil {
					ver = "NO: " + err.Error()
				}
				fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%.1f MB\t%d\t%s\t%s\n", m.Step, m.Epoch, m.Cursor, acc,
					float64(m.TotalSize())/1e6, m.WorldSize, m.Created.Local().Format(time.DateTime), ver)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&output, "output", "runs/ringtrain", "the job's output directory (holds checkpoints/)")
	f.StringVar(&stateDir, "state-dir", "", "the job's state directory (default <output>/state)")
	f.StringVar(&jobName, "job", "ringtrain", "job name")
	f.StringSliceVar(&endpoints, "etcd-endpoints", nil, "external etcd (default: the embedded one in the state directory)")
	tf.Bind(f)
	return cmd
}
