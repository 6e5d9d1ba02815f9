// Command arbench measures ring all-reduce between local processes over
// loopback gRPC and over the same-host shared-memory path, next to gloo
// (PyTorch) and raw TCP, and prints a table (make bench-allreduce).
//
// Definitions as in nccl-tests: algbw = bytes / time, busbw = algbw *
// 2(n-1)/n. -rounds R repeats every path and gloo R times, interleaved;
// the table shows medians over the rounds, each ratio to gloo is taken
// within a round and reported as median (min-max), with a warning when the
// rounds fall on both sides of the goal. Raw TCP is one large write between two of the same processes,
// timed until the receiver has read every byte: the loopback's ceiling.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
)

const resnet18Params = 11_173_962

var (
	child    = flag.Bool("child", false, "internal: run one rank")
	rank     = flag.Int("rank", 0, "internal: rank of the child")
	world    = flag.Int("world", 2, "internal: world of the child")
	mode     = flag.String("mode", "tcp", "internal: tcp or shm")
	worlds   = flag.String("worlds", "2,4", "ring sizes")
	modes    = flag.String("modes", "tcp,shm", "paths to measure: tcp (gRPC over loopback), shm (same-host shared memory)")
	sizes    = flag.String("sizes", fmt.Sprintf("16384,262144,2097152,%d", resnet18Params), "vector lengths (float32 elements)")
	iters    = flag.Int("iters", 10, "timed iterations per size (median reported)")
	chunk    = flag.Int("chunk", allreduce.DefaultChunkBytes, "ring chunk bytes")
	gloo     = flag.String("gloo", "../shared/reference/torch_gloo_allreduce.py", "gloo reference script (empty: skip)")
	python   = flag.String("python", "/usr/bin/python3", "python with torch")
	rawIters = flag.Int("raw-iters", 5, "raw TCP repetitions (best reported)")
	cpuProf  = flag.String("cpuprofile", "", "write rank 0's CPU profile here")
	shmSlots = flag.Int("shmslots", 0, "GRPCConfig.ShmSlots of the same-host path (0: default)")
	sndbuf   = flag.Int("sndbuf", 0, "GRPCConfig.TCPSendBuffer of the frame connections (0: default, -1: kernel autotuning)")
	rounds   = flag.Int("rounds", 3, "interleaved rounds of every path and gloo (medians and per-round ratios reported)")
)

// Goals of make bench-allreduce (issue #4), for the stability warnings.
var ratioGoals = map[string]float64{"grpc-tcp": 1.2, "grpc-shm": 4}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *child {
		if *cpuProf != "" && *rank == 0 {
			f, err := os.Create(*cpuProf)
			if err != nil {
				log.Fatal(err)
			}
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
		if err := runChild(); err != nil {
			log.Fatalf("rank %d: %v", *rank, err)
		}
		return
	}
	if err := runParent(); err != nil {
		log.Fatal(err)
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			log.Fatalf("bad list %q: %v", s, err)
		}
		out = append(out, v)
	}
	return out
}

// ---- child ----

func runChild() error {
	g, err := allreduce.NewGRPCTransport(allreduce.GRPCConfig{
		HostID: "bench", DisableSharedMemory: *mode != "shm", MaxChunkBytes: max(*chunk, 1<<20), TCPSendBuffer: *sndbuf, ShmSlots: *shmSlots})
	if err != nil {
		return err
	}
	defer g.Close()
	addr, err := g.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer raw.Close()
	fmt.Printf("ADDR %s %s\n", addr, raw.Addr())
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(line)
	peers, raws := f[:*world], f[*world:]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := allreduce.DefaultConfig("bench", 1, *rank, *world)
	cfg.ChunkBytes = *chunk
	cfg.Timeout = time.Minute
	r, err := allreduce.Open(ctx, g, cfg, peers)
	if err != nil {
		return err
	}
	defer r.Close()
	step := uint64(0)
	barrier := make([]float32, 1)
	op := func(v []float32) error {
		step++
		return r.AllReduce(context.Background(), allreduce.Tag{Step: step}, v, allreduce.Sum)
	}
	for _, n := range ints(*sizes) {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		for i := 0; i < 2; i++ { // warm-up
			if err := op(v); err != nil {
				return err
			}
		}
		var ts []float64
		c0 := cpuSeconds()
		for i := 0; i < *iters; i++ {
			if err := op(barrier); err != nil {
				return err
			}
			t0 := time.Now()
			if err := op(v); err != nil {
				return err
			}
			ts = append(ts, time.Since(t0).Seconds())
		}
		fmt.Printf("CPU %d %g\n", 4*n, (cpuSeconds()-c0)/float64(*iters))
		sort.Float64s(ts)
		if *rank == 0 {
			fmt.Printf("RESULT %d %g\n", 4*n, ts[len(ts)/2])
		}
	}
	if *world == 2 && *mode == "tcp" {
		return rawTCP(raw, raws)
	}
	return nil
}

// cpuSeconds is the CPU time (user + system) this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// rawTCP: rank 0 writes the ResNet-18 gradient bytes to rank 1 in one
// Write; rank 1 reads them all and answers one byte.
func rawTCP(lis net.Listener, raws []string) error {
	size := 4 * resnet18Params
	buf := make([]byte, size)
	if *rank == 1 {
		cpu := 1e9 // least CPU of one transfer at this end
		for i := 0; i < *rawIters; i++ {
			c, err := lis.Accept()
			if err != nil {
				return err
			}
			c0 := cpuSeconds()
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			cpu = min(cpu, cpuSeconds()-c0)
			if _, err := c.Write([]byte{1}); err != nil {
				return err
			}
			c.Close()
		}
		fmt.Printf("RAWCPU %d %g\n", size, cpu)
		return rawDuplex(lis, nil, buf)
	}
	best, cpu := 1e9, 1e9
	for i := 0; i < *rawIters; i++ {
		c, err := net.Dial("tcp", raws[1])
		if err != nil {
			return err
		}
		t0, c0 := time.Now(), cpuSeconds()
		if _, err := c.Write(buf); err != nil {
			return err
		}
		cpu = min(cpu, cpuSeconds()-c0)
		var ack [1]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return err
		}
		best = min(best, time.Since(t0).Seconds())
		c.Close()
	}
	fmt.Printf("RAW %d %g\n", size, best)
	fmt.Printf("RAWCPU %d %g\n", size, cpu)
	return rawDuplex(nil, raws, buf)
}

// rawDuplex: ranks 0 and 1 each write buf to the other over one connection
// and read the other's at the same time (the traffic of a 2-rank ring);
// rank 0 prints the best time of the whole exchange.
func rawDuplex(lis net.Listener, raws []string, buf []byte) error {
	in := make([]byte, len(buf))
	best := 1e9
	for i := 0; i < *rawIters; i++ {
		var c net.Conn
		var err error
		if lis != nil {
			c, err = lis.Accept()
		} else {
			c, err = net.Dial("tcp", raws[1])
		}
		if err != nil {
			return err
		}
		t0 := time.Now()
		werr := make(chan error, 1)
		go func() { _, err := c.Write(buf); werr <- err }()
		_, rerr := io.ReadFull(c, in)
		if err := errors.Join(<-werr, rerr); err != nil {
			return err
		}
		best = min(best, time.Since(t0).Seconds())
		c.Close()
	}
	if lis == nil {
		fmt.Printf("RAWDUPLEX %d %g\n", len(buf), best)
	}
	return nil
}

// ---- parent ----

type result struct {
	path  string
	n     int
	bytes int
	secs  float64
	cpu   float64 // CPU seconds per iteration, all ranks together (0: not measured)
	round int
}

func (r result) algbw() float64 { return float64(r.bytes) / r.secs / 1e9 }
func (r result) busbw() float64 { return r.algbw() * 2 * float64(r.n-1) / float64(r.n) }

func runParent() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// Every round runs every path and gloo back to back, so that a slow
	// window of the machine hits both sides of a ratio; the table shows
	// medians over the rounds and the ratios are taken within a round.
	var all []result
	var raws []rawResult
	for round := 1; round <= max(*rounds, 1); round++ {
		fmt.Fprintf(os.Stderr, "round %d of %d\n", round, max(*rounds, 1))
		for _, n := range ints(*worlds) {
			for _, m := range strings.Split(*modes, ",") {
				rs, raw, err := runRing(exe, n, m)
				if err != nil {
					return fmt.Errorf("n=%d %s: %w", n, m, err)
				}
				for i := range rs {
					rs[i].round = round
				}
				all = append(all, rs...)
				if raw.gbs > 0 {
					raws = append(raws, raw)
				}
			}
			if *gloo != "" {
				g, err := runGloo(n)
				if err != nil {
					log.Printf("gloo n=%d: %v (skipped)", n, err)
				} else {
					g.round = round
					all = append(all, g)
				}
			}
		}
	}
	results := medians(all)
	var rawGBs, rawCPU, rawDuplexGBs float64
	if len(raws) > 0 {
		var g, c, d []float64
		for _, r := range raws {
			g, c, d = append(g, r.gbs), append(c, r.cpu), append(d, r.duplex)
		}
		rawGBs, rawCPU, rawDuplexGBs = median(g), median(c), median(d)
	}
	fmt.Printf("\n%-10s %3s %-9s %10s %9s %9s %9s %9s\n", "bytes", "n", "path", "time", "algbw", "busbw", "vs gloo", "cpu/iter")
	find := func(path string, n, bytes int) (result, bool) {
		for _, r := range results {
			if r.path == path && r.n == n && r.bytes == bytes {
				return r, true
			}
		}
		return result{}, false
	}
	sort.SliceStable(results, func(i, j int) bool {
		if results[i].n != results[j].n {
			return results[i].n < results[j].n
		}
		return results[i].bytes < results[j].bytes
	})
	for _, r := range results {
		vs := ""
		if g, ok := find("gloo", r.n, 4*resnet18Params); ok && r.bytes == g.bytes && r.path != "gloo" {
			vs = fmt.Sprintf("%.2fx", r.busbw()/g.busbw())
		}
		cpu := ""
		if r.cpu > 0 {
			cpu = fmt.Sprintf("%.1fms", 1e3*r.cpu)
		}
		fmt.Printf("%-10d %3d %-9s %8.2fms %6.2fGB/s %6.2fGB/s %9s %9s\n", r.bytes, r.n, r.path, 1e3*r.secs, r.algbw(), r.busbw(), vs, cpu)
	}
	if rawGBs > 0 {
		// CPU busy while the raw transfer ran: how many of the cores the
		// loopback's ceiling already needs.
		fmt.Printf("raw TCP (one %d-byte write, loopback): %.2f GB/s, %.1fms CPU (both ends, %.1f cores busy)\n",
			4*resnet18Params, rawGBs, 1e3*rawCPU, rawCPU*rawGBs*1e9/float64(4*resnet18Params))
		// The traffic of a 2-rank ring: both ends write at once.
		fmt.Printf("raw TCP both ways at once (the 2-rank ring's traffic): %.2f GB/s per direction\n", rawDuplexGBs)
	}
	// Ratios to gloo within each round; their median is the verdict.
	ratio := func(path string, n int) string {
		var v []float64
		for round := 1; round <= max(*rounds, 1); round++ {
			var a, g *result
			for i := range all {
				r := &all[i]
				if r.round == round && r.n == n && r.bytes == 4*resnet18Params {
					switch r.path {
					case path:
						a = r
					case "gloo":
						g = r
					}
				}
			}
			if a != nil && g != nil {
				v = append(v, a.busbw()/g.busbw())
			}
		}
		if len(v) == 0 {
			return "n/a"
		}
		lo, hi := v[0], v[0]
		for _, x := range v {
			lo, hi = min(lo, x), max(hi, x)
		}
		med := median(v)
		fmt.Printf("%s n=%d vs gloo: median %.2fx (min %.2fx, max %.2fx over %d interleaved rounds)\n", path, n, med, lo, hi, len(v))
		if goal, ok := ratioGoals[path]; ok && lo < goal && hi >= goal {
			fmt.Printf("warning: %s n=%d: the rounds straddle the %.1fx goal (%.2fx-%.2fx); the verdict may change between runs\n", path, n, goal, lo, hi)
		}
		return fmt.Sprintf("%.2f", med)
	}
	r2, r4, s2, s4 := ratio("grpc-tcp", 2), ratio("grpc-tcp", 4), ratio("grpc-shm", 2), ratio("grpc-shm", 4)
	pct := "n/a"
	if rawGBs > 0 {
		worst := -1.0
		for _, n := range ints(*worlds) {
			if a, ok := find("grpc-tcp", n, 4*resnet18Params); ok {
				if p := 100 * a.busbw() / rawGBs; worst < 0 || p < worst {
					worst = p
				}
			}
		}
		if worst >= 0 {
			pct = fmt.Sprintf("%.0f", worst)
		}
	}
	fmt.Printf("allreduce: busbw vs gloo n=2 %sx n=4 %sx, tcp-path vs raw tcp %s%%, same-host path vs gloo n=2 %sx n=4 %sx\n",
		r2, r4, pct, s2, s4)
	return nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medians folds the rounds: one result per (path, n, bytes) with the
// median time and CPU.
func medians(all []result) []result {
	type key struct {
		path     string
		n, bytes int
	}
	var order []key
	secs, cpu := map[key][]float64{}, map[key][]float64{}
	for _, r := range all {
		k := key{r.path, r.n, r.bytes}
		if _, ok := secs[k]; !ok {
			order = append(order, k)
		}
		secs[k] = append(secs[k], r.secs)
		cpu[k] = append(cpu[k], r.cpu)
	}
	out := make([]result, 0, len(order))
	for _, k := range order {
		out = append(out, result{path: k.path, n: k.n, bytes: k.bytes, secs: median(secs[k]), cpu: median(cpu[k])})
	}
	return out
}

// rawResult is the raw TCP measurement: GB/s of the fastest one-way
// transfer, the CPU seconds one transfer took at both ends together, and
// GB/s per direction when both ends write at once.
type rawResult struct{ gbs, cpu, duplex float64 }

// runRing starts n child processes in mode m and collects rank 0's results.
func runRing(exe string, n int, m string) ([]result, rawResult, error) {
	path := "grpc-" + m
	type proc struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Scanner
	}
	procs := make([]proc, n)
	defer func() {
		for _, p := range procs {
			if p.cmd != nil && p.cmd.Process != nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	var addrs, raws []string
	for i := range procs {
		cmd := exec.Command(exe, "-child", "-rank", strconv.Itoa(i), "-world", strconv.Itoa(n), "-mode", m,
			"-sizes", *sizes, "-iters", strconv.Itoa(*iters), "-chunk", strconv.Itoa(*chunk), "-raw-iters", strconv.Itoa(*rawIters), "-cpuprofile", *cpuProf, "-sndbuf", strconv.Itoa(*sndbuf), "-shmslots", strconv.Itoa(*shmSlots))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, rawResult{}, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, rawResult{}, err
		}
		if err := cmd.Start(); err != nil {
			return nil, rawResult{}, err
		}
		procs[i] = proc{cmd, in, bufio.NewScanner(out)}
		if !procs[i].out.Scan() {
			return nil, rawResult{}, fmt.Errorf("rank %d printed no address", i)
		}
		f := strings.Fields(procs[i].out.Text())
		if len(f) != 3 || f[0] != "ADDR" {
			return nil, rawResult{}, fmt.Errorf("rank %d: unexpected %q", i, procs[i].out.Text())
		}
		addrs, raws = append(addrs, f[1]), append(raws, f[2])
	}
	line := strings.Join(append(append([]string{}, addrs...), raws...), " ") + "\n"
	for _, p := range procs {
		if _, err := io.WriteString(p.in, line); err != nil {
			return nil, rawResult{}, err
		}
	}
	var (
		rs           []result
		raw          float64
		rawCPU       float64             // CPU seconds of one raw transfer, both ends
		rawDuplexGBs float64             // GB/s per direction when both ends write at once
		mu           sync.Mutex          // guards cpu and rawCPU
		cpu          = map[int]float64{} // bytes -> CPU seconds per iteration, summed over ranks
		wg           sync.WaitGroup
	)
	for i := range procs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for procs[i].out.Scan() {
				f := strings.Fields(procs[i].out.Text())
				if len(f) != 3 {
					continue
				}
				b, _ := strconv.Atoi(f[1])
				s, _ := strconv.ParseFloat(f[2], 64)
				switch {
				case f[0] == "CPU":
					mu.Lock()
					cpu[b] += s
					mu.Unlock()
				case f[0] == "RESULT" && i == 0:
					rs = append(rs, result{path: path, n: n, bytes: b, secs: s})
				case f[0] == "RAW" && i == 0:
					raw = float64(b) / s / 1e9
				case f[0] == "RAWDUPLEX" && i == 0:
					rawDuplexGBs = float64(b) / s / 1e9
				case f[0] == "RAWCPU":
					mu.Lock()
					rawCPU += s
					mu.Unlock()
				}
			}
		}(i)
	}
	wg.Wait()
	for k := range rs {
		rs[k].cpu = cpu[rs[k].bytes]
		fmt.Fprintf(os.Stderr, "%s n=%d bytes=%d median %.2fms, cpu %.2fms/iter (all ranks)\n", path, n, rs[k].bytes, 1e3*rs[k].secs, 1e3*rs[k].cpu)
	}
	for i, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			return nil, rawResult{}, fmt.Errorf("rank %d: %w", i, err)
		}
		procs[i].cmd = nil
	}
	return rs, rawResult{gbs: raw, cpu: rawCPU, duplex: rawDuplexGBs}, nil
}

var glooLine = regexp.MustCompile(`bytes=(\d+) median_time=([0-9.]+)ms`)

func runGloo(n int) (result, error) {
	out, err := exec.Command(*python, *gloo, strconv.Itoa(n), strconv.Itoa(resnet18Params), strconv.Itoa(*iters)).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("%w: %s", err, out)
	}
	m := glooLine.FindSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("unexpected gloo output %q", out)
	}
	b, _ := strconv.Atoi(string(m[1]))
	ms, _ := strconv.ParseFloat(string(m[2]), 64)
	fmt.Fprintf(os.Stderr, "%s", out)
	return result{path: "gloo", n: n, bytes: b, secs: ms / 1e3}, nil
}
