package scale

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// Cluster runs sweep points on the workers already registered with a
// running coordinator (cluster mode): each point is a benchmark round
// (controlpb.Control.Bench) that the coordinator's leader plans on N of
// the live workers, the job's planned ones first; they run the warm-up and
// timed steps of a bench spec on a ring of their own and report every step
// with its StepPhases, while the other workers idle. When the round's
// reports are in (or it fails, or ctx ends) the round is ended, and the
// workers go back to the job's own plan: waiting, or training again from
// the job's last committed step when the job was running.
type Cluster struct {
	Client *control.Client
	// Spec is the bench's job (model, dataset, optimizer, bucket size,
	// EmulateCompute); its batch, bounds, steps are set per point.
	Spec           job.Spec
	BatchPerWorker int
	Warmup, Steps  int
	// Timeout bounds one point (default 10 minutes).
	Timeout time.Duration
	Log     *zap.Logger
}

// Live returns the job's live (registered) workers.
func (c *Cluster) Live(ctx context.Context) ([]*controlpb.WorkerInfo, error) {
	js, err := c.Client.GetJob(ctx)
	if err != nil {
		return nil, err
	}
	return js.GetLive(), nil
}

// EndRound ends the benchmark round that runs, if any (one left by a bench
// that was killed), and returns its id (0: none ran).
func (c *Cluster) EndRound(ctx context.Context) (uint64, error) {
	js, err := c.Client.GetJob(ctx)
	if err != nil {
		return 0, err
	}
	id := js.GetPlan().GetBench().GetId()
	if id == 0 {
		return 0, nil
	}
	_, err = c.Client.Bench(ctx, &controlpb.BenchRequest{End: true, Id: id})
	return id, err
}

// RunPoint runs one benchmark round of n workers and measures it (round
// is the sweep's round, for the record).
func (c *Cluster) RunPoint(ctx context.Context, n, round int) (Point, error) {
	log := c.Log
	if log == nil {
		log = zap.NewNop()
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	spec := c.Spec
	spec.Name = fmt.Sprintf("bench-n%d", n)
	spec.GlobalBatch = n * c.BatchPerWorker
	spec.MinWorkers, spec.MaxWorkers = n, n
	total := c.Warmup + c.Steps
	spec.MaxSteps = total
	spec.Epochs = max(spec.Epochs, 1)
	spec.Checkpoint = job.Checkpoint{EverySteps: 0, Keep: 1}
	if spec.Data.Dataset == "synthetic" {
		spec.Data.SyntheticSize = max(spec.Data.SyntheticSize, spec.GlobalBatch*(total+1))
	}
	if err := spec.Validate(); err != nil {
		return Point{}, err
	}
	specJSON, err := spec.Marshal()
	if err != nil {
		return Point{}, err
	}

	// Subscribe to the reports before the round starts.
	col := newCollector("bench", 0)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	ready := make(chan struct{})
	watchErr := make(chan error, 1)
	var gen uint64
	genSet := make(chan struct{})
	go func() {
		var early []*controlpb.MetricsReport // reports before the round's generation is known
		watchErr <- c.Client.WatchMetrics(wctx, func() { close(ready) }, func(m *controlpb.MetricsReport) error {
			select {
			case <-genSet:
				for _, e := range early {
					col.onMetrics(e)
				}
				early = nil
				col.onMetrics(m)
			default:
				early = append(early, m)
			}
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-watchErr:
		return Point{}, fmt.Errorf("scale: watch the coordinator's reports: %w", err)
	case <-ctx.Done():
		return Point{}, fmt.Errorf("scale: watch the coordinator's reports: %w", ctx.Err())
	}

	plan, err := c.Client.Bench(ctx, &controlpb.BenchRequest{Workers: int32(n), Spec: specJSON, Steps: int64(total)})
	if errors.Is(err, control.ErrBenchBusy) {
		return Point{}, fmt.Errorf("%w (if no other bench runs, one was killed: end its round with --end-round)", err)
	}
	if err != nil {
		return Point{}, fmt.Errorf("scale: start a round of %d workers: %w", n, err)
	}
	gen = plan.GetGeneration()
	col.generation = gen // set before genSet is closed: read only after
	close(genSet)
	ended := false
	end := func() error {
		if ended {
			return nil
		}
		ended = true
		ectx, ecancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ecancel()
		_, err := c.Client.Bench(ectx, &controlpb.BenchRequest{End: true, Id: gen})
		return err
	}
	defer func() { _ = end() }()
	hosts := map[string]bool{}
	var ids []string
	for _, m := range plan.GetMembers() {
		hosts[m.GetHostId()] = true
		ids = append(ids, m.GetId())
	}
	log.Info("bench round", zap.Uint64("generation", gen), zap.Strings("members", ids))

	// Wait for every rank's last step; a newer plan first means the round
	// failed (a member's report ended it) or was superseded.
	moved := make(chan uint64, 1)
	go func() {
		_ = c.Client.WatchPlan(wctx, "scalebench", gen, func(p *controlpb.Plan) error {
			select {
			case moved <- p.GetGeneration():
			default:
			}
			return errors.New("moved")
		})
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !col.complete(n, int64(total)) {
		select {
		case <-ctx.Done():
			return Point{}, fmt.Errorf("scale: round of %d workers (%v) did not finish: %w", n, ids, ctx.Err())
		case g := <-moved:
			if col.complete(n, int64(total)) {
				break
			}
			return Point{}, fmt.Errorf("scale: round of %d workers (%v) ended before its last step (the plan moved to generation %d: a member failed or left; see its log and the coordinator's)", n, ids, g)
		case err := <-watchErr:
			return Point{}, fmt.Errorf("scale: round of %d workers: %w", n, err)
		case <-tick.C:
		}
	}
	if err := end(); err != nil {
		return Point{}, fmt.Errorf("scale: end the round of %d workers: %w", n, err)
	}
	p, err := col.point(n, c.Warmup, total, c.BatchPerWorker)
	if err != nil {
		return p, err
	}
	p.Hosts = len(hosts)
	return p, nil
}
