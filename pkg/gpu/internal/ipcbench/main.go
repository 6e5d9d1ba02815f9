// Command ipcbench measures the same-host GPU ring: worker processes on
// one machine all-reduce a vector that lives in GPU memory, once through
// host memory (what a GPU worker did before: device-to-host copy, the host
// ring through shared memory, host-to-device copy) and once device to
// device (the device ring: CUDA IPC, kernels reading the neighbour's
// memory), interleaved over rounds; and checks that both leave the same
// bits. Run by scripts/gpu-ipc.sh (make gpu-ipc) on a GPU machine.
//
// Definitions as in nccl-tests and make bench-allreduce: algbw = bytes /
// time, busbw = algbw * 2(n-1)/n; the table shows medians over rounds.
// The last line is the summary:
//
//	gpu-ipc: device ring busbw D GB/s, host path H GB/s, ratio R x (n=N, S MB, DEVICE); bit-identical yes|NO
//
// -device file runs without a GPU: "device memory" is then shared files
// mapped by each process (fileDevice), so the two-process handshake and
// the device ring's order are exercised on the CPU (a dry run; its
// numbers mean nothing).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
)

const resnet18Params = 11_173_962

var (
	child   = flag.Bool("child", false, "internal: run one rank")
	rank    = flag.Int("rank", 0, "internal: rank of the child")
	world   = flag.Int("world", 2, "worker processes")
	device  = flag.String("device", "cuda", "cuda | file (CPU dry run: shared files as device memory)")
	gpuOrd  = flag.Int("gpu", 0, "CUDA device ordinal of rank 0")
	gpus    = flag.Int("gpus", 1, "rank r uses GPU (gpu + r) % gpus: 1 puts every rank on one GPU, the default")
	libDir  = flag.String("cuda-lib-dir", "", "directory searched first for the CUDA libraries")
	sizes   = flag.String("sizes", fmt.Sprintf("262144,2097152,%d", resnet18Params), "vector lengths (float32 elements); the last is the summary's")
	iters   = flag.Int("iters", 10, "timed iterations per size, path and round (median reported)")
	rounds  = flag.Int("rounds", 3, "interleaved rounds (the order of the paths alternates)")
	timeout = flag.Duration("timeout", time.Minute, "bound of every collective")
	noPeer  = flag.Bool("no-peer", false, "-device file: each rank is its own \"GPU\" without peer access to the others' (the device ring copies through the device)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *child {
		if err := runChild(); err != nil {
			log.Fatalf("rank %d: %v", *rank, err)
		}
		return
	}
	ok, err := runParent()
	if err != nil {
		log.Fatal(err)
	}
	if !ok {
		os.Exit(1)
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			log.Fatalf("bad list %q", s)
		}
		out = append(out, v)
	}
	return out
}

// benchDev is a Device with the vectors and copies the bench needs.
type benchDev interface {
	allreduce.Device
	newVec(n int) (uint64, error)
	freeVec(p uint64) error
	toHost(dst []float32, p uint64)
	fromHost(p uint64, src []float32)
	hostBuf(n int) []float32
	sync() error
	describe() string
	close()
}

// ---- child ----

func runChild() error {
	dev, err := openDevice()
	if err != nil {
		return err
	}
	defer dev.close()
	g, err := allreduce.NewGRPCTransport(allreduce.GRPCConfig{HostID: "ipcbench", MaxChunkBytes: allreduce.DefaultChunkBytes})
	if err != nil {
		return err
	}
	defer g.Close()
	addr, err := g.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("ADDR %s\n", addr)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return err
	}
	peers := strings.Fields(line)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := allreduce.DefaultConfig("ipcbench", 1, *rank, *world)
	cfg.Timeout = *timeout
	r, err := allreduce.Open(ctx, g, cfg, peers)
	if err != nil {
		return err
	}
	defer r.Close()
	if *rank == 0 {
		right, left := r.Links()
		fmt.Printf("INFO %s; links right %s, left %s\n", dev.describe(), right, left)
	}
	step := uint64(0)
	tag := func() allreduce.Tag { step++; return allreduce.Tag{Step: step} }
	barrier := []float32{0}
	for _, n := range ints(*sizes) {
		vec, err := dev.newVec(n)
		if err != nil {
			return err
		}
		host := dev.hostBuf(n)
		link, err := r.AttachDevice(context.Background(), dev, []allreduce.DeviceRegion{{Ptr: vec, Len: n}})
		if errors.Is(err, allreduce.ErrNoDeviceRing) {
			fmt.Printf("REFUSED %d %v\n", 4*n, err)
			return nil
		}
		if err != nil {
			return err
		}
		if *rank == 0 {
			fmt.Printf("INFO %d bytes: device ring attached (%s)\n", 4*n, link)
		}
		paths := map[string]func(red allreduce.Reduction) error{
			// What a GPU worker did before the device ring.
			"host": func(red allreduce.Reduction) error {
				dev.toHost(host, vec)
				if err := r.AllReduce(context.Background(), tag(), host, red); err != nil {
					return err
				}
				dev.fromHost(vec, host)
				return dev.sync()
			},
			"device": func(red allreduce.Reduction) error {
				return r.AllReduceDevice(context.Background(), tag(), 0, 0, n, red)
			},
		}
		order := []string{"host", "device"}
		for round := 1; round <= *rounds; round++ {
			for _, p := range order {
				for i := 0; i < 2; i++ { // warm-up
					if err := paths[p](allreduce.Sum); err != nil {
						return fmt.Errorf("%s warm-up: %w", p, err)
					}
				}
				var ts []float64
				for i := 0; i < *iters; i++ {
					if err := r.AllReduce(context.Background(), tag(), barrier, allreduce.Sum); err != nil {
						return err
					}
					t0 := time.Now()
					if err := paths[p](allreduce.Sum); err != nil {
						return fmt.Errorf("%s: %w", p, err)
					}
					ts = append(ts, time.Since(t0).Seconds())
				}
				sort.Float64s(ts)
				if *rank == 0 {
					fmt.Printf("RESULT %s %d %d %g\n", p, 4*n, round, ts[len(ts)/2])
				}
			}
			order[0], order[1] = order[1], order[0]
		}
		// The same inputs through both paths: the same bits.
		for _, red := range []allreduce.Reduction{allreduce.Sum, allreduce.Mean} {
			in := inputs(uint64(*rank)+1, n)
			var sums [2]uint64
			var first []float32
			same := true
			for k, p := range []string{"host", "device"} {
				copy(host, in)
				dev.fromHost(vec, host)
				if err := paths[p](red); err != nil {
					return err
				}
				out := make([]float32, n)
				dev.toHost(out, vec)
				if err := dev.sync(); err != nil {
					return err
				}
				sums[k] = hash(out)
				if k == 0 {
					first = out
					continue
				}
				for i := range out {
					if math.Float32bits(out[i]) != math.Float32bits(first[i]) {
						fmt.Printf("DIFF %d red %d element %d: host %v device %v\n", 4*n, red, i, first[i], out[i])
						same = false
						break
					}
				}
			}
			fmt.Printf("IDENT %d %d %v %x %x\n", 4*n, red, same, sums[0], sums[1])
		}
		if err := dev.freeVec(vec); err != nil {
			return err
		}
	}
	return nil
}

// inputs returns n float32s of mixed magnitude (sums round), seeded.
func inputs(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
	}
	return v
}

func hash(v []float32) uint64 {
	h := fnv.New64a()
	h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v)))
	return h.Sum64()
}

// ---- parent ----

type result struct {
	path  string
	bytes int
	round int
	secs  float64
}

func runParent() (bool, error) {
	exe, err := os.Executable()
	if err != nil {
		return false, err
	}
	n := *world
	if n < 2 {
		return false, fmt.Errorf("-world %d: want at least 2", n)
	}
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bufio.Reader, n)
	ins := make([]*os.File, n)
	var addrs []string
	for i := 0; i < n; i++ {
		args := []string{"-child", "-rank", strconv.Itoa(i)}
		flag.Visit(func(f *flag.Flag) {
			if f.Name != "child" && f.Name != "rank" {
				args = append(args, "-"+f.Name+"="+f.Value.String())
			}
		})
		c := exec.Command(exe, args...)
		c.Stderr = os.Stderr
		pr, pw, err := os.Pipe()
		if err != nil {
			return false, err
		}
		c.Stdin = pr
		out, err := c.StdoutPipe()
		if err != nil {
			return false, err
		}
		if err := c.Start(); err != nil {
			return false, err
		}
		pr.Close()
		cmds[i], ins[i], outs[i] = c, pw, bufio.NewReader(out)
		line, err := outs[i].ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ADDR ") {
			return false, fmt.Errorf("rank %d did not start: %q %v", i, line, err)
		}
		addrs = append(addrs, strings.TrimSpace(strings.TrimPrefix(line, "ADDR ")))
	}
	for _, w := range ins {
		fmt.Fprintln(w, strings.Join(addrs, " "))
		w.Close()
	}
	var (
		mu       sync.Mutex // guards the fields below
		results  []result
		identOK  = true
		identAny bool
		refused  string
		info     []string
		hashes   = map[string]map[string]bool{} // "bytes red" -> hashes seen on any rank
	)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				line, err := outs[i].ReadString('\n')
				if line != "" {
					f := strings.Fields(line)
					mu.Lock()
					switch {
					case len(f) == 5 && f[0] == "RESULT":
						b, _ := strconv.Atoi(f[2])
						rd, _ := strconv.Atoi(f[3])
						s, _ := strconv.ParseFloat(f[4], 64)
						results = append(results, result{f[1], b, rd, s})
					case len(f) == 6 && f[0] == "IDENT":
						identAny = true
						identOK = identOK && f[3] == "true"
						k := f[1] + " " + f[2]
						if hashes[k] == nil {
							hashes[k] = map[string]bool{}
						}
						hashes[k][f[4]], hashes[k][f[5]] = true, true
					case len(f) > 0 && f[0] == "REFUSED":
						refused = strings.Join(f[2:], " ")
					case len(f) > 0 && f[0] == "INFO":
						info = append(info, strings.Join(f[1:], " "))
					}
					mu.Unlock()
					fmt.Printf("[rank %d] %s", i, line)
				}
				if err != nil {
					return
				}
			}
		}(i)
	}
	wg.Wait()
	var errs []error
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("rank %d: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return false, err
	}
	for k, hs := range hashes {
		if len(hs) != 1 { // every rank, both paths: one result
			identOK = false
			fmt.Printf("bytes/reduction %s: %d different results across ranks and paths\n", k, len(hs))
		}
	}
	if refused != "" {
		fmt.Printf("gpu-ipc: device ring refused: %s\n", refused)
		return false, nil
	}
	// Medians over rounds.
	med := map[string]float64{}
	byKey := map[string][]float64{}
	var bytesList []int
	seen := map[int]bool{}
	for _, r := range results {
		k := fmt.Sprintf("%s %d", r.path, r.bytes)
		byKey[k] = append(byKey[k], r.secs)
		if !seen[r.bytes] {
			seen[r.bytes] = true
			bytesList = append(bytesList, r.bytes)
		}
	}
	for k, v := range byKey {
		sort.Float64s(v)
		med[k] = v[len(v)/2]
	}
	busbw := func(bytes int, secs float64) float64 {
		return float64(bytes) / secs / 1e9 * 2 * float64(n-1) / float64(n)
	}
	fmt.Printf("\n%-10s %3s %-7s %10s %9s %9s %7s\n", "bytes", "n", "path", "time", "algbw", "busbw", "ratio")
	for _, b := range bytesList {
		h, d := med[fmt.Sprintf("host %d", b)], med[fmt.Sprintf("device %d", b)]
		for _, p := range []struct {
			name string
			s    float64
		}{{"host", h}, {"device", d}} {
			ratio := ""
			if p.name == "device" && d > 0 {
				ratio = fmt.Sprintf("%.1fx", h/d)
			}
			fmt.Printf("%-10d %3d %-7s %8.3fms %6.2fGB/s %6.2fGB/s %7s\n", b, n, p.name, p.s*1e3, float64(b)/p.s/1e9, busbw(b, p.s), ratio)
		}
	}
	if len(bytesList) == 0 {
		return false, fmt.Errorf("no results")
	}
	last := bytesList[len(bytesList)-1]
	h, d := med[fmt.Sprintf("host %d", last)], med[fmt.Sprintf("device %d", last)]
	what := strings.Join(info, "; ")
	if i := strings.Index(what, ";"); i > 0 {
		what = what[:i]
	}
	ident := "yes"
	if !identOK || !identAny {
		ident = "NO"
	}
	fmt.Printf("gpu-ipc: device ring busbw %.1f GB/s, host path %.1f GB/s, ratio %.1f x (n=%d, %.1f MB, %s); bit-identical %s\n",
		busbw(last, d), busbw(last, h), h/d, n, float64(last)/1e6, what, ident)
	return identOK && identAny, nil
}
