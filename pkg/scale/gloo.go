package scale

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// GlooConfig configures the gloo peer: one process per rank, rank i on
// emulated host i*H/n (as the workers), all-reducing Bytes of fp32.
type GlooConfig struct {
	Python string // python with torch (Debian's: /usr/bin/python3)
	Script string // scripts/bench/gloo_rank.py
	Hosts  *Hosts
	Bytes  int64
	Iters  int
	// Timeout bounds one run (default 3 minutes).
	Timeout time.Duration
}

// GlooResult is one gloo run.
type GlooResult struct {
	Workers     int     `json:"workers"`
	Bytes       int64   `json:"bytes"`
	MedianTime  float64 `json:"median_s"`
	BusBW       float64 `json:"busbw_bytes_per_s"`
	Interleaved int     `json:"round"` // the round of the interleaved comparison
}

var glooOut = regexp.MustCompile(`bytes=(\d+) median_time=([0-9.]+)ms`)

// RunGloo runs gloo's all-reduce on n ranks over the emulated links.
func RunGloo(ctx context.Context, cfg GlooConfig, n int) (GlooResult, error) {
	if cfg.Hosts == nil || n < 2 {
		return GlooResult{}, fmt.Errorf("%w: gloo peer needs emulated hosts and n >= 2", ErrInvalid)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	port := 29600 + time.Now().Nanosecond()%300
	master := fmt.Sprintf("%s:%d", cfg.Hosts.IPs[0], port)
	numel := cfg.Bytes / 4
	type out struct {
		b   []byte
		err error
	}
	res := make(chan out, n)
	var cmds []*exec.Cmd
	for r := 0; r < n; r++ {
		k := r * len(cfg.Hosts.Names) / n
		cmd := cfg.Hosts.Command(ctx, k, cfg.Python, cfg.Script, strconv.Itoa(r), strconv.Itoa(n), master,
			strconv.FormatInt(numel, 10), strconv.Itoa(cfg.Iters))
		cmd.Env = append(cmd.Environ(), "GLOO_SOCKET_IFNAME=eth0", "OMP_NUM_THREADS=1")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			cancel()
			for _, c := range cmds {
				_ = c.Wait()
			}
			return GlooResult{}, fmt.Errorf("gloo rank %d: %w", r, err)
		}
		cmds = append(cmds, cmd)
		go func() { err := cmd.Wait(); res <- out{buf.Bytes(), err} }()
	}
	var line []byte
	var first error
	for range cmds {
		o := <-res
		if o.err != nil && first == nil {
			first = fmt.Errorf("gloo: %w: %s", o.err, bytes.TrimSpace(o.b))
			cancel() // the others would wait for the dead rank
		}
		if m := glooOut.FindSubmatch(o.b); m != nil {
			line = o.b
		}
	}
	if first != nil {
		return GlooResult{}, first
	}
	m := glooOut.FindSubmatch(line)
	if m == nil {
		return GlooResult{}, fmt.Errorf("gloo: no result line in its output")
	}
	b, _ := strconv.ParseInt(string(m[1]), 10, 64)
	ms, _ := strconv.ParseFloat(string(m[2]), 64)
	r := GlooResult{Workers: n, Bytes: b, MedianTime: ms / 1e3}
	r.BusBW = float64(b) / r.MedianTime * 2 * float64(n-1) / float64(n)
	return r, nil
}
