package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/cluster/embedded"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// SweepConfig configures a sweep of real jobs over worker counts.
type SweepConfig struct {
	// Spec is the job every point runs (model, dataset, optimizer,
	// bucket size, EmulateCompute); its GlobalBatch, worker bounds, steps
	// and output directory are set per point.
	Spec job.Spec
	// BatchPerWorker is each worker's batch: weak scaling, as DDP and
	// Horovod report it (the global batch grows with the workers).
	BatchPerWorker int
	Workers        []int // worker counts, e.g. 1, 2, 4, 8
	Warmup, Steps  int   // untimed and timed steps per point
	// Hosts places the workers on emulated hosts (nil: all on this
	// machine's loopback). Worker i of n runs on host i*H/n.
	Hosts *Hosts
	// WorkerBin is the worker binary; WorkerArgs are added to every
	// 'worker run'.
	WorkerBin  string
	WorkerArgs []string
	Threads    int    // compute threads per worker (default 1)
	OutputDir  string // each point's job lives in OutputDir/n<N>
	// Timeout bounds one point (default 10 minutes).
	Timeout time.Duration
	Log     *zap.Logger
	// Progress receives a line per point (nil: none).
	Progress io.Writer
	// Rounds runs the whole sweep this many times, interleaved (default 1).
	Rounds int
	// RunPoint runs one point (default: the package's RunPoint, local or
	// emulated hosts; cluster mode gives its own).
	RunPoint func(ctx context.Context, n, round int) (Point, error)
}

// Point is one measured worker count. Times are means over the timed
// steps (and over ranks for the phases).
type Point struct {
	Workers          int     `json:"workers"`
	Round            int     `json:"round"` // the sweep round it was measured in (1-based)
	Hosts            int     `json:"hosts"` // distinct (emulated) hosts used; 0 without emulation
	BatchPerWorker   int     `json:"batch_per_worker"`
	Steps            int     `json:"steps"` // timed steps
	StepSeconds      float64 `json:"step_s"`
	ImagesPerSec     float64 `json:"images_per_sec"`
	PerWorker        float64 `json:"images_per_sec_per_worker"`
	Efficiency       float64 `json:"efficiency"` // throughput(N) / (N x throughput(1))
	DataWait         float64 `json:"data_wait_s"`
	Compute          float64 `json:"compute_s"`
	ExposedAllReduce float64 `json:"exposed_allreduce_s"`
	Optimizer        float64 `json:"optimizer_s"`
	AllReduce        float64 `json:"allreduce_s"`
	AllReduceBytes   int64   `json:"allreduce_bytes"`
	BusBW            float64 `json:"busbw_bytes_per_s"`
	HiddenFraction   float64 `json:"hidden_fraction"`
	EmulatedCompute  bool    `json:"emulated_compute"`
	// RingWorld is the ring's size as the workers reported it with every
	// step, and Reporters the workers that reported the timed steps: on a
	// cluster, the subset the coordinator planned.
	RingWorld int      `json:"ring_world"`
	Reporters []string `json:"reporters"`
	// CPU: cores our processes (coordinator excluded) used while timed,
	// and how busy the whole machine was (all processes, 0-1).
	WorkerCores  float64 `json:"worker_cores"`
	MachineBusy  float64 `json:"machine_busy"`
	MachineCores int     `json:"machine_cores"`
	// The model's prediction for this configuration (filled by Compare).
	Predicted      *Prediction `json:"predicted,omitempty"`
	ModelErrorStep float64     `json:"model_error"` // (predicted - measured) / measured step time
}

// Sweep runs one job per worker count and round: round 1 runs every
// count of Workers in order, then round 2 the same, and so on (Rounds,
// default 1), so that a slow spell of a shared machine falls on one round
// of every count rather than on all rounds of one. Each round's
// efficiencies are relative to that round's one-worker point (when there
// is one). The returned points are, per count, the round whose efficiency
// is the median (the lower median for an even number of rounds), with
// Efficiency set to the median; every round is kept in Rounds.
func Sweep(ctx context.Context, cfg SweepConfig) (*SweepResult, error) {
	if cfg.BatchPerWorker <= 0 || cfg.Steps <= 0 || cfg.Warmup < 0 || len(cfg.Workers) == 0 {
		return nil, fmt.Errorf("%w: batch per worker %d, steps %d, warm-up %d, workers %v", ErrInvalid, cfg.BatchPerWorker, cfg.Steps, cfg.Warmup, cfg.Workers)
	}
	for _, n := range cfg.Workers {
		if n < 1 || n > 256 {
			return nil, fmt.Errorf("%w: worker count %d", ErrInvalid, n)
		}
	}
	run := cfg.RunPoint
	if run == nil {
		run = func(ctx context.Context, n, round int) (Point, error) { return RunPoint(ctx, cfg, n, round) }
	}
	rounds := max(cfg.Rounds, 1)
	res := &SweepResult{}
	for r := 1; r <= rounds; r++ {
		var pts []Point
		for _, n := range cfg.Workers {
			p, err := run(ctx, n, r)
			if err != nil {
				return res, fmt.Errorf("scale: %d workers, round %d: %w", n, r, err)
			}
			p.Round = r
			pts = append(pts, p)
			SetEfficiency(pts)
			if cfg.Progress != nil {
				round := ""
				if rounds > 1 {
					round = fmt.Sprintf(" round %d/%d", r, rounds)
				}
				p = pts[len(pts)-1]
				fmt.Fprintf(cfg.Progress, "scale: n=%d%s  %8.1f img/s (%6.1f/worker)  eff %5.1f%%  step %7.1f ms = data %.1f + compute %.1f + exposed %.1f + optimizer %.1f ms  busbw %s  hidden %3.0f%%%s\n",
					p.Workers, round, p.ImagesPerSec, p.PerWorker, 100*p.Efficiency, 1e3*p.StepSeconds, 1e3*p.DataWait, 1e3*p.Compute,
					1e3*p.ExposedAllReduce, 1e3*p.Optimizer, FormatBW(p.BusBW), 100*p.HiddenFraction, cpuNote(p))
			}
		}
		res.Rounds = append(res.Rounds, pts)
	}
	res.Efficiency = map[int]Ratio{}
	for i, n := range cfg.Workers {
		var effs []float64
		for _, pts := range res.Rounds {
			effs = append(effs, pts[i].Efficiency)
		}
		res.Efficiency[n] = NewRatio(effs)
		// The round at the median: sort the rounds by efficiency.
		order := make([]int, len(res.Rounds))
		for k := range order {
			order[k] = k
		}
		sort.SliceStable(order, func(a, b int) bool { return effs[order[a]] < effs[order[b]] })
		p := res.Rounds[order[(len(order)-1)/2]][i]
		p.Efficiency = res.Efficiency[n].Median
		res.Points = append(res.Points, p)
	}
	return res, nil
}

// SweepResult is a sweep: per worker count the median round, every round,
// and each count's efficiency over the rounds.
type SweepResult struct {
	Points     []Point
	Rounds     [][]Point     // Rounds[r][i]: round r+1, Workers[i]
	Efficiency map[int]Ratio // by worker count
}

// cpuNote is the CPU part of a progress line (none when not measured, as
// on a cluster).
func cpuNote(p Point) string {
	if p.MachineCores == 0 {
		return ""
	}
	return fmt.Sprintf("  cpu: workers %.2f of %d cores, machine %3.0f%% busy", p.WorkerCores, p.MachineCores, 100*p.MachineBusy)
}

// SetEfficiency fills every point's efficiency from the one-worker point.
func SetEfficiency(pts []Point) {
	var one float64
	for _, p := range pts {
		if p.Workers == 1 {
			one = p.ImagesPerSec
		}
	}
	for i := range pts {
		if one > 0 {
			pts[i].Efficiency = pts[i].ImagesPerSec / (float64(pts[i].Workers) * one)
		}
	}
}

// FormatBW writes bytes/s as GB/s or MB/s with the link-style bits.
func FormatBW(b float64) string {
	if b <= 0 {
		return "-"
	}
	if b >= 1e9 {
		return fmt.Sprintf("%.2f GB/s", b/1e9)
	}
	return fmt.Sprintf("%.1f MB/s", b/1e6)
}

// collector keeps the train reports of a point's timed steps.
type collector struct {
	// phase is the reports' phase ("train"; "bench" on a cluster) and
	// generation, when not 0, the plan they must come from. Set before use.
	phase      string
	generation uint64

	mu      sync.Mutex // guards the fields below
	byStep  map[int64]map[int32]*controlpb.MetricsReport
	arrival map[int64]int64 // rank 0's end of a step (unix ns, its clock)
}

func newCollector(phase string, generation uint64) *collector {
	return &collector{phase: phase, generation: generation, byStep: map[int64]map[int32]*controlpb.MetricsReport{}, arrival: map[int64]int64{}}
}

// complete reports whether every one of n ranks reported step last.
func (c *collector) complete(n int, last int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byStep[last]) >= n
}

func (c *collector) onMetrics(m *controlpb.MetricsReport) {
	if m.GetPhase() != c.phase || (c.generation != 0 && m.GetGeneration() != c.generation) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := m.GetStep()
	if c.byStep[s] == nil {
		c.byStep[s] = map[int32]*controlpb.MetricsReport{}
	}
	c.byStep[s][m.GetRank()] = m
	if m.GetRank() == 0 {
		c.arrival[s] = m.GetPhases().GetEndUnixNano()
		if c.arrival[s] == 0 { // a worker without it: the receipt time
			c.arrival[s] = m.GetUnixNano()
		}
	}
}

// RunPoint runs one job of n workers (in round round) and measures it.
func RunPoint(ctx context.Context, cfg SweepConfig, n, round int) (Point, error) {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	threads := max(cfg.Threads, 1)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dir := filepath.Join(cfg.OutputDir, fmt.Sprintf("n%d", n))
	if cfg.Rounds > 1 {
		dir = filepath.Join(dir, fmt.Sprintf("round%d", round))
	}
	if err := os.RemoveAll(dir); err != nil {
		return Point{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return Point{}, err
	}
	spec := cfg.Spec
	spec.Name = fmt.Sprintf("bench-n%d", n)
	spec.OutputDir = dir
	spec.GlobalBatch = n * cfg.BatchPerWorker
	spec.MinWorkers, spec.MaxWorkers = n, n
	total := cfg.Warmup + cfg.Steps
	spec.MaxSteps = total
	spec.Epochs = max(spec.Epochs, 1)
	spec.Checkpoint = job.Checkpoint{EverySteps: 0, Keep: 1}
	spec.Threads = threads
	spec.Device = "cpu"
	if spec.Data.Dataset == "synthetic" {
		// One epoch holds every step: no evaluation in the timed window.
		spec.Data.SyntheticSize = max(spec.Data.SyntheticSize, spec.GlobalBatch*(total+1))
	}
	if err := spec.Validate(); err != nil {
		return Point{}, err
	}
	specJSON, err := spec.Marshal()
	if err != nil {
		return Point{}, err
	}
	host := "127.0.0.1"
	if cfg.Hosts != nil {
		host = cfg.Hosts.BridgeIP
	}
	cl, err := cluster.Open(ctx, cluster.Options{Dir: filepath.Join(dir, "state"),
		Start: func(ctx context.Context, dir string, _ *cluster.ServerTLS, log *zap.Logger) (cluster.Server, error) {
			return embedded.Start(ctx, embedded.Config{Dir: dir, Logger: log, ClientHost: host})
		}})
	if err != nil {
		return Point{}, err
	}
	defer cl.Close()
	ej, err := cl.Job(spec.Name)
	if err != nil {
		return Point{}, err
	}
	col := newCollector("train", 0)
	co, err := coordinator.Start(coordinator.Config{
		ListenAddr: host + ":0",
		Node:       coordinator.NodeConfig{ID: "c0", Dir: filepath.Join(dir, "state"), BindAddr: "127.0.0.1:0", Bootstrap: true},
		Service: coordinator.ServiceConfig{Job: spec.Name, EtcdEndpoints: cl.Endpoints(), Members: ej, MemberTTL: 10 * time.Second,
			Spec:      &coordinator.SpecInput{Spec: specJSON, ConfigHash: spec.Hash(), MinWorkers: n, MaxWorkers: n},
			OnMetrics: col.onMetrics, Logger: log.Named("control").WithOptions(zap.IncreaseLevel(zap.WarnLevel))},
	})
	if err != nil {
		return Point{}, err
	}
	defer co.Close()

	procs := make([]*exec.Cmd, 0, n)
	exited := make(chan error, n)
	defer func() {
		for _, c := range procs {
			_ = c.Process.Kill()
		}
		for range procs {
			<-exited
		}
	}()
	usedHosts := map[int]bool{}
	for i := 0; i < n; i++ {
		args := []string{"run", "--coordinator", co.Addr(), "--id", fmt.Sprintf("w%d", i), "--threads", fmt.Sprint(threads)}
		var cmd *exec.Cmd
		if cfg.Hosts != nil {
			k := i * len(cfg.Hosts.Names) / n
			usedHosts[k] = true
			args = append(args, "--listen", cfg.Hosts.IPs[k]+":0", "--host-id", cfg.Hosts.Names[k])
			cmd = cfg.Hosts.Command(context.Background(), k, cfg.WorkerBin, append(args, cfg.WorkerArgs...)...)
		} else {
			cmd = exec.Command(cfg.WorkerBin, append(args, cfg.WorkerArgs...)...)
		}
		f, err := os.Create(filepath.Join(dir, "logs", fmt.Sprintf("w%d.log", i)))
		if err != nil {
			return Point{}, err
		}
		cmd.Stdout, cmd.Stderr = f, f
		cmd.Env = append(cmd.Environ(), "RINGTRAIN_LOG=json", fmt.Sprintf("GOMAXPROCS=%d", threads+1))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			f.Close()
			return Point{}, fmt.Errorf("start worker %d: %w", i, err)
		}
		procs = append(procs, cmd)
		go func() { err := cmd.Wait(); f.Close(); exited <- err }()
	}

	// Wait for the warm-up to end, sample the CPU, wait for the end.
	var cpu0 cpuSample
	pids := func() []int {
		out := make([]int, len(procs))
		for i, c := range procs {
			out[i] = c.Process.Pid
		}
		return out
	}
	done := 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		col.mu.Lock()
		_, warm := col.arrival[int64(cfg.Warmup)]
		if cfg.Warmup == 0 {
			warm = true
		}
		col.mu.Unlock()
		if warm && cpu0.at.IsZero() {
			cpu0 = sampleCPU(pids())
		}
		if co.Node().State().Status == coordinator.StatusDone {
			break
		}
		select {
		case <-ctx.Done():
			return Point{}, fmt.Errorf("point did not finish (logs in %s): %w", filepath.Join(dir, "logs"), ctx.Err())
		case err := <-exited:
			done++
			procs = slices.DeleteFunc(procs, func(c *exec.Cmd) bool { return c.ProcessState != nil })
			if co.Node().State().Status != coordinator.StatusDone {
				return Point{}, fmt.Errorf("a worker exited before the end (%v); logs in %s", err, filepath.Join(dir, "logs"))
			}
		case <-tick.C:
		}
	}
	cpu1 := sampleCPU(pids())
	p, err := col.point(n, cfg.Warmup, total, cfg.BatchPerWorker)
	if err != nil {
		return p, fmt.Errorf("%w (logs in %s)", err, filepath.Join(dir, "logs"))
	}
	if cfg.Hosts != nil {
		p.Hosts = len(usedHosts)
	}
	p.WorkerCores, p.MachineBusy, p.MachineCores = cpu0.until(cpu1)
	return p, nil
}

// point aggregates the timed steps (warm, total].
func (c *collector) point(n, warm, total, batch int) (Point, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := Point{Workers: n, BatchPerWorker: batch, Steps: total - warm}
	t0, ok0 := c.arrival[int64(warm)]
	t1, ok1 := c.arrival[int64(total)]
	if !ok1 || (warm > 0 && !ok0) {
		return p, errors.New("scale: the reports of the timed window's first or last step did not arrive")
	}
	var k float64
	hidden := 0.0
	reporters := map[string]bool{}
	for s := int64(warm) + 1; s <= int64(total); s++ {
		for _, m := range c.byStep[s] {
			ph := m.GetPhases()
			if ph == nil {
				continue
			}
			if w := int(ph.GetWorld()); p.RingWorld != 0 && w != p.RingWorld {
				return p, fmt.Errorf("scale: the reports disagree on the ring's size (%d and %d)", p.RingWorld, w)
			} else {
				p.RingWorld = w
			}
			reporters[m.GetWorkerId()] = true
			k++
			p.DataWait += ph.GetDataWaitSeconds()
			p.Compute += ph.GetComputeSeconds()
			p.ExposedAllReduce += ph.GetExposedAllreduceSeconds()
			p.Optimizer += ph.GetOptimizerSeconds()
			p.AllReduce += ph.GetAllreduceSeconds()
			p.AllReduceBytes = ph.GetAllreduceBytes()
			hidden += ph.GetHiddenFraction() * ph.GetAllreduceSeconds()
			p.EmulatedCompute = ph.GetEmulatedCompute()
		}
	}
	if k == 0 {
		return p, errors.New("scale: no step phases reported")
	}
	p.Reporters = make([]string, 0, len(reporters))
	for id := range reporters {
		p.Reporters = append(p.Reporters, id)
	}
	sort.Strings(p.Reporters)
	p.DataWait /= k
	p.Compute /= k
	p.ExposedAllReduce /= k
	p.Optimizer /= k
	if p.AllReduce > 0 {
		p.HiddenFraction = hidden / p.AllReduce
	}
	p.AllReduce /= k
	if n > 1 && p.AllReduce > 0 {
		p.BusBW = float64(p.AllReduceBytes) / p.AllReduce * 2 * float64(n-1) / float64(n)
	}
	if warm > 0 {
		p.StepSeconds = float64(t1-t0) / 1e9 / float64(total-warm)
	} else {
		p.StepSeconds = p.DataWait + p.Compute + p.ExposedAllReduce + p.Optimizer
	}
	p.ImagesPerSec = float64(n*batch) / p.StepSeconds
	p.PerWorker = p.ImagesPerSec / float64(n)
	return p, nil
}

// Median returns the median of v (0 for none).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
