package gpu

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// TestTrainerDeviceRingMatchesHostRing trains ResNet-18 (1/16 width) for
// three steps on 2 and 3 emulated GPUs, one Backend per rank (standing
// for the processes of one host: the emulator's IPC handles open across
// its devices of one process), over the in-memory ring: once with the
// gradients through host memory (Trainer.DeviceRing off) and once device
// to device (on), and once with the switch off on one rank only (every
// rank then takes the host path); and once device to device with each
// rank on its own emulated GPU, without peer access to its left
// neighbour's (2 workers: neither pair; 3 workers: one pair, in a ring of
// peers), so that those ranks copy through the device. Parameters, BN
// running statistics and every step's
// loss and correct count must be bit-identical between the two runs and
// across ranks, and the device run
// must really have used the device ring. (The model's 45k parameters make
// one bucket, with the BN buffers and metrics: several buckets and the
// small path are covered by pkg/allreduce's TestDeviceReducerMatchesReducer.) Always on the emulator: on a
// GPU, CUDA IPC needs two processes (scripts/gpu-ipc.sh runs those).
func TestTrainerDeviceRingMatchesHostRing(t *testing.T) {
	spec := job.Default()
	spec.Model = job.Model{Arch: "resnet18", Stem: "cifar", Width: 1.0 / 16}
	spec.Data.Dataset, spec.Data.SyntheticSize, spec.Data.Augment = "synthetic", 64, true
	spec.GlobalBatch, spec.Epochs, spec.Device = 12, 1, "cuda"
	spec.BatchNorm = "average"
	train, test, err := worker.OpenDatasets(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	const steps = 3
	for _, world := range []int{2, 3} {
		t.Run(fmt.Sprintf("world=%d", world), func(t *testing.T) {
			backends := make([]*Backend, world)
			for i := range backends {
				backends[i] = emuOrSkip(t)
			}
			// on says whether rank r has the device ring switched on; it
			// is used when every rank has it on. copyOnly nil puts every
			// rank on one emulated GPU; else rank r is on GPU r, without
			// peer access to its left neighbour's when copyOnly(r).
			run := func(on, copyOnly func(r int) bool) [][]float32 {
				deviceRing := true
				for r := 0; r < world; r++ {
					deviceRing = deviceRing && on(r)
					switch {
					case copyOnly == nil:
						emuPlace(backends[r], 0)
					case copyOnly(r):
						emuPlace(backends[r], r, (r+world-1)%world)
					default:
						emuPlace(backends[r], r)
					}
				}
				net := allreduce.NewInmemNetwork()
				peers := []string{"a", "b", "c"}[:world]
				out := make([][]float32, world)
				errs := make([]error, world)
				var wg sync.WaitGroup
				for r := 0; r < world; r++ {
					wg.Add(1)
					go func(r int) {
						defer wg.Done()
						errs[r] = func() error {
							ctx := context.Background()
							tr, err := worker.NewTrainer(spec, backends[r], train, test)
							if err != nil {
								return err
							}
							defer tr.Close()
							tr.DeviceRing = on(r)
							ring, err := allreduce.Open(ctx, net.Transport(peers[r]), allreduce.DefaultConfig("j", 1, r, world), peers)
							if err != nil {
								return err
							}
							defer ring.Close()
							red, err := tr.NewReducer(ring)
							if err != nil {
								return err
							}
							line, err := tr.AttachDeviceRing(ctx, ring, world)
							if err != nil {
								return err
							}
							want := map[bool]string{true: "gradients device to device (emu-ipc, peer access", false: "gradients through host memory: "}[deviceRing]
							if deviceRing && copyOnly != nil && copyOnly(r) {
								want = fmt.Sprintf("gradients device to device (emu-ipc, copies through the device: no peer access between EMU-GPU-%d and EMU-GPU-%d)", r, (r+world-1)%world)
							}
							if tr.DeviceRingActive() != deviceRing || !strings.Contains(line, want) {
								return fmt.Errorf("device ring %v: active %v, log %q", deviceRing, tr.DeviceRingActive(), line)
							}
							defer tr.DetachDeviceRing()
							ld, err := tr.Loader(ctx, r, world)
							if err != nil {
								return err
							}
							defer ld.Close()
							var metrics []float32 // every step's loss and correct count
							for s := 0; s < steps; s++ {
								b, err := ld.Next(ctx)
								if err != nil {
									return err
								}
								res, err := tr.TrainStep(ctx, b, red, world)
								if err != nil {
									return err
								}
								if res.N != spec.GlobalBatch || math.IsNaN(res.Loss) || res.Comm.Buckets != 1 {
									return fmt.Errorf("step %d: %+v", s, res)
								}
								metrics = append(metrics, float32(res.Loss), float32(res.Correct))
							}
							p, bufs := tr.Model.ParamsFlat(), tr.Model.BuffersFlat()
							out[r] = make([]float32, p.Numel()+bufs.Numel(), p.Numel()+bufs.Numel()+2*steps)
							backends[r].ToHost(out[r][:p.Numel()], p)
							backends[r].ToHost(out[r][p.Numel():], bufs)
							out[r] = append(out[r], metrics...)
							return backends[r].Err()
						}()
					}(r)
				}
				wg.Wait()
				for r, err := range errs {
					if err != nil {
						t.Fatalf("device ring %v, rank %d: %v", deviceRing, r, err)
					}
				}
				return out
			}
			all := func(int) bool { return true }
			host := run(func(int) bool { return false }, nil)
			dev := run(all, nil)
			// One rank with the switch off: every rank agrees on the host
			// path (at once: the others do not wait for its handles).
			mixed := run(func(r int) bool { return r != world-1 }, nil)
			copyOnly := func(r int) bool { return world == 2 || r == 1 }
			noPeer := run(all, copyOnly)
			for r := 0; r < world; r++ {
				for i := range host[0] {
					if math.Float32bits(dev[r][i]) != math.Float32bits(host[0][i]) ||
						math.Float32bits(host[r][i]) != math.Float32bits(host[0][i]) ||
						math.Float32bits(mixed[r][i]) != math.Float32bits(host[0][i]) ||
						math.Float32bits(noPeer[r][i]) != math.Float32bits(host[0][i]) {
						t.Fatalf("rank %d value %d (parameters, BN buffers, then each step's loss and correct count): device ring %v, host ring %v, mixed %v, without peer access %v (rank 0: %v)",
							r, i, dev[r][i], host[r][i], mixed[r][i], noPeer[r][i], host[0][i])
					}
				}
			}
			for r, b := range backends {
				if p := b.dev.(*emuDevice).ipc.pulls; (p > 0) != copyOnly(r) {
					t.Fatalf("rank %d: %d copies through the device (want some: %v)", r, p, copyOnly(r))
				}
			}
		})
	}
}
