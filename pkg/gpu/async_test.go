package gpu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// hostCopies gives the test devices hostAlloc and ticketed copies with
// the real device's rules: a ticket is pending from downloadAsync until
// waitDownload, and waiting twice is an error.
type hostCopies struct {
	host    [][]uint64 // keeps hostAlloc's blocks alive (8-byte aligned)
	pending map[int]bool
	next    int
}

func (h *hostCopies) hostAlloc(n uint64) (unsafe.Pointer, error) {
	b := make([]uint64, (max(n, 4)+7)/8)
	h.host = append(h.host, b)
	return unsafe.Pointer(&b[0]), nil
}

func (h *hostCopies) queue(copyNow func() error) (int, error) {
	if err := copyNow(); err != nil {
		return -1, err
	}
	if h.pending == nil {
		h.pending = map[int]bool{}
	}
	t := h.next
	h.next++
	h.pending[t] = true
	return t, nil
}

func (h *hostCopies) waitDownload(t int) error {
	if !h.pending[t] {
		return fmt.Errorf("%w: copy ticket %d is not pending", ErrBadInput, t)
	}
	delete(h.pending, t)
	return nil
}

func emuOrSkip(t *testing.T) *Backend {
	t.Helper()
	return emuSMsOrSkip(t, PrecisionFP32, 4)
}

// emuSMsOrSkip opens the emulator as a device of sms multiprocessors in
// precision prec, closed when the test ends; without a C++ compiler the
// test skips.
func emuSMsOrSkip(t *testing.T, prec string, sms int) *Backend {
	t.Helper()
	b, err := openEmuSMs(prec, sms)
	if errors.Is(err, errNoCompiler) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestAsyncCopyToPinnedHost(t *testing.T) {
	b := emuOrSkip(t)
	var ac nn.AsyncCopier = b
	src := b.New(3, 5)
	vals := make([]float32, 15)
	for i := range vals {
		vals[i] = float32(i) - 7.5
	}
	b.FromHost(src, vals)
	dst, err := ac.PinnedHost(15 + 4)
	if err != nil {
		t.Fatal(err)
	}
	// Two copies into one pinned block: the whole tensor and a view.
	t1 := ac.ToHostAsync(dst[:15], src)
	t2 := ac.ToHostAsync(dst[15:15+4], src.View(6, 4))
	if err := ac.WaitCopy(t2); err != nil {
		t.Fatal(err)
	}
	if err := ac.WaitCopy(t1); err != nil {
		t.Fatal(err)
	}
	for i := range vals {
		if dst[i] != vals[i] {
			t.Fatalf("dst[%d] = %v, want %v", i, dst[i], vals[i])
		}
	}
	for i := 0; i < 4; i++ {
		if dst[15+i] != vals[6+i] {
			t.Fatalf("view copy [%d] = %v, want %v", i, dst[15+i], vals[6+i])
		}
	}
	// A ticket is waited for once; a wrong-size copy is a sticky error.
	if err := ac.WaitCopy(t1); !errors.Is(err, ErrBadInput) {
		t.Fatalf("second wait: %v, want ErrBadInput", err)
	}
	b2 := emuOrSkip(t)
	x := b2.New(4)
	if tk := b2.ToHostAsync(make([]float32, 3), x); tk != -1 || !errors.Is(b2.WaitCopy(tk), nn.ErrShape) {
		t.Fatalf("wrong-size copy: ticket %d, err %v", tk, b2.Err())
	}
}

// freshBackend opens a backend of its own (the shared ones of openGPU are
// not for concurrent use) on the GPU, or reports false when there is none.
func freshBackend(t *testing.T) (*Backend, bool) {
	t.Helper()
	b, err := Open(withEnvSearch(Options{Precision: PrecisionFP32}))
	if err != nil {
		return nil, false
	}
	t.Cleanup(func() { b.Close() })
	return b, true
}

// Device backends train over the in-memory ring with the overlapped
// gradient copies and without: the same bits either way, and the same on
// every rank (the copies land before their buckets start, the BN buffers
// before the last bucket). Two ranks on a GPU (a backend each); one on the
// emulator, which is not safe for concurrent backends. With one rank the
// gradients stay on the device by default: the same bits as through the
// host (ForceHostGradients).
func TestTrainerOverlappedCopiesMatchSyncCopies(t *testing.T) {
	shared := openGPU(t, PrecisionFP32) // skips as the other tests do
	// The ranks' backends, used by both runs (each trainer frees its
	// memory when it closes).
	backends := []*Backend{shared}
	if b0, ok := freshBackend(t); ok {
		b1, ok := freshBackend(t)
		if !ok {
			t.Fatal("a second CUDA backend does not open")
		}
		backends = []*Backend{b0, b1}
	}
	world := len(backends)
	t.Logf("world %d on %s", world, shared.Info().Name)
	spec := job.Default()
	spec.Model = job.Model{Arch: "resnet18", Stem: "cifar", Width: 1.0 / 16}
	spec.Data.Dataset, spec.Data.SyntheticSize, spec.Data.Augment = "synthetic", 64, true
	spec.GlobalBatch, spec.Epochs, spec.Device = 8, 1, "cuda"
	train, test, err := worker.OpenDatasets(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	const steps = 3
	run := func(noOverlap, force bool) [][]float32 {
		net := allreduce.NewInmemNetwork()
		peers := []string{"a", "b"}[:world]
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
					tr.Overlap = !noOverlap
					tr.ForceHostGradients = force
					ring, err := allreduce.Open(ctx, net.Transport(peers[r]), allreduce.DefaultConfig("j", 1, r, world), peers)
					if err != nil {
						return err
					}
					defer ring.Close()
					red, err := tr.NewReducer(ring)
					if err != nil {
						return err
					}
					ld, err := tr.Loader(ctx, r, world)
					if err != nil {
						return err
					}
					defer ld.Close()
					for s := 0; s < steps; s++ {
						b, err := ld.Next(ctx)
						if err != nil {
							return err
						}
						if _, err := tr.TrainStep(ctx, b, red, world); err != nil {
							return err
						}
					}
					// Parameters and BN running statistics.
					p, bufs := tr.Model.ParamsFlat(), tr.Model.BuffersFlat()
					out[r] = make([]float32, p.Numel()+bufs.Numel())
					backends[r].ToHost(out[r][:p.Numel()], p)
					backends[r].ToHost(out[r][p.Numel():], bufs)
					return backends[r].Err()
				}()
			}(r)
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				t.Fatalf("noOverlap=%v rank %d: %v", noOverlap, r, err)
			}
		}
		return out
	}
	after, overlap := run(true, true), run(false, true)
	if world == 1 {
		stay := run(false, false)
		for i := range after[0] {
			if stay[0][i] != after[0][i] {
				t.Fatalf("value %d (parameters, then BN buffers): gradients kept on the device give %v, through the host %v", i, stay[0][i], after[0][i])
			}
		}
	}
	for r := 0; r < world; r++ {
		for i := range after[0] {
			if overlap[r][i] != after[0][i] {
				t.Fatalf("rank %d value %d (parameters, then BN buffers): overlapped copies give %v, copies after backward %v", r, i, overlap[r][i], after[0][i])
			}
		}
	}
}
