package allreduce

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Multi-process failure tests: rank 2 of a 3-ring runs in a child process
// (this test binary re-executed), ranks 0 and 1 in the test. The child is
// killed (SIGKILL) or stalled (SIGSTOP) while collectives are running; both
// survivors must fail within the deadline.

const childEnv = "RINGTRAIN_ALLREDUCE_CHILD"

// runChild runs the child rank if this process is one; it reports whether
// it was.
func runChild() bool {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return false
	}
	if err := childMain(spec); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// childMain: spec is "rank,world,shm". Prints "ADDR a", reads the peer
// list from stdin, prints "READY" once the ring is open, then all-reduces
// until a collective fails.
func childMain(spec string) error {
	f := strings.Split(spec, ",")
	rank, _ := strconv.Atoi(f[0])
	world, _ := strconv.Atoi(f[1])
	g, err := NewGRPCTransport(GRPCConfig{HostID: "child-host", DisableSharedMemory: f[2] != "shm"})
	if err != nil {
		return err
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := DefaultConfig("kill", 1, rank, world)
	cfg.Timeout = 2 * time.Second
	r, err := Open(ctx, g, cfg, peers)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	v := make([]float32, 1<<20)
	for step := uint64(0); ; step++ {
		if err := r.AllReduce(context.Background(), Tag{Step: step}, v, Sum); err != nil {
			return nil
		}
	}
}

func TestPeerProcessFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	for _, c := range []struct {
		name string
		sig  syscall.Signal
		shm  bool
	}{
		{"killed", syscall.SIGKILL, false},
		{"killed-shm", syscall.SIGKILL, true},
		{"stalled", syscall.SIGSTOP, false},
	} {
		t.Run(c.name, func(t *testing.T) { testPeerProcess(t, c.sig, c.shm) })
	}
}

func testPeerProcess(t *testing.T, sig syscall.Signal, shm bool) {
	const world = 3
	const deadline = 2 * time.Second
	mode := "tcp"
	if shm {
		mode = "shm"
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=2,%d,%s", childEnv, world, mode))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	out := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		if !out.Scan() || !strings.HasPrefix(out.Text(), prefix) {
			t.Fatalf("child: wanted %q, got %q (%v)", prefix, out.Text(), out.Err())
		}
		return strings.TrimSpace(strings.TrimPrefix(out.Text(), prefix))
	}
	childAddr := expect("ADDR ")

	peers := make([]string, world)
	ts := make([]*GRPCTransport, 2)
	for i := range ts {
		g, err := NewGRPCTransport(GRPCConfig{HostID: "child-host", DisableSharedMemory: !shm})
		if err != nil {
			t.Fatal(err)
		}
		addr, err := g.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		ts[i], peers[i] = g, addr.String()
	}
	peers[2] = childAddr
	fmt.Fprintln(stdin, strings.Join(peers, " "))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rings := make([]*Ring, 2)
	var wg sync.WaitGroup
	for i := range rings {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cfg := DefaultConfig("kill", 1, i, world)
			cfg.Timeout = deadline
			r, err := Open(ctx, ts[i], cfg, peers)
			if err != nil {
				t.Errorf("open rank %d: %v", i, err)
				return
			}
			rings[i] = r
		}(i)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	defer rings[0].Close()
	defer rings[1].Close()
	expect("READY")

	var killedAt time.Time
	var mu sync.Mutex
	failAfter := make([]time.Duration, 2)
	errs := make([]error, 2)
	steps := make([]int, 2)
	// first[i] closes when rank i has finished its first collective: the
	// signal goes out only once both are running (a fixed sleep was too
	// short on a loaded machine).
	first := []chan struct{}{make(chan struct{}), make(chan struct{})}
	for i := range rings {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			v := make([]float32, 1<<20)
			for step := uint64(0); ; step++ {
				if err := rings[i].AllReduce(context.Background(), Tag{Step: step}, v, Sum); err != nil {
					mu.Lock()
					failAfter[i], errs[i] = time.Since(killedAt), err
					mu.Unlock()
					return
				}
				mu.Lock()
				steps[i]++
				if steps[i] == 1 {
					close(first[i])
				}
				mu.Unlock()
			}
		}(i)
	}
	for i := range first {
		select {
		case <-first[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("rank %d: no collective finished within 10s of the ring opening", i)
		}
	}
	mu.Lock()
	killedAt = time.Now()
	mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := range rings {
		t.Logf("rank %d: %d collectives, then failed %v after the signal: %v", i, steps[i], failAfter[i].Round(time.Millisecond), errs[i])
		if steps[i] == 0 {
			t.Errorf("rank %d: no collective finished before the signal", i)
		}
		if failAfter[i] > deadline+time.Second {
			t.Errorf("rank %d: failed %v after the signal; deadline %v", i, failAfter[i], deadline)
		}
	}
	if sig == syscall.SIGSTOP {
		_ = cmd.Process.Signal(syscall.SIGKILL)
	}
	_ = cmd.Wait()
	exited = true
}
