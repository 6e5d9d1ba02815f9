package e2e

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// badInputLimit is how long a bad input may take to stop a job: "within
// seconds" (generous for a loaded 2-core machine; typical runs take well
// under a second for what the coordinator checks itself, a few seconds
// for what a worker meets).
const badInputLimit = 30 * time.Second

// outcome is what a user sees of one run: exit status, time, and the
// error message: the plain-text lines of stderr from the last one that
// starts with the binary's name (log lines are JSON under
// RINGTRAIN_LOG=json).
type outcome struct {
	code    int
	took    time.Duration
	message string // the non-JSON lines
	all     string
}

// runBin runs a binary in dir (the working directory) until it exits or
// limit passes (then the test fails: a hang).
func runBin(t *testing.T, dir, name string, limit time.Duration, args ...string) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "RINGTRAIN_LOG=json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	o := outcome{took: time.Since(start), all: out.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: still running after %s (a hang)\n%s", name, args, limit, tail(o.all, 3000))
	}
	if ee, ok := err.(*exec.ExitError); ok {
		o.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	// The message: the plain lines from the last one naming the binary
	// (other plain lines, like the dashboard's address, come before).
	var plain []string
	for _, l := range strings.Split(o.all, "\n") {
		if l == "" || strings.HasPrefix(l, "{") {
			continue
		}
		if strings.HasPrefix(l, name+":") {
			plain = plain[:0]
		}
		plain = append(plain, l)
	}
	o.message = strings.Join(plain, "\n")
	return o
}

// requireClearFailure checks the promise for one bad input: a non-zero
// exit within the limit, one message (starting with "coordinator:" or
// "worker:") that contains want, no stack trace, no restart.
func requireClearFailure(t *testing.T, what string, o outcome, prefix string, want ...string) {
	t.Helper()
	if o.code == 0 {
		t.Errorf("%s: exit status 0\n%s", what, tail(o.all, 2000))
		return
	}
	if !strings.HasPrefix(o.message, prefix) || strings.Count("\n"+o.all, "\n"+prefix) != 1 {
		t.Errorf("%s: want one message starting with %q, got:\n%s", what, prefix, o.message)
	}
	for _, w := range want {
		if !strings.Contains(o.message, w) {
			t.Errorf("%s: message lacks %q:\n%s", what, w, o.message)
		}
	}
	for _, bad := range []string{"goroutine ", "panic:", "fatal error:", "restarting worker"} {
		if strings.Contains(o.all, bad) {
			t.Errorf("%s: output has %q:\n%s", what, bad, tail(o.all, 3000))
		}
	}
	t.Logf("%s: exit %d after %s: %s", what, o.code, o.took.Round(10*time.Millisecond), firstLine(o.message))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " [...]"
	}
	return s
}

// TestBadInput runs every bad input of issue 12 through the real binaries:
// each ends within seconds with one clear message and a non-zero exit.
// make test-badinput runs it alone.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	syn := func(extra ...string) []string {
		return append([]string{"--workers", "2", "--dataset", "synthetic", "--synthetic-size", "256", "--epochs", "1",
			"--batch", "32", "--width", "0.125", "--threads", "1", "--no-progress", "--output", filepath.Join(dir, "out-"+fmt.Sprint(time.Now().UnixNano()))}, extra...)
	}
	coord := func(t *testing.T, args ...string) outcome {
		t.Helper()
		return runBin(t, dir, "coordinator", badInputLimit, args...)
	}

	// Numbers a user can type ("Why" 2, 3, 4 and "Smaller").
	t.Run("bounds", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--batch", "1000000000"}, "global_batch (--batch) 1000000000 must be in [1, 65536]"},
			{[]string{"--classes", "1000000000"}, "model.classes (--classes)"},
			{[]string{"--synthetic-size", "1000000000000"}, "data.synthetic_size (--synthetic-size)"},
			{[]string{"--image-size", "100000"}, "data.image_size (--image-size) 100000"},
			{[]string{"--image-size", "0"}, "data.image_size (--image-size) 0"},
			{[]string{"--threads", "-1"}, "threads (--threads) -1"},
			{[]string{"--deadline", "1e300"}, "deadline_sec (--deadline)"},
			{[]string{"--lr", "NaN"}, "optimizer.lr (--lr) is NaN"},
			{[]string{"--workers", "100000"}, "--workers 100000"},
			{[]string{"--batch", "512"}, "global_batch (--batch) 512 is larger than the training set (256 samples)"},
			{[]string{"--classes", "5"}, "model.classes (--classes) 5 is fewer than the 10 classes"},
			{[]string{"--synthetic-size", "257"}, "the short last step of each epoch (1 of 257 images) leaves one of them a single image"},
			{[]string{"--raft-peers", "c0=127.0.0.1:1,c1=127.0.0.1:2", "--workers", "0"}, "needs a shared etcd (--etcd-endpoints)"},
		} {
			o := coord(t, syn(c.args...)...)
			requireClearFailure(t, strings.Join(c.args, " "), o, "coordinator:", c.want)
		}
	})

	t.Run("yaml", func(t *testing.T) {
		nan := filepath.Join(dir, "nan.yaml")
		os.WriteFile(nan, []byte("optimizer:\n  lr: .nan\n"), 0o644)
		requireClearFailure(t, "NaN in YAML", coord(t, syn("--config", nan)...), "coordinator:", "optimizer.lr is not a finite number")
		long := filepath.Join(dir, "long.yaml")
		os.WriteFile(long, []byte("name: "+strings.Repeat("n", 4<<20)+"\n"), 0o644)
		o := coord(t, syn("--config", long)...)
		requireClearFailure(t, "4 MB job name", o, "coordinator:", "is 4194304 bytes long; at most 128")
		if len(o.message) > 2000 {
			t.Errorf("a 4 MB name made a %d-byte message", len(o.message))
		}
	})

	// Image folders ("Why" 1 and 10): checked by the coordinator before any
	// worker starts.
	t.Run("image folder", func(t *testing.T) {
		good := pngFile(16, 16)
		for _, c := range []struct {
			name string
			data []byte
			want string
		}{
			{"zero-byte.png", nil, "zero-byte.png"},
			{"truncated.png", good[:len(good)-20], "truncated.png"},
			{"text.jpg", []byte("not an image at all"), "text.jpg"},
			{"huge.png", pngHeader(30000, 30000), "the header declares 30000x30000 pixels"},
		} {
			root := imageFolder(t, filepath.Join(dir, "folder-"+c.name), 2, 8)
			os.WriteFile(filepath.Join(root, "c1", c.name), c.data, 0o644)
			o := coord(t, syn("--dataset", "folder", "--folder", root, "--image-size", "16", "--batch", "8")...)
			requireClearFailure(t, c.name, o, "coordinator:", "data: corrupt data file", c.want)
		}
	})

	// Weights ("Why" 1 and "Smaller").
	t.Run("weights", func(t *testing.T) {
		junk := filepath.Join(dir, "junk.safetensors")
		os.WriteFile(junk, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"), 0o644)
		requireClearFailure(t, "malformed weights", coord(t, syn("--weights", junk, "--freeze-backbone")...), "coordinator:", junk)
		w := weightsFile(t, dir)
		neg := filepath.Join(dir, "negvar.safetensors")
		rewriteTensor(t, w, neg, "bn1.running_var", func(v []float32) []float32 { v[0] = -1; return v })
		requireClearFailure(t, "negative running_var", coord(t, syn("--weights", neg)...), "coordinator:",
			neg, "bn1.running_var has 1 negative values")
		missing := filepath.Join(dir, "missing.safetensors")
		rewriteTensor(t, w, missing, "fc.weight", nil)
		o := runBin(t, dir, "worker", badInputLimit, "evaluate", "--weights", missing, "--dataset", "synthetic",
			"--synthetic-size", "64", "--width", "0.125", "--threads", "1")
		requireClearFailure(t, "evaluate: missing tensor", o, "worker:", missing, "fc.weight is not in the file")
	})

	// A copied output directory restarted with --output NEW ("Why" 7).
	t.Run("output conflict", func(t *testing.T) {
		a := filepath.Join(dir, "runA")
		args := []string{"--workers", "1", "--dataset", "synthetic", "--synthetic-size", "64", "--epochs", "1", "--batch", "32",
			"--width", "0.125", "--threads", "1", "--no-progress"}
		if o := coord(t, append(args, "--output", a)...); o.code != 0 {
			t.Fatalf("first run: %s", tail(o.all, 2000))
		}
		b := filepath.Join(dir, "runB")
		if out, err := exec.Command("cp", "-a", a, b).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		o := coord(t, append(args, "--output", b)...)
		requireClearFailure(t, "copied output", o, "coordinator:", "--output is "+b, "was written for the output directory "+a,
			"--move-output")
		if o := coord(t, append(args, "--output", b, "--move-output")...); strings.Contains(o.all, "was written for the output directory") {
			t.Errorf("--move-output still refused:\n%s", o.message)
		}
	})

	// The same job started twice (the same --output): the second refuses
	// at once, naming the first, instead of waiting on its file locks.
	t.Run("output in use", func(t *testing.T) {
		out := filepath.Join(dir, "twice")
		args := []string{"--workers", "1", "--dataset", "synthetic", "--synthetic-size", "256", "--epochs", "1000",
			"--batch", "32", "--width", "0.125", "--threads", "1", "--no-progress", "--output", out}
		first := start(t, dir, "coordinator", nil, args...)
		defer first.killGroup()
		waitFor(t, time.Minute, "the first job training", func() bool { return countSteps(out) > 0 })
		o := coord(t, args...)
		requireClearFailure(t, "output in use", o, "coordinator:", "is in use by another coordinator (pid "+fmt.Sprint(first.cmd.Process.Pid)+")",
			"another --output")
	})

	// Inputs only a worker sees: a worker on another machine (here: another
	// working directory, the folder given relative) whose copy of the
	// folder is damaged, or has a class more than the model's ("Why" 1, 8).
	// Once the input is fixed, the same coordinator and worker commands
	// run the job (a job failed in an earlier run is retried, not
	// reported failed again).
	t.Run("worker-side", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			damage func(root string)
			want   []string
			fix    func(root string) // nil: not retried
		}{
			{"truncated image", func(root string) {
				good := pngFile(16, 16)
				os.WriteFile(filepath.Join(root, "c1", "7.png"), good[:len(good)-20], 0o644)
			}, []string{"job stopped: worker w0", "corrupt data file", "7.png"}, func(root string) {
				os.WriteFile(filepath.Join(root, "c1", "7.png"), pngFile(16, 16), 0o644)
			}},
			{"bad label", func(root string) {
				imageFolder(t, root, 3, 8) // a third class: labels 2 for a 2-class model
			}, []string{"job stopped: worker w0", "nn: bad label"}, nil},
		} {
			cdir, wdir := filepath.Join(dir, "coord-"+c.name), filepath.Join(dir, "worker-"+c.name)
			imageFolder(t, filepath.Join(cdir, "imgs"), 2, 8)
			imageFolder(t, filepath.Join(wdir, "imgs"), 2, 8)
			c.damage(filepath.Join(wdir, "imgs"))
			port := freePorts(t, 1)[0]
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			run := func() (co, wo outcome) {
				ch := make(chan outcome, 1)
				go func() {
					ch <- runBin(t, cdir, "coordinator", badInputLimit, "--listen", addr, "--dataset", "folder", "--folder", "imgs",
						"--classes", "2", "--image-size", "16", "--batch", "4", "--epochs", "2", "--width", "0.125", "--no-progress",
						"--output", filepath.Join(cdir, "out"), "--shuffle=false")
				}()
				wo = runBin(t, wdir, "worker", badInputLimit, "run", "--coordinator", addr, "--id", "w0", "--threads", "1")
				return <-ch, wo
			}
			o, wo := run()
			requireClearFailure(t, c.name+" (coordinator)", o, "coordinator:", c.want...)
			if wo.code != 65 {
				t.Errorf("%s: worker exit %d, want 65 (input error)\n%s", c.name, wo.code, tail(wo.all, 2000))
			}
			if c.fix == nil {
				continue
			}
			c.fix(filepath.Join(wdir, "imgs"))
			o, wo = run()
			if o.code != 0 || wo.code != 0 || !strings.Contains(o.all, "done: 8 steps") {
				t.Errorf("%s fixed: coordinator exit %d, worker exit %d, want a finished job:\n%s", c.name, o.code, wo.code, tail(o.all, 3000))
			}
		}
	})

	// A GPU job on a machine without one: the local workers cannot open
	// the device, which a restart would not change; the job stops at the
	// first worker's exit (status 65) with the driver search in the
	// message, instead of restarting each worker --restart-limit times.
	t.Run("no GPU", func(t *testing.T) {
		if b, err := gpu.Open(gpu.Options{}); err == nil {
			b.Close()
			t.Skip("this machine has a GPU")
		}
		o := coord(t, syn("--device", "cuda", "--precision", "bf16")...)
		requireClearFailure(t, "--device cuda without a GPU", o, "coordinator:",
			"exited because its input is bad", "gpu: --device cuda")
		if n := strings.Count(o.all, `"msg":"worker exited"`); n > 2 {
			t.Errorf("%d worker exits for 2 workers: restarted", n)
		}
	})

	// An output directory that refuses the final model (here a directory
	// in its way; a full disk alike): the job stops with the cause at
	// once, instead of every worker training again from the newest
	// checkpoint to fail the same way until --restart-limit.
	t.Run("unwritable final model", func(t *testing.T) {
		out := filepath.Join(dir, "final")
		if err := os.MkdirAll(filepath.Join(out, "model.safetensors", "in-the-way"), 0o755); err != nil {
			t.Fatal(err)
		}
		o := coord(t, "--workers", "2", "--dataset", "synthetic", "--synthetic-size", "256", "--epochs", "1",
			"--batch", "32", "--width", "0.125", "--threads", "1", "--no-progress", "--output", out)
		requireClearFailure(t, "unwritable final model", o, "coordinator:", "job stopped: worker",
			"the final model "+filepath.Join(out, "model.safetensors"), "start the coordinator again")
		if n := strings.Count(o.all, `"msg":"worker exited"`); n > 2 {
			t.Errorf("%d worker exits for 2 workers: restarted", n)
		}
	})

	// The record cannot be written at the end (a plot's name taken by a
	// directory, as a full disk would refuse it): the job is done, but the
	// exit says the record is missing; started again once fixed, the
	// coordinator writes it.
	t.Run("unwritable record", func(t *testing.T) {
		out := filepath.Join(dir, "record")
		plot := filepath.Join(out, "accuracy.png")
		if err := os.MkdirAll(plot, 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{"--workers", "2", "--dataset", "synthetic", "--synthetic-size", "256", "--epochs", "1",
			"--batch", "32", "--width", "0.125", "--threads", "1", "--no-progress", "--output", out}
		o := coord(t, args...)
		requireClearFailure(t, "unwritable record", o, "coordinator:", "the job is done, but its record", "accuracy.png",
			"start the coordinator again")
		os.Remove(plot)
		if o := coord(t, args...); o.code != 0 {
			t.Fatalf("started again: exit %d\n%s", o.code, tail(o.all, 2000))
		}
		if st, err := os.Stat(plot); err != nil || !st.Mode().IsRegular() {
			t.Fatalf("the plot was not written when started again: %v", err)
		}
	})

	// Every checkpoint damaged ("Why" 1 and 5): the job stops at once with
	// a message saying so, instead of a restart loop.
	t.Run("damaged checkpoints", func(t *testing.T) {
		out := filepath.Join(dir, "ckpt")
		args := []string{"--workers", "2", "--dataset", "synthetic", "--synthetic-size", "1024", "--epochs", "2", "--batch", "32",
			"--width", "0.125", "--threads", "1", "--no-progress", "--checkpoint-every", "5", "--output", out}
		p := start(t, dir, "coordinator", nil, args...)
		waitFor(t, time.Minute, "12 steps", func() bool { return countSteps(out) >= 12 })
		p.killGroup()
		<-p.done
		ms, _ := filepath.Glob(filepath.Join(out, "checkpoints", "ckpt-*", "model.safetensors"))
		if len(ms) == 0 {
			t.Fatal("no checkpoints written")
		}
		for _, m := range ms {
			b, _ := os.ReadFile(m)
			b[len(b)/2] ^= 0x40
			os.WriteFile(m, b, 0o644)
		}
		o := coord(t, args...)
		// (Only those up to the committed step are tried.)
		requireClearFailure(t, "all checkpoints damaged", o, "coordinator:", "job stopped: worker", "checkpoint(s) there were refused",
			"checkpoint: corrupt")
	})

	// The embedded etcd under the job's mutual TLS ("Why" 6): a local
	// client without the job's certificate can neither read nor register.
	t.Run("etcd TLS", func(t *testing.T) {
		pki := filepath.Join(dir, "pki")
		if o := runBin(t, dir, "coordinator", badInputLimit, "certs", "--dir", pki); o.code != 0 {
			t.Fatalf("certs: %s", o.all)
		}
		out := filepath.Join(dir, "tls-out")
		p := start(t, dir, "coordinator", nil, "--workers", "1", "--dataset", "synthetic", "--synthetic-size", "4096",
			"--epochs", "5", "--batch", "32", "--width", "0.125", "--threads", "1", "--no-progress", "--output", out,
			"--tls-cert", filepath.Join(pki, "tls.crt"), "--tls-key", filepath.Join(pki, "tls.key"), "--tls-ca", filepath.Join(pki, "ca.crt"))
		var eps []string
		waitFor(t, time.Minute, "coordinator ready", func() bool {
			for _, l := range strings.Split(p.log(), "\n") {
				if strings.Contains(l, `"coordinator ready"`) {
					i := strings.Index(l, `"etcd":["`)
					j := strings.Index(l[i+9:], `"`)
					eps = []string{l[i+9 : i+9+j]}
					return true
				}
			}
			return false
		})
		if !strings.HasPrefix(eps[0], "https://127.0.0.1:") {
			t.Fatalf("embedded etcd at %v with TLS on", eps)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http" + strings.TrimPrefix(eps[0], "https")},
			DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := cli.Put(ctx, cluster.MemberKey("ringtrain", "evil"), `{"id":"evil","address":"127.0.0.1:1"}`); err == nil {
				t.Error("a plaintext client registered a fake member")
			}
			cancel()
			cli.Close()
		}
		ws := workerPID(t, p, "w0")
		if ws <= 0 {
			t.Fatal("no worker")
		}
	})

	// Plaintext control port on every interface: a warning says so.
	t.Run("plaintext warning", func(t *testing.T) {
		p := start(t, dir, "coordinator", nil, "--listen", "0.0.0.0:0", "--dataset", "synthetic", "--synthetic-size", "64",
			"--output", filepath.Join(dir, "warn-out"), "--no-progress")
		waitFor(t, 30*time.Second, "the warning", func() bool {
			return strings.Contains(p.log(), "listens on every interface without TLS")
		})
	})
}

// imageFolder writes root/c0..c{classes-1}/0..n-1.png (16x16) and returns root.
func imageFolder(t *testing.T, root string, classes, n int) string {
	t.Helper()
	for c := 0; c < classes; c++ {
		d := filepath.Join(root, fmt.Sprintf("c%d", c))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			os.WriteFile(filepath.Join(d, fmt.Sprintf("%d.png", i)), pngFile(16, 16), 0o644)
		}
	}
	return root
}

// pngChunk encodes one PNG chunk.
func pngChunk(typ string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	return b.Bytes()
}

// pngHeader is a PNG signature and IHDR declaring w x h RGB pixels, with
// no image data: what a decoder's header check sees first.
func pngHeader(w, h int) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	return append([]byte("\x89PNG\r\n\x1a\n"), pngChunk("IHDR", ihdr)...)
}

// pngFile is a complete w x h grey PNG.
func pngFile(w, h int) []byte {
	raw := bytes.Repeat(append([]byte{0}, bytes.Repeat([]byte{0x80}, 3*w)...), h)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw)
	zw.Close()
	b := pngHeader(w, h)
	b = append(b, pngChunk("IDAT", z.Bytes())...)
	return append(b, pngChunk("IEND", nil)...)
}

// weightsFile writes a ResNet-18 (width 0.125, 10 classes) in torchvision
// names, as a job's model.safetensors is.
func weightsFile(t *testing.T, dir string) string {
	t.Helper()
	b := nn.NewCPU(1)
	m, err := nn.NewResNet(b, nn.ResNetConfig{Depth: 18, Stem: "imagenet", Width: 0.125, Classes: 10, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	p := filepath.Join(dir, "good.safetensors")
	if err := nn.SaveWeights(p, b, m.Params(), m.Buffers(), nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// rewriteTensor copies the weights file src to dst with tensor name
// changed by f (dropped when f is nil).
func rewriteTensor(t *testing.T, src, dst, name string, f func([]float32) []float32) {
	t.Helper()
	st, err := nn.ReadSafetensorsFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var out []*nn.STTensor
	for _, x := range st.Tensors {
		if x.Name != name {
			out = append(out, x)
			continue
		}
		if f == nil {
			continue
		}
		v, err := x.Float32()
		if err != nil {
			t.Fatal(err)
		}
		v = f(v)
		if math.IsNaN(float64(v[0])) {
			t.Fatal("unexpected")
		}
		nt, err := nn.F32Tensor(name, x.Shape, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, nt)
	}
	if err := nn.WriteSafetensorsFile(dst, out, st.Metadata); err != nil {
		t.Fatal(err)
	}
}
