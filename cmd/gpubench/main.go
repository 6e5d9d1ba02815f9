// Command gpubench times ResNet training steps (forward, loss, backward,
// SGD) on ringtrain's backends and prints images per second, for the
// device check script (scripts/gpu-check.sh) and by hand:
//
//	gpubench -device cuda -stem cifar -batch 512 -precision bf16
//
// Inputs are random CIFAR-sized images (3x32x32 by default), uploaded once;
// the loss is read back only after the timed steps, so the GPU queue never
// drains inside the timed region except where the engine itself syncs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"time"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// trainGFLOP is the training cost per image (forward + backward, 3x the
// forward multiply-adds x 2) of ResNet-18 on 32x32 inputs, per stem.
var trainGFLOP = map[string]float64{"cifar": 3.33, "imagenet": 0.22}

func main() {
	device := flag.String("device", "cuda", "cuda, cpu or auto")
	prec := flag.String("precision", "fp32", "fp32, tf32 or bf16 (cuda only)")
	stem := flag.String("stem", "cifar", "cifar or imagenet")
	depth := flag.Int("depth", 18, "ResNet depth")
	batch := flag.Int("batch", 256, "images per step")
	size := flag.Int("size", 32, "input height and width")
	warmup := flag.Int("warmup", 3, "untimed steps")
	steps := flag.Int("steps", 10, "timed steps")
	threads := flag.Int("threads", 0, "CPU backend goroutines (0: GOMAXPROCS)")
	libDir := flag.String("cuda-lib-dir", "", "directory searched first for the CUDA libraries")
	conv := flag.String("conv", "auto", "convolutions: auto (cuDNN when found), cudnn or im2col")
	profile := flag.Int("profile", 0, "after the timed steps, run this many steps with every heavy op timed alone and print a breakdown")
	convSearch := flag.String("conv-search", "heuristic", "cuDNN algorithm choice: heuristic (reproducible) or measure (timed once per shape)")
	gemmPlanes := flag.Int("gemm-planes", 0, "bf16: convolutions whose output planes have at most this many pixels run as one cuBLAS GEMM (0: the backend's default, 16; -1: off)")
	activations := flag.String("activations", "bf16", "bf16 precision: activations kept between layers as bf16 (resident, the default) or fp32 (the slower comparison path)")
	scratch := flag.Int64("scratch", 0, "cap of one convolution chunk's scratch in bytes (0: the backend's default); a large value means one chunk per convolution")
	fused := flag.Bool("fused-optimizer", true, "update all parameters with one optimizer kernel call per step, as the job does (false: one per parameter)")
	kernels := flag.Bool("kernels", false, "cuda: print each kernel's resources (registers, local and shared memory, blocks per SM at 256 threads) as KERNEL lines")
	graph := flag.Bool("graph", false, "cuda: capture forward, loss and backward as a CUDA graph after the first warm-up step and launch it each step (the optimizer stays eager, as in the job)")
	flag.Parse()
	if *activations != "bf16" && *activations != "fp32" {
		fmt.Fprintf(os.Stderr, "gpubench: -activations %q: want bf16 or fp32\n", *activations)
		os.Exit(2)
	}
	libPath, pythonRoots := env.CUDASearch()
	o := gpu.Options{Precision: *prec, LibDir: *libDir, LibPath: libPath, PythonRoots: pythonRoots, ScratchBytes: *scratch, Conv: *conv,
		ConvSearch: *convSearch, GemmPlanes: *gemmPlanes, FP32Activations: *activations == "fp32",
		Graphs: *graph, Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	if err := run(*device, o, *stem, *depth, *batch, *size, *warmup, *steps, *threads, *profile, *fused, *kernels); err != nil {
		fmt.Fprintln(os.Stderr, "gpubench:", err)
		os.Exit(1)
	}
}

func run(device string, o gpu.Options, stem string, depth, batch, size, warmup, steps, threads, profile int, fused, kernels bool) error {
	prec, conv, scratch, graph := o.Precision, o.Conv, o.ScratchBytes, o.Graphs
	if batch < 1 || steps < 1 || warmup < 0 || size < 8 {
		return fmt.Errorf("bad sizes: batch %d steps %d warmup %d size %d", batch, steps, warmup, size)
	}
	if graph && warmup < 2 {
		return fmt.Errorf("-graph needs -warmup 2 or more (one eager step, then the capture)")
	}
	t0 := time.Now()
	b, err := gpu.SelectBackend(device, threads, o, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		return err
	}
	act, search := "fp32", "-"
	if g, ok := b.(*gpu.Backend); ok {
		defer g.Close()
		act, search = g.Activations(), g.ConvSearch()
		i := g.Info()
		fmt.Printf("# device %s (%s, %d SMs), driver %d, NVRTC %s, cuBLAS %d, cuDNN %d, kernels %s, open %.2fs\n",
			i.Name, i.Arch, i.SMs, i.DriverVersion, i.NVRTCVersion, i.CUBLASVersion, i.CUDNNVersion, i.KernelImage, time.Since(t0).Seconds())
		if kernels {
			ks, err := g.KernelResources(0)
			if err != nil {
				return err
			}
			for _, k := range ks {
				fmt.Printf("KERNEL %s\n", k)
			}
		}
		if i.CUDNNVersion == 0 {
			conv = "im2col"
		} else if conv == "auto" {
			conv = "cudnn"
		}
	} else {
		prec = "fp32"
	}
	actBytes := 4
	if act == "bf16-nhwc" {
		actBytes = 2
	}
	prof := newProfiler(b, actBytes) // off (a pass-through) until the profiled steps
	m, err := nn.NewResNet(prof, nn.ResNetConfig{Depth: depth, Stem: stem, Classes: 10, Seed: 1})
	if err != nil {
		return err
	}
	m.SetTrain(true)
	m.SetCheckFinite(false)
	opt, err := nn.NewSGD(b, m.Params(), nn.SGDConfig{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4})
	if err != nil {
		return err
	}
	if fused {
		if _, err := opt.Fuse(m.ParamsFlat(), m.GradsFlat()); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewSource(1))
	xs := make([]float32, batch*3*size*size)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	labels := make([]int32, batch)
	for i := range labels {
		labels[i] = int32(rng.Intn(10))
	}
	x := b.New(batch, 3, size, size)
	b.FromHost(x, xs)
	loss, dlogits := b.New(1), b.New(batch, 10)
	// Every step's loss is copied into losses on the device and read
	// back once at the end, so the timed loop never waits for the host.
	losses := b.New(warmup + steps + profile)
	nstep := 0
	// On a device the labels are uploaded once (as the job's device step
	// uploads each batch's before its compute), so forward, loss and
	// backward need nothing from the host and can be captured.
	dc, _ := b.(nn.DeviceCounter)
	var ydev *nn.Tensor
	if dc != nil {
		ydev = b.New(batch)
		dc.UploadLabels(ydev, labels)
	}
	compute := func() error {
		m.ZeroGrad()
		logits, err := m.Forward(x)
		if err != nil {
			return err
		}
		if dc != nil {
			dc.SoftmaxCrossEntropyLabels(loss, dlogits, nil, logits, ydev, 0, 1)
		} else {
			b.SoftmaxCrossEntropy(loss, dlogits, nil, logits, labels, 0, 1)
		}
		return m.Backward(dlogits)
	}
	var g nn.Graph
	defer func() {
		if g != nil {
			g.Close()
		}
	}()
	graphLaunches := 0
	step := func() error {
		switch gc, ok := b.(nn.GraphCapturer); {
		case !graph || prof.on:
			if err := compute(); err != nil {
				return err
			}
		case g != nil:
			if err := g.Launch(); err != nil {
				return err
			}
			graphLaunches++
		case nstep == 0:
			if err := compute(); err != nil { // shapes and memory settle
				return err
			}
		case !ok:
			return fmt.Errorf("-graph: backend %s has no graphs", b.Name())
		default:
			if err := gc.BeginCapture(); err != nil {
				return err
			}
			cerr := compute()
			gr, err := gc.EndCapture()
			if err := errors.Join(cerr, err); err != nil {
				return fmt.Errorf("capturing the step: %w", err)
			}
			g = gr
			if err := g.Launch(); err != nil {
				return err
			}
			graphLaunches++
		}
		b.Copy(losses.View(nstep, 1), loss)
		nstep++
		return opt.Step()
	}
	lossAt := func() (float32, error) {
		h := make([]float32, 1)
		b.ToHost(h, loss)
		return h[0], b.Sync()
	}
	tw := time.Now()
	for i := 0; i < warmup; i++ {
		if err := step(); err != nil {
			return fmt.Errorf("warm-up step %d: %w", i, err)
		}
	}
	l0, err := lossAt()
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	warm := time.Since(tw)
	ts := time.Now()
	for i := 0; i < steps; i++ {
		if err := step(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	l1, err := lossAt()
	if err != nil {
		return err
	}
	el := time.Since(ts).Seconds()
	ips := float64(batch*steps) / el
	gf := trainGFLOP[stem]
	if size != 32 || depth != 18 {
		gf = 0
	}
	if profile > 0 {
		prof.on = true
		for i := 0; i < profile; i++ {
			if err := step(); err != nil {
				return fmt.Errorf("profiled step %d: %w", i, err)
			}
		}
		prof.on = false
		prof.reference(os.Stdout, 32<<20)
		prof.report(os.Stdout, profile)
	}
	hl := make([]float32, warmup+steps+profile)
	b.ToHost(hl, losses)
	if err := b.Sync(); err != nil {
		return err
	}
	ls := make([]string, len(hl))
	for i, v := range hl {
		ls[i] = fmt.Sprintf("%.3f", v)
	}
	mode, optim := "eager", "per-param"
	if fused {
		optim = "fused"
	}
	if graph {
		mode = fmt.Sprintf("graph(%d)", graphLaunches)
	}
	fmt.Printf("RESULT impl=ringtrain backend=%s precision=%s stem=%s batch=%d img_s=%.1f ms_step=%.2f tflops=%.2f warmup_s=%.2f loss_first=%.4f loss_last=%.4f conv=%s act=%s search=%s scratch=%d step=%s optim=%s losses=%s\n",
		b.Name(), prec, stem, batch, ips, 1000*el/float64(steps), ips*gf/1000, warm.Seconds(), l0, l1, conv, act, search, scratch, mode, optim, strings.Join(ls, ","))
	return nil
}
