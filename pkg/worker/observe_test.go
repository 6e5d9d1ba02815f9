package worker

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/observe"
)

// memBackend is the CPU backend posing as a device backend that reports
// its memory: 1000 bytes more live after each report.
type memBackend struct {
	nn.Backend
	reads uint64
}

func (b *memBackend) DeviceName() string { return "Test GPU 9000" }

func (b *memBackend) DeviceMemory() nn.DeviceMemory {
	b.reads++
	return nn.DeviceMemory{Live: 1000 * b.reads, Cached: 7, Peak: 1000*b.reads + 7, Total: 1 << 30}
}

// A worker labels ringtrain_worker_device_info with its backend, device
// and precision, and a device backend's memory goes to
// ringtrain_worker_device_memory_bytes after every step.
func TestWorkerDeviceMetrics(t *testing.T) {
	spec := testJob(t, 1)
	train, test, err := OpenDatasets(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		b          nn.Backend
		name, prec string
		reportsMem bool
	}{
		{nn.NewCPU(1), "host CPU", "fp32", false},
		{&memBackend{Backend: nn.NewCPU(1)}, "Test GPU 9000", "fp32", true},
	} {
		tr, err := NewTrainer(spec, tc.b, train, test)
		if err != nil {
			t.Fatal(err)
		}
		met := observe.NewWorkerMetrics()
		m := newMachine(deps{ID: "w0", Spec: spec, Trainer: tr, Metrics: met})
		want := `ringtrain_worker_device_info{backend="cpu",name="` + tc.name + `",precision="` + tc.prec + `"} 1`
		if err := testutil.GatherAndCompare(met.Registry, strings.NewReader("# HELP ringtrain_worker_device_info 1, labelled with the backend this worker trains on (cpu, cuda), its device's name and the precision.\n# TYPE ringtrain_worker_device_info gauge\n"+want+"\n"), "ringtrain_worker_device_info"); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		for range 2 {
			m.observeStep(StepResult{Loss: 1, N: 8, LocalN: 8}, 1, 0, 1, 100, 0, 0, m.deviceMemory())
		}
		n, err := testutil.GatherAndCount(met.Registry, "ringtrain_worker_device_memory_bytes")
		if err != nil {
			t.Fatal(err)
		}
		if !tc.reportsMem {
			if n != 0 {
				t.Errorf("%s: %d device memory series from a backend without a report", tc.name, n)
			}
		} else {
			// The second step's report (the first said 1000 live).
			exp := "# HELP ringtrain_worker_device_memory_bytes Device memory of a GPU worker: live (in tensors and scratch), cached (kept for reuse), peak (most of live+cached so far), total (the device's).\n" +
				"# TYPE ringtrain_worker_device_memory_bytes gauge\n" +
				`ringtrain_worker_device_memory_bytes{kind="cached"} 7` + "\n" +
				`ringtrain_worker_device_memory_bytes{kind="live"} 2000` + "\n" +
				`ringtrain_worker_device_memory_bytes{kind="peak"} 2007` + "\n" +
				`ringtrain_worker_device_memory_bytes{kind="total"} 1.073741824e+09` + "\n"
			if err := testutil.GatherAndCompare(met.Registry, strings.NewReader(exp), "ringtrain_worker_device_memory_bytes"); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
		tr.Close()
	}
}
