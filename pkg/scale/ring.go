package scale

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
)

// RingRankConfig is one rank of RunRing's measurement.
type RingRankConfig struct {
	Rank, World int
	Peers       []string // ring endpoints, by rank (host:port)
	HostID      string
	Bytes       int64
	Iters       int
	// TCPSendBuffer of the frame connections (0: the transport's default).
	TCPSendBuffer int
}

// RingRank is one rank of our ring all-reduce measured as gloo's peer is
// (../shared/reference/torch_gloo_allreduce.py's method): one fp32 vector
// of Bytes, a barrier (a one-element all-reduce) before each timed
// all-reduce, the median time. Rank 0 writes a result line to out.
func RingRank(ctx context.Context, cfg RingRankConfig, out io.Writer) error {
	tr, err := allreduce.NewGRPCTransport(allreduce.GRPCConfig{HostID: cfg.HostID, TCPSendBuffer: cfg.TCPSendBuffer})
	if err != nil {
		return err
	}
	defer tr.Close()
	if _, err := tr.Listen(cfg.Peers[cfg.Rank]); err != nil {
		return err
	}
	rc := allreduce.DefaultConfig("ringbench", 1, cfg.Rank, cfg.World)
	rc.Timeout = time.Minute
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	r, err := allreduce.Open(octx, tr, rc, cfg.Peers)
	cancel()
	if err != nil {
		return err
	}
	defer r.Close()
	v := make([]float32, cfg.Bytes/4)
	for i := range v {
		v[i] = 1
	}
	bar := make([]float32, 1)
	step := uint64(0)
	op := func(x []float32) error {
		step++
		return r.AllReduce(ctx, allreduce.Tag{Step: step}, x, allreduce.Sum)
	}
	if err := op(v); err != nil { // warm-up
		return err
	}
	var ts []float64
	for i := 0; i < max(cfg.Iters, 1); i++ {
		if err := op(bar); err != nil {
			return err
		}
		t0 := time.Now()
		if err := op(v); err != nil {
			return err
		}
		ts = append(ts, time.Since(t0).Seconds())
	}
	sort.Float64s(ts)
	if cfg.Rank == 0 {
		fmt.Fprintf(out, "ring world=%d bytes=%d median_time=%.1fms\n", cfg.World, 4*len(v), 1e3*ts[len(ts)/2])
	}
	return nil
}

// RingConfig runs RingRank on emulated hosts through Exe's hidden
// subcommand (Args are put before the rank's flags).
type RingConfig struct {
	Exe           string
	Args          []string
	Hosts         *Hosts
	Bytes         int64
	Iters         int
	TCPSendBuffer int
	Timeout       time.Duration
}

var ringOut = regexp.MustCompile(`ring world=\d+ bytes=(\d+) median_time=([0-9.]+)ms`)

// RunRing measures our ring all-reduce on n ranks over the emulated links
// (rank i on host i*H/n), the way RunGloo measures gloo.
func RunRing(ctx context.Context, cfg RingConfig, n int) (GlooResult, error) {
	if cfg.Hosts == nil || n < 2 {
		return GlooResult{}, fmt.Errorf("%w: the ring measurement needs emulated hosts and n >= 2", ErrInvalid)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	port := 29300 + time.Now().Nanosecond()%300
	peers := make([]string, n)
	hostOf := make([]int, n)
	for r := range peers {
		hostOf[r] = r * len(cfg.Hosts.Names) / n
		peers[r] = fmt.Sprintf("%s:%d", cfg.Hosts.IPs[hostOf[r]], port+r)
	}
	type out struct {
		b   []byte
		err error
	}
	res := make(chan out, n)
	started := 0
	for r := 0; r < n; r++ {
		args := append(append([]string{}, cfg.Args...), "--rank", strconv.Itoa(r), "--world", strconv.Itoa(n),
			"--peers", join(peers), "--host-id", cfg.Hosts.Names[hostOf[r]], "--bytes", strconv.FormatInt(cfg.Bytes, 10),
			"--iters", strconv.Itoa(cfg.Iters), "--sndbuf", strconv.Itoa(cfg.TCPSendBuffer))
		cmd := cfg.Hosts.Command(ctx, hostOf[r], cfg.Exe, args...)
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			cancel()
			for ; started > 0; started-- {
				<-res
			}
			return GlooResult{}, fmt.Errorf("ring rank %d: %w", r, err)
		}
		started++
		go func() { err := cmd.Wait(); res <- out{buf.Bytes(), err} }()
	}
	var m [][]byte
	var first error
	for ; started > 0; started-- {
		o := <-res
		if o.err != nil && first == nil {
			first = fmt.Errorf("ring: %w: %s", o.err, bytes.TrimSpace(o.b))
			cancel()
		}
		if x := ringOut.FindSubmatch(o.b); x != nil {
			m = x
		}
	}
	if first != nil {
		return GlooResult{}, first
	}
	if m == nil {
		return GlooResult{}, fmt.Errorf("ring: no result line")
	}
	b, _ := strconv.ParseInt(string(m[1]), 10, 64)
	ms, _ := strconv.ParseFloat(string(m[2]), 64)
	r := GlooResult{Workers: n, Bytes: b, MedianTime: ms / 1e3}
	r.BusBW = float64(b) / r.MedianTime * 2 * float64(n-1) / float64(n)
	return r, nil
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}
