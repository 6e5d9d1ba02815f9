// Command cpustep times ResNet-18 training steps on ringtrain's CPU backend
// exactly as the PyTorch peer (torch_cpu_resnet.py) does: random 3x32x32
// inputs and labels of 10 classes, cross-entropy, SGD (lr 0.1, momentum 0.9,
// weight decay 5e-4), two untimed steps, then the median of the timed ones.
// It prints one line that scripts/bench/bench-cpu.sh parses:
//
//	ringtrain stem=imagenet batch=128 threads=2 median_step=...ms images/s=... (min ..., max ..., N steps) peak_rss_mib=...
//
// With -ops it also prints, on stderr, the wall time per step of every
// compute op by op name and shape (compare -threads 1 and 2 to see which
// ops scale); the timing itself adds a little to the step.
//
// Usage: cpustep [-stem imagenet|cifar] [-batch 128] [-steps 8] [-threads 2] [-ops] [-cpuprofile FILE] [-memprofile FILE]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

func main() {
	stem := flag.String("stem", "imagenet", "imagenet (the tutorial's 7x7/2 + max-pool) or cifar (3x3/1)")
	batch := flag.Int("batch", 128, "images per step")
	steps := flag.Int("steps", 8, "timed steps (after two untimed ones)")
	threads := flag.Int("threads", 2, "CPU backend goroutines")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the timed steps to this file")
	memprofile := flag.String("memprofile", "", "write a heap profile after the timed steps to this file")
	ops := flag.Bool("ops", false, "print the wall time per step of each op (by shape) on stderr")
	flag.Parse()
	if err := run(*stem, *batch, *steps, *threads, *profile, *memprofile, *ops); err != nil {
		fmt.Fprintln(os.Stderr, "cpustep:", err)
		os.Exit(1)
	}
}

func run(stem string, batch, steps, threads int, profile, memprofile string, ops bool) error {
	if batch < 1 || steps < 1 || threads < 1 {
		return fmt.Errorf("bad sizes: batch %d steps %d threads %d", batch, steps, threads)
	}
	var b nn.Backend = nn.NewCPU(threads)
	var timer *opTimer
	if ops {
		timer = newOpTimer(b.(*nn.CPU))
		b = timer
	}
	m, err := nn.NewResNet(b, nn.ResNetConfig{Depth: 18, Stem: stem, Classes: 10, Seed: 1})
	if err != nil {
		return err
	}
	m.SetTrain(true)
	opt, err := nn.NewSGD(b, m.Params(), nn.SGDConfig{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewSource(1))
	xs := make([]float32, batch*3*32*32)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	labels := make([]int32, batch)
	for i := range labels {
		labels[i] = int32(rng.Intn(10))
	}
	x := b.New(batch, 3, 32, 32)
	b.FromHost(x, xs)
	ce := &nn.CrossEntropy{}
	step := func() error {
		logits, err := m.Forward(x)
		if err != nil {
			return err
		}
		_, dl, err := ce.Compute(b, logits, labels)
		if err != nil {
			return err
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			return err
		}
		return opt.Step()
	}
	for i := 0; i < 2; i++ {
		if err := step(); err != nil {
			return fmt.Errorf("warm-up step %d: %w", i, err)
		}
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if timer != nil {
		timer.on = true
	}
	ts := make([]float64, steps)
	for i := range ts {
		t0 := time.Now()
		if err := step(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		ts[i] = time.Since(t0).Seconds()
	}
	if memprofile != "" {
		f, err := os.Create(memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC() // the profile reports the heap as of the last GC
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
		runtime.KeepAlive(m) // the model's memory is what the profile is for
		runtime.KeepAlive(opt)
	}
	sort.Float64s(ts)
	dt := ts[len(ts)/2]
	if timer != nil {
		timer.report(os.Stderr, steps, time.Duration(dt*float64(time.Second)))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(os.Stderr, "heap: in use %.0f MiB, from OS %.0f MiB, allocated in total %.0f MiB, %d GCs\n",
		float64(ms.HeapInuse)/(1<<20), float64(ms.HeapSys)/(1<<20), float64(ms.TotalAlloc)/(1<<20), ms.NumGC)
	fmt.Printf("ringtrain stem=%s batch=%d threads=%d median_step=%.1fms images/s=%.1f (min step %.1fms, max %.1fms, %d steps) peak_rss_mib=%.0f\n",
		stem, batch, threads, dt*1000, float64(batch)/dt, ts[0]*1000, ts[len(ts)-1]*1000, steps, peakRSSMiB())
	return nil
}

// peakRSSMiB is VmHWM from /proc/self/status (0 where there is none).
func peakRSSMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
