package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ringtrain/ringtrain/deploy/cluster"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// component returns the StatefulSet of a component (by its
// app.kubernetes.io/component label) and its only container.
func component(t *testing.T, m *cluster.Manifests, name string) (string, corev1.Container) {
	t.Helper()
	for n, s := range m.StatefulSets {
		if s.Spec.Template.Labels["app.kubernetes.io/component"] == name {
			return n, s.Spec.Template.Spec.Containers[0]
		}
	}
	t.Fatalf("no %s StatefulSet in the release", name)
	return "", corev1.Container{}
}

func pods(set string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", set, i)
	}
	return out
}

// sharedOnHost maps a path under the shared claim's mount (in the worker
// container) to the claim's podman volume on the host.
func (e *env) sharedOnHost(t *testing.T, m *cluster.Manifests, set, path string) string {
	t.Helper()
	spec := m.StatefulSets[set].Spec.Template.Spec
	for _, vm := range spec.Containers[0].VolumeMounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == vm.Name && v.PersistentVolumeClaim != nil {
				return filepath.Join(e.volumePath(t, v.PersistentVolumeClaim.ClaimName), rel)
			}
		}
	}
	t.Fatalf("%s is not on a claim of %s", path, set)
	return ""
}

// jobSpec reads size and epochs back from the rendered job.yaml.
func jobSpec(t *testing.T, m *cluster.Manifests) (size, epochs int) {
	t.Helper()
	for _, cm := range m.ConfigMaps {
		if y, ok := cm.Data["job.yaml"]; ok {
			var j struct {
				Epochs int `json:"epochs"`
				Data   struct {
					SyntheticSize int `json:"synthetic_size"`
				} `json:"data"`
			}
			if err := yaml.Unmarshal([]byte(y), &j); err != nil {
				t.Fatal(err)
			}
			return j.Data.SyntheticSize, j.Epochs
		}
	}
	t.Fatal("no job.yaml in the release")
	return 0, 0
}

// The lines a coordinator and a worker log when the job is done and they
// linger (the chart passes --linger).
const (
	coordLingers  = "the job has ended (done); lingering until stopped"
	workerLingers = "the job is done; lingering until stopped"
)

// waitDone waits until every coordinator and worker pod says the job is
// done and lingers (the chart's --linger: a pod that exited would be
// restarted, forever). Then it checks for lingerWindow that no pod exits
// or restarts and that the coordinators stay ready; then, with
// deletePods, it deletes a coordinator and a worker pod (SIGTERM, as
// kubectl delete pod): each exits 0, is re-created by the StatefulSet
// controller, and lingers again instead of training or exiting (not where
// the coordinator's state is an emptyDir: the job goes with the pod). At
// the end it stops the controller.
func waitDone(t *testing.T, c *cluster.Cluster, coordSet, workerSet string, d time.Duration, deletePods bool) bool {
	t.Helper()
	defer c.Freeze()
	lingering := func(pod string) bool {
		want := workerLingers
		if strings.HasPrefix(pod, coordSet+"-") {
			want = coordLingers
		}
		return strings.Contains(c.Log(context.Background(), pod), want)
	}
	var ours []string
	for _, p := range c.Pods() {
		if strings.HasPrefix(p, coordSet+"-") || strings.HasPrefix(p, workerSet+"-") {
			ours = append(ours, p)
		}
	}
	if !waitFor(t, d, "the job to finish (every coordinator and worker pod lingering)", func() bool {
		for _, p := range ours {
			if !lingering(p) {
				return false
			}
		}
		return true
	}) {
		return false
	}
	at := time.Now()
	time.Sleep(lingerWindow) // an observation window: nothing may happen in it
	ok := true
	for _, ev := range c.Events() {
		if ev.At.After(at) && (ev.What == "exited" || ev.What == "restarted") {
			t.Errorf("LINGER: %s %s %s after the job was done", ev.Pod, ev.What, ev.Note)
			ok = false
		}
	}
	var ready, unready []string
	for _, p := range ours {
		if c.Ready(p) {
			ready = append(ready, p)
		} else {
			unready = append(unready, p)
			if strings.HasPrefix(p, coordSet+"-") {
				t.Errorf("LINGER: coordinator %s not ready while lingering", p)
				ok = false
			}
		}
	}
	t.Logf("LINGER: job done; %d pods up %.0f s later with no exit or restart; ready: %v; not ready: %v",
		len(ours), time.Since(at).Seconds(), ready, unready)
	if !deletePods {
		return ok
	}

	// kubectl delete pod: SIGTERM, exit 0, re-created, lingers again.
	for _, pod := range []string{coordSet + "-0", workerSet + "-0"} {
		want := workerLingers
		if strings.HasPrefix(pod, coordSet+"-") {
			want = coordLingers
		}
		before := strings.Count(c.Log(context.Background(), pod), want)
		sent := time.Now()
		if err := c.Signal(context.Background(), pod, "TERM"); err != nil {
			t.Error(err)
			ok = false
			continue
		}
		var exit string
		if !waitFor(t, time.Minute, pod+" exiting after SIGTERM, re-created, lingering again", func() bool {
			for _, ev := range c.Events() {
				if ev.Pod == pod && ev.What == "exited" && ev.At.After(sent) {
					exit = ev.Note
				}
			}
			return exit != "" && strings.Count(c.Log(context.Background(), pod), want) > before
		}) {
			ok = false
			continue
		}
		if !strings.HasSuffix(exit, "exit code 0") {
			t.Errorf("LINGER: %s after SIGTERM: %s, want exit code 0", pod, exit)
			ok = false
		}
		if log := c.Log(context.Background(), pod); strings.Contains(log[strings.Index(log, want):], `"msg":"training"`) {
			t.Errorf("LINGER: %s trained after its restart on a done job", pod)
			ok = false
		}
		t.Logf("LINGER: %s SIGTERMed: %s; re-created, lingering again after %.1f s", pod, exit, time.Since(sent).Seconds())
	}
	return ok
}

// lingerWindow is how long the pods of a done job are watched for exits
// and restarts (a pod that exited at the end would be restarted within a
// second here).
const lingerWindow = 15 * time.Second

func trainWithDrills(t *testing.T, e *env, sum *summary) {
	c, m := e.install(t, "testdata/values.yaml", "rt-e2e", 71)
	ctx := context.Background()
	coordSet, coordCtr := component(t, m, "coordinator")
	workerSet, workerCtr := component(t, m, "worker")
	etcdSet, _ := component(t, m, "etcd")
	size, epochs := jobSpec(t, m)
	out := e.sharedOnHost(t, m, workerSet, arg(t, m, coordSet, "output"))
	stepsPath := filepath.Join(out, "steps.jsonl")
	coordPods := pods(coordSet, int(*m.StatefulSets[coordSet].Spec.Replicas))
	controlPort := fmt.Sprint(coordCtr.Ports[0].ContainerPort)

	var first time.Time
	for _, ev := range c.Events() {
		if ev.What == "started" && (first.IsZero() || ev.At.Before(first)) {
			first = ev.At
		}
	}
	if !waitFor(t, 3*time.Minute, "the first training step", func() bool { n, _ := steps(stepsPath); return n > 0 }) {
		t.FailNow()
	}
	sum.firstStep = time.Since(first)
	t.Logf("first step %.1f s after the first container started", sum.firstStep.Seconds())

	// drill runs act, then waits until pod was restarted (or replaced),
	// is ready again and the job has committed 3 more steps.
	drill := func(name, pod string, act func() error) {
		t.Helper()
		_, before := steps(stepsPath)
		restarts := c.Restarts(pod)
		at := time.Now()
		if err := act(); err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		sum.kills++
		if waitFor(t, 3*time.Minute, name+": the pod back, ready, and 3 more steps", func() bool {
			_, s := steps(stepsPath)
			return c.Restarts(pod) > restarts && c.Ready(pod) && s >= before+3
		}) {
			sum.recovered++
			_, s := steps(stepsPath)
			t.Logf("%s (%s at step %d): recovered in %.1f s, now step %d", name, pod, before, time.Since(at).Seconds(), s)
		}
	}
	kill := func(pod string) func() error { return func() error { return c.Signal(ctx, pod, "KILL") } }

	// The probes first, while every pod is up.
	lead, _ := e.leader(t, c, coordPods, controlPort)
	probes(t, c, workerSet, workerCtr, coordPods, coordCtr, lead)
	drill("SIGKILL a worker", workerSet+"-1", kill(workerSet+"-1"))
	lead, term := e.leader(t, c, coordPods, controlPort)
	if lead == "" {
		t.Fatal("no coordinator names a raft leader")
	}
	drill("SIGKILL the raft leader", lead, kill(lead))
	// The StatefulSet restarts the killed pod at once, so it may win the
	// election again: what must hold is that an election happened (the
	// term advanced) and some replica leads.
	if l, now := e.leader(t, c, coordPods, controlPort); l == "" || now <= term {
		t.Errorf("leader after the kill: %q in term %d (was %s in term %d): no new election", l, now, lead, term)
	} else {
		t.Logf("leader after the kill: %s in term %d (was %s in term %d)", l, now, lead, term)
	}
	etcdPod := etcdSet + "-0"
	drill("stop etcd for 5 s, then start it", etcdPod, func() error {
		c.Hold(etcdPod, 5*time.Second)
		_, err := e.st.Podman(ctx, "stop", "--time", "10", etcdPod)
		return err
	})

	// kubectl scale statefulset/<worker> --replicas=4, then 2.
	scale := func(n int) {
		_, before := steps(stepsPath)
		at := time.Now()
		if err := c.Scale(ctx, workerSet, n); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Minute, fmt.Sprintf("training with %d workers", n), func() bool {
			_, s := steps(stepsPath)
			if s < before+3 {
				return false
			}
			for _, l := range trainingLines(c, workerSet) {
				if l["world"] == float64(n) && logTime(l).After(at) {
					return true
				}
			}
			return false
		})
		_, s := steps(stepsPath)
		t.Logf("scaled to %d: training with %d workers after %.1f s, step %d", n, n, time.Since(at).Seconds(), s)
	}
	scale(4)
	scale(2)

	if !waitDone(t, c, coordSet, workerSet, 20*time.Minute, true) {
		t.FailNow()
	}
	names := map[string]bool{}
	for _, ev := range c.Events() {
		if ev.What == "started" {
			names[ev.Pod] = true
		}
	}
	sum.pods = len(names)

	// The outputs on the shared claim.
	for _, f := range []string{"model.safetensors", "history.json", "steps.jsonl"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("output %s: %v", f, err)
		}
	}
	var h struct {
		Epochs []json.RawMessage `json:"epochs"`
	}
	if b, err := os.ReadFile(filepath.Join(out, "history.json")); err != nil || json.Unmarshal(b, &h) != nil || len(h.Epochs) != epochs {
		t.Errorf("history.json: %d epochs, want %d (%v)", len(h.Epochs), epochs, err)
	}
	recs, err := worker.ReadSampleLogs(e.sharedOnHost(t, m, workerSet, envValue(t, workerCtr, "RINGTRAIN_SAMPLE_LOG")))
	if err != nil {
		t.Fatal(err)
	}
	a := worker.AuditSamples(recs, size, epochs)
	sum.lost, sum.duplicated = a.Lost, a.Duplicated
	t.Logf("sample audit: %+v", a)
	if a.Epochs != epochs || len(a.IncompleteSteps) != 0 {
		t.Errorf("audit: %d epochs (want %d), incomplete steps %v", a.Epochs, epochs, a.IncompleteSteps)
	}
	e.checkpoints(t, c, m, coordSet)
	torchLoads(t, filepath.Join(out, "model.safetensors"), m)
}

func envValue(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	t.Fatalf("container %s has no env %s", c.Name, name)
	return ""
}

func logTime(m map[string]any) time.Time {
	s, _ := m["ts"].(string)
	for _, layout := range []string{"2006-01-02T15:04:05.000Z0700", time.RFC3339Nano} {
		if ts, err := time.Parse(layout, s); err == nil {
			return ts
		}
	}
	return time.Time{}
}

// probes exercises the chart's probes as the kubelet runs them (the
// cluster's prober uses each probe's port, path, period, timeout and
// thresholds): a worker stalled with SIGSTOP must be reported unready
// while the others stay ready, and ready again after SIGCONT. Where the
// chart gives a container no readiness probe, or a TCP one (which a
// stopped process still passes: the kernel completes the handshake), the
// test says so instead.
func probes(t *testing.T, c *cluster.Cluster, workerSet string, workerCtr corev1.Container, coordPods []string, coordCtr corev1.Container, leader string) {
	ctx := context.Background()
	stall := func(pod string, ctr corev1.Container) {
		rp := ctr.ReadinessProbe
		if rp == nil {
			t.Logf("PROBES: %s has no readiness probe in the chart: a stalled process is not reported unready", pod)
			return
		}
		period, fails := max(rp.PeriodSeconds, 1), max(rp.FailureThreshold, 1)
		window := time.Duration(period*fails+max(rp.TimeoutSeconds, 1)+2) * time.Second
		if !waitFor(t, time.Minute, pod+" ready before the stall", func() bool { return c.Ready(pod) }) {
			return
		}
		if err := c.Signal(ctx, pod, "STOP"); err != nil {
			t.Error(err)
			return
		}
		at := time.Now()
		unready := false
		for time.Since(at) < window+3*time.Second && !unready {
			unready = !c.Ready(pod)
			time.Sleep(200 * time.Millisecond)
		}
		_ = c.Signal(ctx, pod, "CONT")
		kind := "tcpSocket"
		if rp.HTTPGet != nil {
			kind = "httpGet " + rp.HTTPGet.Path
		}
		// The healthy pods of the same StatefulSet, as the prober sees them
		// when the stalled one is reported unready.
		var healthy, notReady []string
		for _, p := range c.Pods() {
			if p != pod && strings.TrimRight(p, "0123456789") == strings.TrimRight(pod, "0123456789") {
				if c.Ready(p) {
					healthy = append(healthy, p)
				} else {
					notReady = append(notReady, p)
				}
			}
		}
		switch {
		case unready:
			t.Logf("PROBES: %s SIGSTOPped: reported unready after %.1f s (readiness %s, period %d s, threshold %d); ready meanwhile: %v, not ready: %v",
				pod, time.Since(at).Seconds(), kind, period, fails, healthy, notReady)
			if len(healthy) == 0 {
				t.Errorf("no healthy pod of %s reported ready while %s was stalled", strings.TrimRight(pod, "0123456789"), pod)
			}
		case rp.TCPSocket != nil:
			t.Logf("PROBES: %s SIGSTOPped for %.0f s: still ready under its tcpSocket readiness probe (the kernel accepts for a stopped process)",
				pod, window.Seconds())
		default:
			t.Errorf("%s SIGSTOPped for %.0f s: still reported ready (readiness %s)", pod, window.Seconds(), kind)
		}
		waitFor(t, 2*time.Minute, pod+" ready again after SIGCONT", func() bool { return c.Ready(pod) })
	}
	stall(workerSet+"-0", workerCtr)
	follower := coordPods[0]
	if follower == leader {
		follower = coordPods[1]
	}
	stall(follower, coordCtr)
	for _, p := range c.Pods() {
		if !c.Ready(p) {
			t.Logf("PROBES: %s not ready at the end of the probe drill", p)
		}
	}
}

// checkpoints lists the job's checkpoints the way the chart's NOTES tell a
// user to (`coordinator checkpoints` against the release's etcd and shared
// claim, with the rendered flags), in a one-off container on the cluster
// network, and wants at least one, each verified.
func (e *env) checkpoints(t *testing.T, c *cluster.Cluster, m *cluster.Manifests, coordSet string) {
	t.Helper()
	s := m.StatefulSets[coordSet]
	ctr := s.Spec.Template.Spec.Containers[0]
	var claim, mount string
	for _, vm := range ctr.VolumeMounts {
		for _, v := range s.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.PersistentVolumeClaim != nil {
				claim, mount = v.PersistentVolumeClaim.ClaimName, vm.MountPath
			}
		}
	}
	var jobName string
	for _, cm := range m.ConfigMaps {
		if y, ok := cm.Data["job.yaml"]; ok {
			var j struct {
				Name string `json:"name"`
			}
			_ = yaml.Unmarshal([]byte(y), &j)
			jobName = j.Name
		}
	}
	args := []string{"run", "--rm", "--network", "rt-e2e", "--pull", "never", "--user", "65532:65532",
		"--volume", claim + ":" + mount, "--entrypoint", ctr.Command[0], ctr.Image, "checkpoints",
		"--etcd-endpoints", arg(t, m, coordSet, "etcd-endpoints"), "--job", jobName, "--output", arg(t, m, coordSet, "output"),
		"--state-dir", "/tmp/state"}
	outp, err := e.st.Podman(context.Background(), args...)
	if err != nil {
		t.Errorf("coordinator checkpoints: %v", err)
		return
	}
	t.Logf("coordinator checkpoints:\n%s", outp)
	lines := strings.Split(strings.TrimSpace(outp), "\n")
	if len(lines) < 2 {
		t.Errorf("no checkpoints listed")
	}
	for _, l := range lines[1:] {
		if strings.Contains(l, "NO:") {
			t.Errorf("a checkpoint does not verify: %s", l)
		}
	}
}

// torchLoads loads the final model into a PyTorch ResNet of the job's
// shape (torchvision's BasicBlock, the job's width and stem) with strict
// names and shapes, and runs a forward pass; it skips, saying so, when
// python3 has no torch.
func torchLoads(t *testing.T, model string, m *cluster.Manifests) {
	t.Helper()
	// Debian's python3-torch is for Debian's python3, not one earlier on PATH.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = "python3"
	}
	if err := exec.Command(py, "-c", "import torch, torchvision").Run(); err != nil {
		t.Logf("PYTORCH: python3 with torch and torchvision not available; the model was not loaded in PyTorch")
		return
	}
	var width float64
	var stem string
	for _, cm := range m.ConfigMaps {
		if y, ok := cm.Data["job.yaml"]; ok {
			var j struct {
				Model struct {
					Width float64 `json:"width"`
					Stem  string  `json:"stem"`
				} `json:"model"`
			}
			_ = yaml.Unmarshal([]byte(y), &j)
			width, stem = j.Model.Width, j.Model.Stem
		}
	}
	out, err := exec.Command(py, "-c", torchScript, model, fmt.Sprint(width), stem).CombinedOutput()
	if err != nil {
		t.Errorf("the model does not load in PyTorch: %v\n%s", err, out)
		return
	}
	t.Logf("PYTORCH: %s", strings.TrimSpace(string(out)))
}

const torchScript = `
import json, struct, sys, torch, torch.nn as nn
from torchvision.models.resnet import BasicBlock
path, width, stem = sys.argv[1], float(sys.argv[2]), sys.argv[3]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
dt = {"F32": torch.float32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16}
sd = {k: torch.frombuffer(bytearray(data[v["data_offsets"][0]:v["data_offsets"][1]]), dtype=dt[v["dtype"]]).reshape(v["shape"])
      for k, v in hdr.items() if k != "__metadata__"}
c = [max(1, int(round(p * width))) for p in (64, 128, 256, 512)]
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, c[0], 3, 1, 1, bias=False); self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, c[0], 7, 2, 3, bias=False); self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(c[0]); self.relu = nn.ReLU(inplace=True)
        inp = c[0]
        for i, (p, s) in enumerate(zip(c, (1, 2, 2, 2))):
            blocks = []
            for j in range(2):
                st = s if j == 0 else 1
                ds = nn.Sequential(nn.Conv2d(inp, p, 1, st, bias=False), nn.BatchNorm2d(p)) if st != 1 or inp != p else None
                blocks.append(BasicBlock(inp, p, st, ds)); inp = p
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1); self.fc = nn.Linear(c[3], 10)
    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
net = Net()
net.load_state_dict(sd, strict=True)
net.eval()
y = net(torch.randn(2, 3, 32, 32))
assert torch.isfinite(y).all()
print("model.safetensors loads into a PyTorch ResNet-18 (width %g, %s stem) with strict names and shapes: %d tensors, output %s" % (width, stem, len(sd), tuple(y.shape)))
`

// nodes runs the multi-GPU-node layout: two worker pods ("nodes") with two
// worker processes each (worker.procsPerPod: 2, a memory-backed /dev/shm),
// and checks the ring's own report (the "training" line of every worker:
// link_right, link_left): links between the processes of one pod go
// through shared memory, links between pods over TCP.
func nodes(t *testing.T, e *env) {
	c, m := e.install(t, "testdata/nodes.yaml", "rt-nodes", 72)
	workerSet, _ := component(t, m, "worker")
	coordSet, _ := component(t, m, "coordinator")
	type member struct {
		id, pod, right, left string
	}
	var ring map[int]member
	waitFor(t, 5*time.Minute, "4 workers training", func() bool {
		ring = map[int]member{}
		for _, l := range trainingLines(c, workerSet) {
			if l["world"] != float64(4) {
				continue
			}
			r := int(l["rank"].(float64))
			if _, seen := ring[r]; seen {
				continue // the first ring of 4
			}
			id, _ := l["worker"].(string)
			right, _ := l["link_right"].(string)
			left, _ := l["link_left"].(string)
			ring[r] = member{id: id, pod: l["_pod"].(string), right: right, left: left}
		}
		return len(ring) == 4
	})
	keys := make([]int, 0, len(ring))
	for r := range ring {
		keys = append(keys, r)
	}
	sort.Ints(keys)
	shm, tcp := 0, 0
	for _, r := range keys {
		w := ring[r]
		next, prev := ring[(r+1)%4], ring[(r+3)%4]
		t.Logf("RING: rank %d %s (pod %s): right -> %s %s, left <- %s %s", r, w.id, w.pod, next.id, w.right, prev.id, w.left)
		want := func(other member) string {
			if other.pod == w.pod {
				return "shm"
			}
			return "stream"
		}
		if w.right != want(next) || w.left != want(prev) {
			t.Errorf("rank %d (%s on %s): links right %q left %q, want %q %q", r, w.id, w.pod, w.right, w.left, want(next), want(prev))
		}
		if w.right == "shm" {
			shm++
		} else {
			tcp++
		}
	}
	if shm != 2 || tcp != 2 {
		t.Errorf("ring of 2 pods x 2 processes: %d shared-memory and %d TCP links, want 2 and 2", shm, tcp)
	}
	t.Logf("RING: 2 pods x 2 processes: %d links through shared memory (within a pod), %d over TCP (between pods)", shm, tcp)
	waitDone(t, c, coordSet, workerSet, 5*time.Minute, false)
}
