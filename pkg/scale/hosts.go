package scale

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HostsConfig configures emulated hosts.
type HostsConfig struct {
	Hosts int    // number of emulated machines (network namespaces), >= 1
	Rate  string // link rate in tc's syntax, e.g. "1gbit", "200mbit"
	// MTU of the links (default 9000: jumbo frames, as a cluster's
	// data network; 1500 costs ~4% of goodput in headers and more CPU).
	MTU int
	// Queue is how long a packet may wait in a link's tbf queue before it
	// is dropped (tbf latency; default 20 ms). Measured at 500mbit, n=4:
	// ours 42 MB/s busbw with 2 ms, 47-52 MB/s with 20 and 100 ms (noisy).
	Queue time.Duration
	// Log receives the commands run (nil: none).
	Log func(format string, args ...any)
}

// Hosts is a set of emulated machines: network namespaces joined to one
// bridge in the caller's namespace, each by a veth pair rate-limited with
// tbf in both directions (full duplex). Host k has address IPs[k]; the
// bridge (the caller's side, where a coordinator listens) has BridgeIP.
type Hosts struct {
	Names    []string // namespace names
	IPs      []string // host addresses, by host
	BridgeIP string
	RateBits float64 // link rate in bits/s
	MTU      int

	cfg    HostsConfig
	bridge string
	veths  []string
	mu     sync.Mutex // guards closed
	closed bool
}

var hostsSeq atomic.Uint32

// Name patterns: namespaces ringtrain-<pid hex><seq letter>-h<k>, bridge
// rtb<pid hex><seq letter>, veths rtv<pid hex><seq letter><k>; the pid
// lets a later run remove what a killed one left.
var (
	nsPattern   = regexp.MustCompile(`^ringtrain-([0-9a-f]+)[g-z]-h[0-9]+$`)
	linkPattern = regexp.MustCompile(`^rt[bv]([0-9a-f]+)[g-z][0-9]*$`)
)

// ParseRate parses a link rate in tc's syntax (bit, kbit, mbit, gbit,
// tbit; kbps, mbps, gbps are bytes) into bits/s.
func ParseRate(s string) (float64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   float64
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8}, {"bit", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%w: link rate %q (e.g. 1gbit, 200mbit)", ErrInvalid, s)
	}
	return v * mult, nil
}

// CheckRoot says whether emulated hosts can be made here: root, ip and tc.
func CheckRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: running as uid %d", ErrNeedRoot, os.Geteuid())
	}
	for _, t := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%w: %s not found", ErrNeedRoot, t)
		}
	}
	return nil
}

// NewHosts makes cfg.Hosts emulated hosts. On error nothing is left. The
// caller must Close them (also on failure and interruption: Close is safe
// to call from a signal path and more than once).
func NewHosts(ctx context.Context, cfg HostsConfig) (*Hosts, error) {
	if err := CheckRoot(); err != nil {
		return nil, err
	}
	if cfg.Hosts < 1 || cfg.Hosts > 200 {
		return nil, fmt.Errorf("%w: %d emulated hosts (1-200)", ErrInvalid, cfg.Hosts)
	}
	bits, err := ParseRate(cfg.Rate)
	if err != nil {
		return nil, err
	}
	if cfg.MTU == 0 {
		cfg.MTU = 9000
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 20 * time.Millisecond
	}
	if cfg.MTU < 576 || cfg.MTU > 65000 {
		return nil, fmt.Errorf("%w: mtu %d", ErrInvalid, cfg.MTU)
	}
	RemoveStale(ctx)
	seq := hostsSeq.Add(1) - 1
	tag := fmt.Sprintf("%x%c", os.Getpid(), 'g'+rune(seq%20))
	subnet := fmt.Sprintf("10.%d.%d", 200+seq%50, os.Getpid()%250+1)
	h := &Hosts{cfg: cfg, RateBits: bits, MTU: cfg.MTU, bridge: "rtb" + tag, BridgeIP: subnet + ".1"}
	fail := func(err error) (*Hosts, error) {
		h.Close()
		return nil, err
	}
	mtu := strconv.Itoa(cfg.MTU)
	if err := h.run(ctx, "ip", "link", "add", h.bridge, "mtu", mtu, "type", "bridge"); err != nil {
		return fail(err)
	}
	h.veths = append(h.veths, h.bridge) // veths[0]: removed after the others on Close
	if err := h.runAll(ctx, [][]string{
		{"ip", "addr", "add", h.BridgeIP + "/24", "dev", h.bridge},
		{"ip", "link", "set", h.bridge, "up"},
	}); err != nil {
		return fail(err)
	}
	rate, burst := tbfArgs(bits, cfg.MTU)
	for k := 0; k < cfg.Hosts; k++ {
		ns, veth, ip := fmt.Sprintf("ringtrain-%s-h%d", tag, k), fmt.Sprintf("rtv%s%d", tag, k), fmt.Sprintf("%s.%d", subnet, k+2)
		if err := h.run(ctx, "ip", "netns", "add", ns); err != nil {
			return fail(err)
		}
		h.Names = append(h.Names, ns)
		if err := h.run(ctx, "ip", "link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns); err != nil {
			return fail(err)
		}
		h.veths = append(h.veths, veth)
		h.IPs = append(h.IPs, ip)
		tbf := []string{"root", "tbf", "rate", rate, "burst", burst, "latency", fmt.Sprintf("%dus", cfg.Queue.Microseconds())}
		if err := h.runAll(ctx, [][]string{
			{"ip", "link", "set", veth, "master", h.bridge},
			{"ip", "link", "set", veth, "up"},
			{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", ns, "link", "set", "lo", "up"},
			append([]string{"tc", "qdisc", "add", "dev", veth}, tbf...),             // bridge -> host k
			append([]string{"tc", "-n", ns, "qdisc", "add", "dev", "eth0"}, tbf...), // host k -> bridge
		}); err != nil {
			return fail(err)
		}
	}
	return h, nil
}

// tbfArgs are tbf's rate and burst for a link of bits/s: a burst of at
// least 4 ms of traffic and 8 frames (tbf must hold a whole GSO segment
// too, 64 KiB), so that the timer granularity does not cap the rate.
func tbfArgs(bits float64, mtu int) (rate, burst string) {
	b := max(int(bits/8*0.004), 8*mtu, 64<<10+mtu)
	return fmt.Sprintf("%.0fbit", bits), strconv.Itoa(b)
}

func (h *Hosts) runAll(ctx context.Context, cmds [][]string) error {
	for _, c := range cmds {
		if err := h.run(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func (h *Hosts) run(ctx context.Context, name string, args ...string) error {
	if h.cfg.Log != nil {
		h.cfg.Log("%s %s", name, strings.Join(args, " "))
	}
	return runCmd(ctx, name, args...)
}

func runCmd(ctx context.Context, name string, args ...string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scale: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns a command that runs name with args on host k (ip netns
// exec).
func (h *Hosts) Command(ctx context.Context, k int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Names[k], name}, args...)...)
}

// In runs fn on a thread that is in host k's network namespace: sockets
// fn opens (listeners, dials) belong to host k and stay there.
func (h *Hosts) In(k int, fn func() error) error {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	ns, err := os.Open("/var/run/netns/" + h.Names[k])
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("scale: enter %s: %w", h.Names[k], err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with this goroutine: it
		// must not run anything else in the wrong namespace.
		return fmt.Errorf("scale: leave %s: %w", h.Names[k], err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Close removes every namespace, veth and the bridge. It returns the
// first error but always tries everything.
func (h *Hosts) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	del := func(l string) {
		if linkExists(l) {
			if err := h.run(ctx, "ip", "link", "del", l); err != nil && linkExists(l) {
				keep(err)
			}
		}
	}
	// Veths first (deleting one end deletes the pair, so nothing waits on
	// the asynchronous teardown of a namespace), then the namespaces, the
	// bridge (veths[0]) last.
	for i := len(h.veths) - 1; i >= 1; i-- {
		del(h.veths[i])
	}
	for _, ns := range h.Names {
		keep(h.run(ctx, "ip", "netns", "del", ns))
	}
	if len(h.veths) > 0 {
		del(h.veths[0])
	}
	return first
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// Leftovers lists the namespaces and links of emulated hosts present on
// this machine (any process's).
func Leftovers() (namespaces, links []string) {
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range ents {
			if nsPattern.MatchString(e.Name()) {
				namespaces = append(namespaces, e.Name())
			}
		}
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if linkPattern.MatchString(e.Name()) {
				links = append(links, e.Name())
			}
		}
	}
	return namespaces, links
}

// RemoveStale removes the namespaces and links left by processes that no
// longer run (killed before their Close).
func RemoveStale(ctx context.Context) {
	nss, links := Leftovers()
	dead := func(hexPID string) bool {
		pid, err := strconv.ParseInt(hexPID, 16, 64)
		if err != nil || pid <= 0 {
			return false
		}
		err = syscall.Kill(int(pid), 0)
		return err == syscall.ESRCH
	}
	for _, ns := range nss {
		if m := nsPattern.FindStringSubmatch(ns); m != nil && dead(m[1]) {
			_ = runCmd(ctx, "ip", "netns", "del", ns)
		}
	}
	for _, l := range links {
		if m := linkPattern.FindStringSubmatch(l); m != nil && dead(m[1]) && linkExists(l) {
			_ = runCmd(ctx, "ip", "link", "del", l)
		}
	}
}
