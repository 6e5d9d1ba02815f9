// Package cluster runs a rendered Helm release as podman containers on
// one podman network, as a small Kubernetes would: every pod of every
// StatefulSet a container (translated from the manifests by RunArgs: the
// rendered command, args, env, volume mounts, security context and limits),
// every headless Service name and stable pod DNS name a network alias
// (aardvark-dns answers them), every PersistentVolumeClaim and
// volumeClaimTemplate a podman volume owned by the pod's fsGroup, every
// ConfigMap and Secret a read-only directory of its keys.
//
// It also plays the controllers: the StatefulSet controller (a pod whose
// container exited is deleted and created again under the same name, with
// a new IP, keeping its claims; Scale adds the next ordinals or deletes the
// highest ones with their grace period, as `kubectl scale` leads to) and the
// kubelet's prober (startup, liveness and readiness probes on the pod IP
// with the manifest's port, path, period and thresholds; a failed liveness
// or startup probe restarts the container).
//
// Promises: nothing of the manifests is restated here; anything the
// emulation cannot carry out (a kind, a volume type, a GPU limit) is an
// ErrUnsupported error naming it, never ignored. Close removes every
// container, volume and the network it created, also after a failure.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ringtrain/ringtrain/deploy/podman"
)

// Options configure an emulated cluster.
type Options struct {
	Store     *podman.Store
	Manifests *Manifests
	Network   string       // podman network name (created)
	Subnet    netip.Prefix // its subnet; pods get addresses from .10 up
	Domain    string       // cluster DNS domain (default cluster.local)
	WorkDir   string       // ConfigMap and Secret files, saved logs
	Logf      func(format string, args ...any)
}

// Event is something the controllers did or saw.
type Event struct {
	At   time.Time
	Pod  string
	What string // started, exited, restarted, deleted, ready, unready, liveness-failed, ...
	Note string
}

// pod is one pod's current incarnation.
type pod struct {
	run      PodRun
	started  time.Time
	restarts int
	quick    int // consecutive exits within 10 s of starting (back-off)
	ready    bool
	probes   context.CancelFunc // stops this incarnation's prober
	holdTill time.Time          // no restart before (Hold)
	deleting bool
}

// Cluster is a running emulated cluster.
type Cluster struct {
	o    Options
	dirs map[string]string

	mu       sync.Mutex // guards pods, replicas, nextIP, events, closed
	pods     map[string]*pod
	replicas map[string]int
	nextIP   netip.Addr
	events   []Event
	closed   bool

	stop   context.CancelFunc
	done   chan struct{}
	freeze sync.Once
}

// Start creates the network, the claims, the ConfigMap and Secret files,
// and every StatefulSet's pods (all at once: the chart's pods are
// podManagementPolicy Parallel; OrderedReady sets start pod i+1 when pod i
// is ready), then runs the controllers until Close.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Domain == "" {
		o.Domain = "cluster.local"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	c := &Cluster{o: o, dirs: map[string]string{}, pods: map[string]*pod{}, replicas: map[string]int{},
		nextIP: o.Subnet.Masked().Addr().Next().Next().Next().Next().Next().Next().Next().Next().Next().Next(), done: make(chan struct{})}
	if _, err := o.Store.Podman(ctx, "network", "create", "--subnet", o.Subnet.String(), o.Network); err != nil {
		return nil, err
	}
	fail := func(err error) (*Cluster, error) {
		_ = c.Close()
		return nil, err
	}
	m := o.Manifests
	for name, pvc := range m.PVCs {
		if err := c.claim(ctx, name, nil); err != nil {
			return fail(fmt.Errorf("claim %s: %w", pvc.Name, err))
		}
	}
	for name, cm := range m.ConfigMaps {
		files := map[string][]byte{}
		for k, v := range cm.Data {
			files[k] = []byte(v)
		}
		for k, v := range cm.BinaryData {
			files[k] = v
		}
		if err := c.writeDir("configmap-"+name, name, files); err != nil {
			return fail(err)
		}
	}
	for name, s := range m.Secrets {
		files := map[string][]byte{}
		for k, v := range s.Data {
			files[k] = v
		}
		for k, v := range s.StringData {
			files[k] = []byte(v)
		}
		if err := c.writeDir("secret-"+name, name, files); err != nil {
			return fail(err)
		}
	}
	sets := make([]string, 0, len(m.StatefulSets))
	for n := range m.StatefulSets {
		sets = append(sets, n)
	}
	sort.Strings(sets)
	for _, n := range sets {
		set := m.StatefulSets[n]
		if _, err := container(set); err != nil {
			return fail(err)
		}
		r := 1
		if set.Spec.Replicas != nil {
			r = int(*set.Spec.Replicas)
		}
		c.replicas[n] = r
	}
	// The StatefulSet controller works on every set at once, as Kubernetes
	// does (the coordinators do not wait for the etcd pod).
	errs := make(chan error, len(sets))
	for _, n := range sets {
		go func() { errs <- c.reconcileSet(ctx, n) }()
	}
	var first error
	for range sets {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return fail(first)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go c.control(cctx)
	return c, nil
}

// writeDir writes a ConfigMap's or Secret's keys as files (0644, as the
// kubelet's default mode) into a directory mounted read-only.
func (c *Cluster) writeDir(dir, name string, files map[string][]byte) error {
	d := filepath.Join(c.o.WorkDir, dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	for k, v := range files {
		if strings.Contains(k, "/") {
			return fmt.Errorf("%s: key %q", name, k)
		}
		if err := os.WriteFile(filepath.Join(d, k), v, 0o644); err != nil {
			return err
		}
	}
	c.dirs[name] = d
	return nil
}

// claim creates the podman volume of a claim (unless it exists) and makes
// it group-owned by fsGroup with the setgid bit, as the kubelet does for a
// pod with an fsGroup.
func (c *Cluster) claim(ctx context.Context, name string, fsGroup *int64) error {
	if _, err := c.o.Store.Podman(ctx, "volume", "exists", name); err != nil {
		if _, err := c.o.Store.Podman(ctx, "volume", "create", "--label", "io.ringtrain.cluster="+c.o.Network, name); err != nil {
			return err
		}
	}
	if fsGroup == nil {
		return nil
	}
	mp, err := c.o.Store.Podman(ctx, "volume", "inspect", "--format", "{{.Mountpoint}}", name)
	if err != nil {
		return err
	}
	if err := os.Chown(mp, 0, int(*fsGroup)); err != nil {
		return err
	}
	return os.Chmod(mp, 0o775|os.ModeSetgid)
}

// Scale sets a StatefulSet's replicas, as `kubectl scale` does: new
// ordinals are created; the highest ones are stopped with their grace
// period (SIGTERM, then SIGKILL) and deleted, keeping their claims.
func (c *Cluster) Scale(ctx context.Context, set string, n int) error {
	c.mu.Lock()
	if _, ok := c.replicas[set]; !ok {
		c.mu.Unlock()
		return fmt.Errorf("cluster: no StatefulSet %s", set)
	}
	c.replicas[set] = n
	c.mu.Unlock()
	c.event(set, "scaled", strconv.Itoa(n))
	return c.reconcileSet(ctx, set)
}

// reconcileSet creates missing pods below replicas and deletes those at or
// above it (highest first).
func (c *Cluster) reconcileSet(ctx context.Context, name string) error {
	set := c.o.Manifests.StatefulSets[name]
	c.mu.Lock()
	want := c.replicas[name]
	var extra []string
	for pn, p := range c.pods {
		if p.run.Set.Name == name && p.run.Ordinal >= want && !p.deleting {
			p.deleting = true
			extra = append(extra, pn)
		}
	}
	c.mu.Unlock()
	sort.Sort(sort.Reverse(sort.StringSlice(extra)))
	for _, pn := range extra {
		if err := c.deletePod(ctx, pn, grace(set.Spec.Template.Spec)); err != nil {
			return err
		}
	}
	parallel := set.Spec.PodManagementPolicy == appsv1.ParallelPodManagement
	errs := make(chan error, want)
	started := 0
	for i := 0; i < want; i++ {
		pn := fmt.Sprintf("%s-%d", name, i)
		c.mu.Lock()
		_, exists := c.pods[pn]
		c.mu.Unlock()
		if exists {
			continue
		}
		if parallel { // every missing pod at once
			started++
			go func() { errs <- c.createPod(ctx, set.Name, i) }()
			continue
		}
		// OrderedReady: pod i+1 once pod i is ready.
		if err := c.createPod(ctx, set.Name, i); err != nil {
			return err
		}
		if err := c.WaitReady(ctx, pn, 5*time.Minute); err != nil {
			return err
		}
	}
	var first error
	for ; started > 0; started-- {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func grace(spec corev1.PodSpec) time.Duration {
	if spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// allocIP returns the next free address of the subnet.
func (c *Cluster) allocIP() (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ip := c.nextIP
	if !c.o.Subnet.Contains(ip.Next()) {
		return netip.Addr{}, fmt.Errorf("cluster: subnet %s exhausted", c.o.Subnet)
	}
	c.nextIP = ip.Next()
	return ip, nil
}

// createPod creates and starts the container of pod <set>-<ordinal>.
func (c *Cluster) createPod(ctx context.Context, setName string, ordinal int) error {
	set := c.o.Manifests.StatefulSets[setName]
	ip, err := c.allocIP()
	if err != nil {
		return err
	}
	run := PodRun{Set: set, Ordinal: ordinal, IP: ip.String(), Network: c.o.Network, Domain: c.o.Domain, Dirs: c.dirs}
	var fsGroup *int64
	if sc := set.Spec.Template.Spec.SecurityContext; sc != nil {
		fsGroup = sc.FSGroup
	}
	for _, t := range set.Spec.VolumeClaimTemplates {
		if err := c.claim(ctx, ClaimVolume(t.Name, run.Name()), fsGroup); err != nil {
			return err
		}
	}
	if fsGroup != nil {
		for _, v := range set.Spec.Template.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				if err := c.claim(ctx, v.PersistentVolumeClaim.ClaimName, fsGroup); err != nil {
					return err
				}
			}
		}
	}
	args, err := c.o.Manifests.RunArgs(run)
	if err != nil {
		return err
	}
	if _, err := c.o.Store.Podman(ctx, append([]string{"run"}, args...)...); err != nil {
		return fmt.Errorf("cluster: start %s: %w", run.Name(), err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	p := c.pods[run.Name()]
	if p == nil {
		p = &pod{}
		c.pods[run.Name()] = p
	}
	p.run, p.started, p.ready, p.probes = run, time.Now(), false, cancel
	c.mu.Unlock()
	c.event(run.Name(), "started", run.IP)
	ctr, _ := container(set)
	go c.probe(pctx, run.Name(), run.IP, ctr)
	return nil
}

// deletePod stops a pod (SIGTERM, SIGKILL after grace), saves its log and
// removes its container; its claims stay.
func (c *Cluster) deletePod(ctx context.Context, name string, grace time.Duration) error {
	c.mu.Lock()
	p := c.pods[name]
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	p.probes()
	_, err := c.o.Store.Podman(ctx, "stop", "--time", strconv.Itoa(int(grace/time.Second)), name)
	c.saveLog(ctx, name)
	if _, rerr := c.o.Store.Podman(ctx, "rm", "--force", "--time", "0", name); rerr != nil && err == nil {
		err = rerr
	}
	c.mu.Lock()
	delete(c.pods, name)
	c.mu.Unlock()
	c.event(name, "deleted", "")
	return err
}

// saveLog appends the container's log to WorkDir/logs/<pod>.log.
func (c *Cluster) saveLog(ctx context.Context, name string) {
	cmd := c.o.Store.Cmd(ctx, "podman", "logs", name)
	out, _ := cmd.CombinedOutput()
	d := filepath.Join(c.o.WorkDir, "logs")
	_ = os.MkdirAll(d, 0o755)
	f, err := os.OpenFile(filepath.Join(d, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(out)
}

// Log returns everything pod name wrote: earlier incarnations (saved when
// they were replaced) and the current one.
func (c *Cluster) Log(ctx context.Context, name string) string {
	old, _ := os.ReadFile(filepath.Join(c.o.WorkDir, "logs", name+".log"))
	cur, _ := c.o.Store.Cmd(ctx, "podman", "logs", name).CombinedOutput()
	return string(old) + string(cur)
}

// Pods lists the pods that exist now, by name.
func (c *Cluster) Pods() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.pods {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// PodIP is the current address of pod name ("" when it does not exist).
func (c *Cluster) PodIP(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.pods[name]; p != nil {
		return p.run.IP
	}
	return ""
}

// Ready reports the pod's readiness as the prober last saw it.
func (c *Cluster) Ready(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pods[name]
	return p != nil && p.ready
}

// Restarts is how often the pod was restarted (re-created).
func (c *Cluster) Restarts(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.pods[name]; p != nil {
		return p.restarts
	}
	return 0
}

// WaitReady waits until pod name is ready.
func (c *Cluster) WaitReady(ctx context.Context, name string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !c.Ready(name) {
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %s not ready after %s", name, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// Signal sends sig (KILL, STOP, CONT, TERM) to the pod's main process.
func (c *Cluster) Signal(ctx context.Context, name, sig string) error {
	_, err := c.o.Store.Podman(ctx, "kill", "--signal", sig, name)
	if err == nil {
		c.event(name, "signal", sig)
	}
	return err
}

// Hold keeps the controller from restarting pod name before d has passed
// (a node that stays down a while).
func (c *Cluster) Hold(name string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.pods[name]; p != nil {
		p.holdTill = time.Now().Add(d)
	}
}

// Events returns what happened so far.
func (c *Cluster) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

func (c *Cluster) event(pod, what, note string) {
	e := Event{At: time.Now(), Pod: pod, What: what, Note: note}
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	c.o.Logf("%s %s %s %s", e.At.Format("15:04:05.000"), pod, what, note)
}

// control is the StatefulSet controller: every 500 ms it re-creates the
// pods whose container is no longer running (restartPolicy Always), with
// the same name and claims and a new IP.
func (c *Cluster) control(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		out, err := c.o.Store.Podman(ctx, "ps", "-a", "--filter", "label=io.ringtrain.cluster.pod", "--format", "json")
		if err != nil {
			continue
		}
		var ps []struct {
			Names []string
			State string
		}
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			c.o.Logf("podman ps: %v", err)
			continue
		}
		state := map[string]string{}
		for _, p := range ps {
			for _, n := range p.Names {
				state[n] = p.State
			}
		}
		for _, name := range c.Pods() {
			c.mu.Lock()
			p := c.pods[name]
			skip := p == nil || p.deleting || time.Now().Before(p.holdTill)
			c.mu.Unlock()
			if skip {
				continue
			}
			s, listed := state[name]
			if !listed || s == "running" || s == "paused" || s == "created" || s == "configured" || s == "stopping" {
				continue
			}
			c.restart(ctx, name, s)
		}
	}
}

// restart replaces the exited pod name.
func (c *Cluster) restart(ctx context.Context, name, state string) {
	c.mu.Lock()
	p := c.pods[name]
	c.mu.Unlock()
	code, _ := c.o.Store.Podman(ctx, "inspect", "--format", "{{.State.ExitCode}}", name)
	c.event(name, "exited", fmt.Sprintf("state %s, exit code %s", state, code))
	p.probes()
	c.saveLog(ctx, name)
	if _, err := c.o.Store.Podman(ctx, "rm", "--force", "--time", "0", name); err != nil {
		c.o.Logf("remove %s: %v", name, err)
	}
	c.mu.Lock()
	p.restarts++
	// The kubelet's back-off: a container that ran 10 s or more restarts
	// at once; one that keeps exiting sooner waits 10 s, 20 s, ... (60 s
	// at most here; 5 min in Kubernetes) — never a tight crash loop.
	if time.Since(p.started) < 10*time.Second {
		p.quick++
	} else {
		p.quick = 0
	}
	wait := time.Duration(0)
	if p.quick > 0 {
		wait = min(10*time.Second<<(p.quick-1), 60*time.Second)
	}
	c.mu.Unlock()
	if wait > 0 {
		c.event(name, "back-off", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	if err := c.createPod(ctx, p.run.Set.Name, p.run.Ordinal); err != nil {
		c.o.Logf("re-create %s: %v", name, err)
		return
	}
	c.event(name, "restarted", fmt.Sprintf("restart %d", p.restarts))
}

// Freeze stops the StatefulSet controller: from now on an exited pod stays
// exited (for a job that is done, where Kubernetes would keep restarting
// the pods of a StatefulSet).
func (c *Cluster) Freeze() {
	c.freeze.Do(func() {
		if c.stop != nil {
			c.stop()
			<-c.done
		}
	})
}

// Exited returns the exit events (pod and note) seen so far whose exit
// code was code.
func (c *Cluster) Exited(code int) []Event {
	var out []Event
	for _, e := range c.Events() {
		if e.What == "exited" && strings.HasSuffix(e.Note, fmt.Sprintf("exit code %d", code)) {
			out = append(out, e)
		}
	}
	return out
}

// Close stops the controllers and removes every container, volume and the
// network of the cluster.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for _, p := range c.pods {
		if p.probes != nil {
			p.probes()
		}
	}
	c.mu.Unlock()
	c.Freeze()
	ctx := context.Background()
	var errs []error
	for _, name := range c.Pods() {
		c.saveLog(ctx, name)
	}
	// podman rm can fail once with "device or resource busy" when a
	// container's /dev/shm is still being unmounted; the same call a moment
	// later succeeds, so it is retried a few times before it is an error.
	var err error
	for try := 0; try < 4; try++ {
		if try > 0 {
			time.Sleep(time.Duration(try) * time.Second)
		}
		if _, err = c.o.Store.Podman(ctx, "rm", "--all", "--force", "--time", "0"); err == nil {
			break
		}
	}
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := c.o.Store.Podman(ctx, "volume", "rm", "--all", "--force"); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.o.Store.Podman(ctx, "network", "rm", "--force", c.o.Network); err != nil {
		errs = append(errs, err)
	}
	// netavark keeps its bridges, firewall rules and aardvark-dns state in
	// the host's /run/containers/networks whatever the store, and tears
	// them down only with the last container of the network: a container
	// that failed to go leaves them on the host, where the next network on
	// the subnet fails. Say so rather than leave it silently.
	if err := hostLeftover(c.o.Subnet); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// hostLeftover reports a host interface that still has an address in
// subnet.
func hostLeftover(subnet netip.Prefix) error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("cluster: list host interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && subnet.Contains(ip.Unmap()) {
				return fmt.Errorf("cluster: interface %s still has %s of the removed network on the host (remove it with ip link delete %s)", ifc.Name, ip.Unmap(), ifc.Name)
			}
		}
	}
	return nil
}
