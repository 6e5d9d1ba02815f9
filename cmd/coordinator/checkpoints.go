package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
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
		Short: "List a job's checkpoints: step, epoch, accuracy, size, verified",
		Long: `Lists the checkpoints in <output>/checkpoints, each verified against its
manifest (sizes and SHA-256 of its files). It reads the directory only, so it
answers while the job runs and after its state directory is lost. With
--etcd-endpoints it also lists the checkpoints the job recorded in that etcd
whose directories are gone (deleted by retention).`,
		Example: `  coordinator checkpoints --output runs/ringtrain
  coordinator checkpoints --etcd-endpoints http://etcd:2379 --job cifar --output /shared/runs/cifar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root := filepath.Join(output, "checkpoints")
			switch st, err := os.Stat(root); {
			case errors.Is(err, os.ErrNotExist):
				return fmt.Errorf("checkpoints: %s does not exist (--output must be the job's output directory, as this machine sees it)", root)
			case err != nil:
				return fmt.Errorf("checkpoints: %w", err)
			case !st.IsDir():
				return fmt.Errorf("checkpoints: %s is not a directory", root)
			}
			var recorded []manifest.Manifest
			if len(endpoints) > 0 {
				tc, err := tf.Load()
				if err != nil {
					return err
				}
				cl, err := cluster.Connect(cmd.Context(), cluster.Options{Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: tc.EtcdTLS()})
				if err != nil {
					return err
				}
				defer cl.Close()
				j, err := cl.Job(jobName)
				if err != nil {
					return err
				}
				if recorded, err = j.ListManifests(cmd.Context()); err != nil {
					return err
				}
			}
			rows, err := checkpointRows(root, recorded)
			if err != nil {
				return err
			}
			if len(rows) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no checkpoints in %s\n", root)
				return nil
			}
			return printCheckpoints(cmd.OutOrStdout(), rows)
		},
	}
	f := cmd.Flags()
	f.StringVar(&output, "output", "runs/ringtrain", "the job's output directory (holds checkpoints/)")
	f.StringVar(&jobName, "job", "ringtrain", "job name (its records in --etcd-endpoints)")
	f.StringSliceVar(&endpoints, "etcd-endpoints", nil, "also list the checkpoints the job recorded in this etcd whose directories are gone")
	f.StringVar(&stateDir, "state-dir", "", "unused: the listing reads <output>/checkpoints (the embedded etcd is the running coordinator's)")
	_ = f.MarkHidden("state-dir")
	tf.Bind(f)
	return cmd
}

// checkpointRow is one line of the listing.
type checkpointRow struct {
	step     int64
	m        manifest.Manifest // zero fields when unknown
	known    bool              // m was read (from the directory or etcd)
	verified string
}

// checkpointRows lists the checkpoint directories under root, each
// verified, oldest first, plus the recorded manifests whose directories
// are gone.
func checkpointRows(root string, recorded []manifest.Manifest) ([]checkpointRow, error) {
	steps, err := manifest.Steps(root)
	if err != nil {
		return nil, err
	}
	onDisk := make(map[int64]bool, len(steps))
	var rows []checkpointRow
	for _, st := range steps {
		onDisk[st] = true
		r := checkpointRow{step: st, verified: "yes"}
		m, err := manifest.Verify(root, st)
		if err != nil {
			r.verified = "NO: " + err.Error()
		}
		switch {
		case m.Validate() == nil && m.Step == st:
			r.m, r.known = m, true
		default:
			// No usable manifest: what meta.json says, if it is readable.
			if meta, merr := manifest.ReadMeta(root, st); merr == nil {
				r.m = manifest.Manifest{Step: st, Epoch: meta.Epoch, Cursor: meta.Cursor, WorldSize: meta.WorldSize,
					Accuracy: meta.Accuracy, Created: meta.Created}
				r.known = true
			}
		}
		rows = append(rows, r)
	}
	for _, m := range recorded {
		if !onDisk[m.Step] {
			rows = append(rows, checkpointRow{step: m.Step, m: m, known: true, verified: "deleted (retention)"})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].step < rows[j].step })
	return rows, nil
}

func printCheckpoints(w io.Writer, rows []checkpointRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tEPOCH\tCURSOR\tACCURACY\tSIZE\tWORLD\tCREATED\tVERIFIED")
	for _, r := range rows {
		if !r.known {
			fmt.Fprintf(tw, "%d\t-\t-\t-\t-\t-\t-\t%s\n", r.step, r.verified)
			continue
		}
		m := r.m
		acc := "-"
		if m.Accuracy != nil {
			acc = fmt.Sprintf("%.2f%%", 100**m.Accuracy)
		}
		size := "-"
		if len(m.Files) > 0 {
			size = fmt.Sprintf("%.1f MB", float64(m.TotalSize())/1e6)
		}
		created := "-"
		if !m.Created.IsZero() {
			created = m.Created.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\n", m.Step, m.Epoch, m.Cursor, acc, size, m.WorldSize, created, r.verified)
	}
	return tw.Flush()
}
