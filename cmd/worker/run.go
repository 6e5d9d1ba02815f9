package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/internal/backend"
	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// maxProcs bounds --procs: worker processes started by one 'worker run'.
const maxProcs = 256

func runCmd() *cobra.Command {
	var cfg worker.Config
	var tf tlsconf.Files
	shm := true
	gpuIPC := true
	gpuPrefetch := true
	procs := 1
	var cudaLibDir, convSearch string
	cmd := &cobra.Command{
		Use:   "run --coordinator ADDR[,ADDR...]",
		Short: "Join a job and train (what the coordinator's --workers N starts)",
		Example: `  worker run --coordinator 10.0.0.5:7070
  worker run --coordinator c0:7070,c1:7070,c2:7070 --listen 0.0.0.0:7080 --advertise $(hostname -i):7080 --device cuda`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if procs < 1 || procs > maxProcs {
				return fmt.Errorf("--procs %d: must be in [1, %d]", procs, maxProcs)
			}
			if cfg.Threads < 0 || cfg.Threads > job.MaxThreads {
				return fmt.Errorf("--threads %d: must be in [0, %d] (0: the job's)", cfg.Threads, job.MaxThreads)
			}
			if cfg.JoinTimeout < 0 || cfg.JoinTimeout > time.Hour {
				return fmt.Errorf("--join-timeout %s: must be in [0, 1h] (0: 15s)", cfg.JoinTimeout)
			}
			if convSearch != gpu.ConvSearchHeuristic && convSearch != gpu.ConvSearchMeasure {
				return fmt.Errorf("--gpu-conv-search %q: want heuristic or measure", convSearch)
			}
			cfg.Permanent = inputError
			cfg.NoDeviceRing = !gpuIPC
			cfg.NoGPUPrefetch = !gpuPrefetch
			if procs > 1 {
				return runProcs(cmd.Context(), procsOptions{cfg: cfg, tls: tf, shm: shm, procs: procs, cudaLibDir: cudaLibDir, convSearch: convSearch})
			}
			log := cli.NewLogger("worker", env.Log())
			defer log.Sync()
			cfg.Log = log
			tc, err := tf.Load()
			if err != nil {
				return err
			}
			cfg.TLS = tc
			cfg.NoSharedMemory = !shm
			if cfg.HTTPToken == "" {
				cfg.HTTPToken = os.Getenv("RINGTRAIN_HTTP_TOKEN")
			}
			cfg.OpenBackend = func(device string, threads int, precision string) (nn.Backend, error) {
				o := gpuOptions(precision)
				o.LibDir, o.ConvSearch, o.Graphs = cudaLibDir, convSearch, cfg.GPUGraphs
				return backend.Open(device, threads, o, log)
			}
			return worker.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Coordinators, "coordinator", []string{"127.0.0.1:7070"}, "coordinator control address(es); any replica works")
	f.StringVar(&cfg.ID, "id", "", "worker id, unique in the job (default hostname-pid)")
	f.StringVar(&cfg.ListenAddr, "listen", "127.0.0.1:0", "ring (data-plane) listen address")
	f.StringVar(&cfg.Advertise, "advertise", "", "ring address other workers dial (required when --listen is a wildcard such as 0.0.0.0:7080)")
	f.StringVar(&cfg.Device, "device", "", "cpu | cuda | auto (default: the job's)")
	f.IntVar(&cfg.Threads, "threads", 0, "compute threads (default: the job's)")
	tf.Bind(f)
	f.StringVar(&cfg.HostID, "host-id", "", "name of this worker's machine: workers with equal host ids use shared memory between them (default: this machine's)")
	f.BoolVar(&shm, "shared-memory", true, "ring traffic to a worker on the same host goes through shared memory (false: TCP)")
	f.IntVar(&procs, "procs", 1, "run this many worker processes on this host (one per GPU, like torchrun's --nproc-per-node): ids <id>-0..K-1, ring ports <port>+0..K-1; they share memory with each other")
	f.StringVar(&cfg.HTTPAddr, "http", "", "serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:0 or :9090; empty: off)")
	f.StringVar(&cfg.HTTPToken, "http-token", "", "bearer token /metrics requires (default $RINGTRAIN_HTTP_TOKEN)")
	f.StringVar(&cfg.SampleLog, "sample-log", os.Getenv("RINGTRAIN_SAMPLE_LOG"), "append the dataset indices of every step to DIR/samples-<id>-<pid>.jsonl (an audit aid; env RINGTRAIN_SAMPLE_LOG)")
	f.BoolVar(&gpuIPC, "gpu-ipc", true, "GPU: reduce gradients device to device (CUDA IPC) when the ring neighbours are GPU workers on this host (false: through host memory)")
	f.BoolVar(&cfg.GPUGraphs, "gpu-graphs", os.Getenv("RINGTRAIN_GPU_GRAPHS") == "1", "GPU: launch each step's forward and backward as a captured CUDA graph (not yet verified on a GPU; env RINGTRAIN_GPU_GRAPHS=1)")
	f.BoolVar(&gpuPrefetch, "gpu-prefetch", os.Getenv("RINGTRAIN_GPU_PREFETCH") != "0", "GPU: upload the next step's input on a copy stream while the step computes (false: each step uploads its own before computing; env RINGTRAIN_GPU_PREFETCH=0)")
	f.BoolVar(&cfg.GPUOverlap, "gpu-overlap", os.Getenv("RINGTRAIN_GPU_OVERLAP") == "1", "GPU: overlap the gradients' device-to-host copies with backward (env RINGTRAIN_GPU_OVERLAP=1)")
	f.StringVar(&cudaLibDir, "cuda-lib-dir", "", "GPU: directory searched first for the CUDA libraries (then $RINGTRAIN_CUDA_LIB_DIR, $LD_LIBRARY_PATH, the standard places)")
	f.StringVar(&convSearch, "gpu-conv-search", "heuristic", "GPU: how cuDNN convolution algorithms are chosen: heuristic (reproducible run to run) | measure (timed once per shape, as torch.backends.cudnn.benchmark); deterministic algorithms only either way")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", 0, "give up when the coordinator or etcd does not answer within this (default 15s)")
	f.BoolVar(&cfg.Linger, "linger", false, "when the job has ended (done, stopped by the coordinator, or this worker's input is bad) stay up, idle, serving /healthz (/readyz: not ready), until SIGTERM instead of exiting; a failed job the coordinator retries is joined again (for Kubernetes StatefulSets, which restart a pod that exits; crashes and lost coordinators still exit)")
	return cmd
}

// gpuOptions are the GPU backend's options for precision, searching for
// the CUDA libraries where the environment says (cmd/internal/env).
func gpuOptions(precision string) gpu.Options {
	libPath, pythonRoots := env.CUDASearch()
	return gpu.Options{Precision: precision, LibPath: libPath, PythonRoots: pythonRoots}
}
