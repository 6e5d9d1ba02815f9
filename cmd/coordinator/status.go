package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

func statusCmd() *cobra.Command {
	var addrs []string
	var tf tlsconf.Files
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a running job: state, step, epoch, ETA, throughput, and each worker (what the dashboard's first screen shows)",
		Example: `  coordinator status --coordinator 127.0.0.1:7070
  coordinator status --coordinator c0:7070,c1:7070,c2:7070 --tls-cert tls/tls.crt --tls-key tls/tls.key --tls-ca tls/ca.crt
  coordinator status --coordinator c0:7070 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tc, err := tf.Load()
			if err != nil {
				return err
			}
			cl, err := control.NewClient(addrs, tc.DialOption())
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			js, err := cl.GetJob(ctx)
			if err != nil {
				return fmt.Errorf("status of the job at %s: %w", strings.Join(addrs, ","), err)
			}
			if asJSON {
				b, err := protojson.MarshalOptions{Multiline: true}.Marshal(js)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return err
			}
			return printStatus(cmd.OutOrStdout(), js, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&addrs, "coordinator", []string{"127.0.0.1:7070"}, "control address(es) of the job's coordinator replicas; any replica works (a follower names the leader)")
	f.BoolVar(&asJSON, "json", false, "print the leader's answer as JSON")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "give up when no replica answers within this")
	tf.Bind(f)
	return cmd
}

// printStatus writes the job's status as the dashboard's first screen
// shows it.
func printStatus(w io.Writer, js *controlpb.JobStatus, now time.Time) error {
	spec, err := job.Unmarshal(js.GetSpec())
	if err != nil && len(js.GetSpec()) > 0 {
		return fmt.Errorf("job spec from the coordinator: %w", err)
	}
	p := js.GetPlan()
	var step, epoch int64 = p.GetCommitted().GetStep(), p.GetCommitted().GetEpoch()
	for _, m := range js.GetMetrics() {
		if m.GetRank() == 0 && m.GetPhase() == "train" && m.GetGeneration() == p.GetGeneration() && m.GetStep() > step {
			step, epoch = m.GetStep(), m.GetEpoch()
		}
	}
	state := strings.ToLower(strings.TrimPrefix(p.GetState().String(), "JOB_STATE_"))
	fmt.Fprintf(w, "job %s: %s, plan generation %d, %d worker(s) in the ring\n", js.GetJob(), state, p.GetGeneration(), len(p.GetMembers()))
	if f := p.GetFailure(); f != "" {
		fmt.Fprintf(w, "stopped by bad input: %s\n", f) // a worker's input error (JOB_STATE_FAILED)
	}
	li := js.GetLeader()
	fmt.Fprintf(w, "leader: %s at %s (answered by %s)\n", li.GetLeaderId(), li.GetLeaderAddress(), li.GetNodeId())
	total := int64(0)
	if n, _ := spec.TrainSize(); n > 0 && spec.GlobalBatch > 0 {
		total = int64(spec.StepsPerEpoch(n)) * int64(spec.Epochs)
	}
	if spec.MaxSteps > 0 && (total == 0 || int64(spec.MaxSteps) < total) {
		total = int64(spec.MaxSteps)
	}
	eta := "-"
	if total > 0 && js.GetImagesPerSec() > 0 && spec.GlobalBatch > 0 {
		eta = (time.Duration(float64(total-step)*float64(spec.GlobalBatch)/js.GetImagesPerSec()) * time.Second).Round(time.Second).String()
	}
	totalS := "?"
	if total > 0 {
		totalS = fmt.Sprint(total)
	}
	shown := epoch + 1 // the epoch in progress, 1-based
	if spec.Epochs > 0 && shown > int64(spec.Epochs) {
		shown = int64(spec.Epochs) // the last one is done: its end is epoch Epochs, cursor 0
	}
	fmt.Fprintf(w, "epoch %d/%d, step %d/%s (committed %d), %.0f images/s, ETA %s\n",
		shown, spec.Epochs, step, totalS, p.GetCommitted().GetStep(), js.GetImagesPerSec(), eta)
	if spec.Model.Arch != "" {
		fmt.Fprintf(w, "model %s/%s on %s, batch %d, %s lr %g, output %s\n", spec.Model.Arch, spec.Model.Stem, spec.Data.Dataset,
			spec.GlobalBatch, spec.Optimizer.Name, spec.Optimizer.LR, spec.OutputDir)
	}
	if c := p.GetLatestCheckpoint(); c != nil {
		// Only an epoch-end checkpoint was evaluated; the reference of
		// one in the middle of an epoch has no accuracy (zero).
		if acc := c.GetAccuracy(); acc > 0 {
			fmt.Fprintf(w, "latest checkpoint: step %d (accuracy %.2f%%)\n", c.GetStep(), 100*acc)
		} else {
			fmt.Fprintf(w, "latest checkpoint: step %d\n", c.GetStep())
		}
	}

	// The workers: planned ones in rank order, then the other live ones.
	type row struct {
		id, host, device, state string
		rank                    int32
		m                       *controlpb.MetricsReport
	}
	rows := map[string]*row{}
	for _, pm := range p.GetMembers() {
		rows[pm.GetId()] = &row{id: pm.GetId(), host: pm.GetHostId(), device: pm.GetDevice(), rank: pm.GetRank(), state: "planned"}
	}
	for _, lw := range js.GetLive() {
		if _, ok := rows[lw.GetId()]; !ok {
			rows[lw.GetId()] = &row{id: lw.GetId(), host: lw.GetHostId(), device: lw.GetDevice(), rank: -1, state: "joining"}
		}
	}
	for _, m := range js.GetMetrics() {
		r, ok := rows[m.GetWorkerId()]
		if !ok {
			r = &row{id: m.GetWorkerId(), rank: -1, state: "gone"}
			rows[m.GetWorkerId()] = r
		}
		r.m = m
		switch {
		case r.rank >= 0 && m.GetGeneration() == p.GetGeneration():
			r.state = "training"
		case r.rank < 0 && r.state == "joining":
			r.state = "out" // trained under an older plan: left out (reported failed, or a standby)
		}
	}
	list := make([]*row, 0, len(rows))
	for _, r := range rows {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if (a.rank >= 0) != (b.rank >= 0) {
			return a.rank >= 0
		}
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		return a.id < b.id
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nWORKER\tHOST\tDEVICE\tRANK\tSTATE\tSTEP\tIMAGES/S\tSTEP MS\tDATA\tFWD+BWD\tEXPOSED A-R\tOPTIMIZER\tLAST REPORT")
	for _, r := range list {
		step, ips, last := "-", "-", "-"
		ph := []string{"-", "-", "-", "-", "-"}
		if m := r.m; m != nil {
			step = fmt.Sprint(m.GetStep())
			ips = fmt.Sprintf("%.0f", m.GetImagesPerSec())
			if m.GetUnixNano() > 0 {
				last = now.Sub(time.Unix(0, m.GetUnixNano())).Round(100*time.Millisecond).String() + " ago"
			}
			if x := m.GetPhases(); x != nil {
				for i, v := range []float64{x.GetStepSeconds(), x.GetDataWaitSeconds(), x.GetComputeSeconds(), x.GetExposedAllreduceSeconds(), x.GetOptimizerSeconds()} {
					ph[i] = fmt.Sprintf("%.1f", 1e3*v)
				}
			}
		}
		device := r.device
		if r.m != nil {
			if held, total := deviceMemGiB(r.m); total > 0 {
				// A GPU worker: the memory its backend holds, of the device's.
				device += fmt.Sprintf(" %.1f/%.0fGiB", held, total)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.id, r.host, device, r.rank, r.state, step, ips,
			ph[0], ph[1], ph[2], ph[3], ph[4], last)
	}
	return tw.Flush()
}
