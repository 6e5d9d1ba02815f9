// Package helm_test renders the ringtrain chart with Helm's own Go SDK (the
// loader, chartutil, the template engine in strict mode, and the linter) and
// checks the manifests as typed Kubernetes objects: the StatefulSets, their
// arguments (raft peers, coordinator addresses), GPU limits, the bundled etcd
// and the shared volume. The rendered job.yaml is read back with pkg/job, the
// same code `coordinator --config` runs, so a key the binaries reject fails here.
package helm_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/ringtrain/ringtrain/pkg/job"
)

const (
	chartDir  = "ringtrain"
	release   = "rt"
	namespace = "ml"
	gpuRes    = corev1.ResourceName("nvidia.com/gpu")
)

// rendered is one release's manifests, decoded.
type rendered struct {
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	pvcs         map[string]*corev1.PersistentVolumeClaim
	notes        string
	// serviceMonitors are prometheus-operator objects, kept as plain maps.
	serviceMonitors map[string]map[string]any
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	return c
}

// render renders the chart with the values in overrides (YAML) the way
// `helm install rt ./ringtrain -n ml -f overrides.yaml` would.
func render(t *testing.T, c *chart.Chart, overrides string) (*rendered, error) {
	t.Helper()
	vals, err := chartutil.ReadValues([]byte(overrides))
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	rv, err := chartutil.ToRenderValues(c, vals.AsMap(),
		chartutil.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("render values: %w", err)
	}
	out, err := engine.Engine{Strict: true}.Render(c, rv)
	if err != nil {
		return nil, err
	}
	r := &rendered{
		statefulSets: map[string]*appsv1.StatefulSet{},
		services:     map[string]*corev1.Service{},
		configMaps:   map[string]*corev1.ConfigMap{},
		pvcs:         map[string]*corev1.PersistentVolumeClaim{},

		serviceMonitors: map[string]map[string]any{},
	}
	for name, text := range out {
		if strings.HasSuffix(name, "NOTES.txt") {
			r.notes = text
			continue
		}
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range releaseutil.SplitManifests(text) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			if err := r.add(doc); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, doc)
			}
		}
	}
	return r, nil
}

// decode parses one manifest strictly: a misspelt field is an error.
func decode[T any](doc string, into *T) (*T, error) {
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		return nil, err
	}
	return into, nil
}

func (r *rendered) add(doc string) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		return err
	}
	var err error
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/StatefulSet":
		var o *appsv1.StatefulSet
		if o, err = decode(doc, &appsv1.StatefulSet{}); err == nil {
			r.statefulSets[o.Name] = o
		}
	case "v1/Service":
		var o *corev1.Service
		if o, err = decode(doc, &corev1.Service{}); err == nil {
			r.services[o.Name] = o
		}
	case "v1/ConfigMap":
		var o *corev1.ConfigMap
		if o, err = decode(doc, &corev1.ConfigMap{}); err == nil {
			r.configMaps[o.Name] = o
		}
	case "v1/PersistentVolumeClaim":
		var o *corev1.PersistentVolumeClaim
		if o, err = decode(doc, &corev1.PersistentVolumeClaim{}); err == nil {
			r.pvcs[o.Name] = o
		}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		var o map[string]any
		if err = yaml.Unmarshal([]byte(doc), &o); err == nil {
			name, _ := o["metadata"].(map[string]any)["name"].(string)
			r.serviceMonitors[name] = o
		}
	default:
		return fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
	}
	return err
}

func mustRender(t *testing.T, c *chart.Chart, overrides string) *rendered {
	t.Helper()
	r, err := render(t, c, overrides)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

func (r *rendered) sts(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	s, ok := r.statefulSets[name]
	if !ok {
		t.Fatalf("no StatefulSet %q (have %v)", name, keys(r.statefulSets))
	}
	return s
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// arg returns the value of --name=value in the container's args.
func arg(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	v, ok := lookupArg(c, name)
	if !ok {
		t.Fatalf("container %s: no --%s in %q", c.Name, name, c.Args)
	}
	return v
}

func lookupArg(c corev1.Container, name string) (string, bool) {
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func coordHost(i int) string {
	return fmt.Sprintf("rt-ringtrain-coordinator-%d.rt-ringtrain-coordinator.ml.svc.cluster.local", i)
}

// checkJobYAML reads the ConfigMap's job.yaml with pkg/job (strict keys) and
// validates it, as the coordinator does at start.
func checkJobYAML(t *testing.T, r *rendered) job.Spec {
	t.Helper()
	cm, ok := r.configMaps["rt-ringtrain-job"]
	if !ok {
		t.Fatalf("no job ConfigMap (have %v)", keys(r.configMaps))
	}
	path := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["job.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	s := job.Default()
	if err := s.LoadYAML(path); err != nil {
		t.Fatalf("job.yaml is not a valid job spec: %v\n%s", err, cm.Data["job.yaml"])
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("job.yaml does not validate: %v", err)
	}
	return s
}

// checkSharedVolume asserts that every ringtrain pod mounts the shared claim
// at /shared and the job ConfigMap at /etc/ringtrain/job.
func checkSharedVolume(t *testing.T, r *rendered, claim string, names ...string) {
	t.Helper()
	for _, n := range names {
		spec := r.sts(t, n).Spec.Template.Spec
		var volName string
		for _, v := range spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
				volName = v.Name
			}
		}
		if volName == "" {
			t.Errorf("%s: no volume for claim %s", n, claim)
			continue
		}
		var mounted bool
		for _, m := range spec.Containers[0].VolumeMounts {
			if m.Name == volName && m.MountPath == "/shared" {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: claim %s not mounted at /shared: %+v", n, claim, spec.Containers[0].VolumeMounts)
		}
	}
}

func TestChartMetadata(t *testing.T) {
	c := loadChart(t)
	if c.Metadata.APIVersion != chart.APIVersionV2 || c.Metadata.Name != "ringtrain" || c.Metadata.Type != "application" {
		t.Errorf("Chart.yaml: apiVersion %q name %q type %q", c.Metadata.APIVersion, c.Metadata.Name, c.Metadata.Type)
	}
	for _, want := range []string{"templates/coordinator.yaml", "templates/worker.yaml", "templates/etcd.yaml",
		"templates/configmap.yaml", "templates/shared-pvc.yaml", "templates/NOTES.txt"} {
		if !slices.ContainsFunc(c.Templates, func(f *chart.File) bool { return f.Name == want }) {
			t.Errorf("chart has no %s", want)
		}
	}
}

// TestLint runs Helm's linter (`helm lint`) over the defaults and the
// three-replica GPU values; any error or warning fails.
func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"defaults": nil,
		"gpu": {"coordinator": map[string]any{"replicas": 3}, "worker": map[string]any{"device": "cuda", "replicas": 4},
			"etcd": map[string]any{"endpoints": []any{"http://etcd.infra:2379"}}},
	} {
		l := lint.AllWithKubeVersion(chartDir, vals, namespace, nil)
		if len(l.Messages) == 0 {
			t.Fatalf("%s: the linter said nothing (not even its info messages): did it run?", name)
		}
		for _, m := range l.Messages {
			t.Logf("%s: %s", name, m)
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: %s", name, m)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	r := mustRender(t, loadChart(t), "")

	co := r.sts(t, "rt-ringtrain-coordinator")
	if *co.Spec.Replicas != 1 {
		t.Errorf("coordinator replicas %d, want 1", *co.Spec.Replicas)
	}
	if co.Spec.ServiceName != "rt-ringtrain-coordinator" || co.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("coordinator serviceName %q policy %q", co.Spec.ServiceName, co.Spec.PodManagementPolicy)
	}
	svc, ok := r.services["rt-ringtrain-coordinator"]
	if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Fatalf("coordinator headless service missing or not headless: %+v", svc)
	}
	cc := co.Spec.Template.Spec.Containers[0]
	if _, ok := lookupArg(cc, "raft-peers"); ok {
		t.Errorf("one replica must run as a single voter without --raft-peers: %q", cc.Args)
	}
	if got := arg(t, cc, "raft-bind"); got != "$(POD_IP):7071" {
		t.Errorf("--raft-bind %q", got)
	}
	if got := arg(t, cc, "config"); got != "/etc/ringtrain/job/job.yaml" {
		t.Errorf("--config %q", got)
	}
	if got := arg(t, cc, "output"); got != "/shared/runs/cifar" {
		t.Errorf("--output %q", got)
	}
	checkHTTPProbes(t, "coordinator", cc, corev1.URISchemeHTTP)
	if !slices.ContainsFunc(cc.Ports, func(p corev1.ContainerPort) bool { return p.Name == "control" && p.ContainerPort == 7070 }) {
		t.Errorf("coordinator ports %+v", cc.Ports)
	}

	w := r.sts(t, "rt-ringtrain-worker")
	if *w.Spec.Replicas != 2 {
		t.Errorf("worker replicas %d, want 2", *w.Spec.Replicas)
	}
	wc := w.Spec.Template.Spec.Containers[0]
	if wc.Args[0] != "run" {
		t.Errorf("worker args %q do not start with run", wc.Args)
	}
	if _, ok := lookupArg(wc, "tls-cert"); ok {
		t.Errorf("TLS flags without tls.enabled: %q", wc.Args)
	}
	if got, want := arg(t, wc, "coordinator"), coordHost(0)+":7070"; got != want {
		t.Errorf("--coordinator %q, want %q", got, want)
	}
	if got := arg(t, wc, "listen"); got != "$(POD_IP):7080" {
		t.Errorf("--listen %q: peers must be able to dial it", got)
	}
	if got := arg(t, wc, "device"); got != "cpu" {
		t.Errorf("--device %q", got)
	}
	if _, ok := wc.Resources.Limits[gpuRes]; ok {
		t.Errorf("cpu workers have a GPU limit: %v", wc.Resources.Limits)
	}
	if !strings.HasSuffix(wc.Image, ":0.1.0") {
		t.Errorf("worker image %q, want the appVersion tag", wc.Image)
	}

	// No endpoints given: the bundled etcd runs, and the coordinator uses it.
	e := r.sts(t, "rt-ringtrain-etcd")
	ec := e.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(ec.Image, "gcr.io/etcd-development/etcd:") {
		t.Errorf("etcd image %q", ec.Image)
	}
	etcdURL := "http://rt-ringtrain-etcd-0.rt-ringtrain-etcd.ml.svc.cluster.local:2379"
	if got := arg(t, ec, "advertise-client-urls"); got != etcdURL {
		t.Errorf("etcd --advertise-client-urls %q", got)
	}
	if got := arg(t, cc, "etcd-endpoints"); got != etcdURL {
		t.Errorf("coordinator --etcd-endpoints %q, want %q", got, etcdURL)
	}

	pvc, ok := r.pvcs["rt-ringtrain-shared"]
	if !ok || !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
		t.Fatalf("shared PVC missing or not ReadWriteMany: %+v", pvc)
	}
	checkSharedVolume(t, r, "rt-ringtrain-shared", "rt-ringtrain-coordinator", "rt-ringtrain-worker")

	s := checkJobYAML(t, r)
	if s.Name != "cifar" || s.OutputDir != "/shared/runs/cifar" || s.Data.Dir != "/shared/data" || s.Epochs != 30 {
		t.Errorf("job spec: name %q output %q data %q epochs %d", s.Name, s.OutputDir, s.Data.Dir, s.Epochs)
	}
	if !strings.Contains(r.notes, coordHost(0)+":7070") || !strings.Contains(r.notes, "bundled") {
		t.Errorf("NOTES.txt does not name the coordinator or the bundled etcd:\n%s", r.notes)
	}
}

// linger (the default) passes --linger to the coordinators and the
// workers: a StatefulSet would restart a pod whose job has ended.
func TestLinger(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		values string
		want   bool
	}{{"", true}, {"worker: {procsPerPod: 2}\ncoordinator: {replicas: 3}\netcd: {endpoints: [http://e:2379]}", true}, {"linger: false", false}} {
		r := mustRender(t, c, tc.values)
		for _, set := range []string{"rt-ringtrain-coordinator", "rt-ringtrain-worker"} {
			args := r.sts(t, set).Spec.Template.Spec.Containers[0].Args
			if got := slices.Contains(args, "--linger"); got != tc.want {
				t.Errorf("values %q: %s has --linger %v, want %v: %q", tc.values, set, got, tc.want, args)
			}
		}
	}
}

func TestThreeCoordinatorsGPUWorkersExternalEtcd(t *testing.T) {
	r := mustRender(t, loadChart(t), `
coordinator: {replicas: 3}
worker:
  replicas: 4
  device: cuda
  gpusPerWorker: 1
  nodeSelector: {nvidia.com/gpu.present: "true"}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
etcd: {endpoints: ["http://etcd-0.etcd.infra:2379", "http://etcd-1.etcd.infra:2379"]}
shared: {existingClaim: datasets}
job: {name: imagenette, epochs: 5, output_dir: /shared/runs/nette, min_workers: 2}
`)
	co := r.sts(t, "rt-ringtrain-coordinator")
	if *co.Spec.Replicas != 3 {
		t.Errorf("coordinator replicas %d, want 3", *co.Spec.Replicas)
	}
	cc := co.Spec.Template.Spec.Containers[0]
	peers := strings.Split(arg(t, cc, "raft-peers"), ",")
	if len(peers) != 3 {
		t.Fatalf("--raft-peers lists %d voters, want 3: %q", len(peers), peers)
	}
	for i, p := range peers {
		want := fmt.Sprintf("rt-ringtrain-coordinator-%d=%s:7071", i, coordHost(i))
		if p != want {
			t.Errorf("peer %d: %q, want %q", i, p, want)
		}
	}
	// Each replica's --id is its pod name, which is the id in its peer entry.
	if got := arg(t, cc, "id"); got != "$(POD_NAME)" {
		t.Errorf("--id %q", got)
	}
	if got := arg(t, cc, "etcd-endpoints"); got != "http://etcd-0.etcd.infra:2379,http://etcd-1.etcd.infra:2379" {
		t.Errorf("--etcd-endpoints %q", got)
	}
	if got := arg(t, cc, "output"); got != "/shared/runs/nette" {
		t.Errorf("--output %q", got)
	}

	w := r.sts(t, "rt-ringtrain-worker")
	if *w.Spec.Replicas != 4 {
		t.Errorf("worker replicas %d, want 4", *w.Spec.Replicas)
	}
	wc := w.Spec.Template.Spec.Containers[0]
	addrs := strings.Split(arg(t, wc, "coordinator"), ",")
	want := []string{coordHost(0) + ":7070", coordHost(1) + ":7070", coordHost(2) + ":7070"}
	if !slices.Equal(addrs, want) {
		t.Errorf("--coordinator %q, want %q", addrs, want)
	}
	if got := arg(t, wc, "device"); got != "cuda" {
		t.Errorf("--device %q", got)
	}
	q, ok := wc.Resources.Limits[gpuRes]
	if !ok || q.Value() != 1 {
		t.Errorf("nvidia.com/gpu limit %v (present %v), want 1", q.String(), ok)
	}
	if _, ok := wc.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("the GPU limit replaced the memory limit: %v", wc.Resources.Limits)
	}
	if !strings.HasSuffix(wc.Image, ":0.1.0-cuda") {
		t.Errorf("cuda worker image %q", wc.Image)
	}
	ps := w.Spec.Template.Spec
	if ps.NodeSelector["nvidia.com/gpu.present"] != "true" || len(ps.Tolerations) != 1 || ps.Tolerations[0].Key != "nvidia.com/gpu" {
		t.Errorf("worker placement: nodeSelector %v tolerations %+v", ps.NodeSelector, ps.Tolerations)
	}
	// Coordinators never ask for a GPU.
	if _, ok := cc.Resources.Limits[gpuRes]; ok {
		t.Errorf("coordinator has a GPU limit")
	}

	if _, ok := r.statefulSets["rt-ringtrain-etcd"]; ok {
		t.Errorf("bundled etcd rendered although endpoints were given")
	}
	if _, ok := r.services["rt-ringtrain-etcd"]; ok {
		t.Errorf("bundled etcd service rendered although endpoints were given")
	}
	if len(r.pvcs) != 0 {
		t.Errorf("a PVC was created although shared.existingClaim was given: %v", keys(r.pvcs))
	}
	checkSharedVolume(t, r, "datasets", "rt-ringtrain-coordinator", "rt-ringtrain-worker")

	s := checkJobYAML(t, r)
	if s.Name != "imagenette" || s.Epochs != 5 || s.MinWorkers != 2 || s.OutputDir != "/shared/runs/nette" {
		t.Errorf("job spec: %+v", s)
	}
	// Values not overridden keep the chart's defaults (Helm merges maps).
	if s.GlobalBatch != 128 || s.Optimizer.Name != "sgd" {
		t.Errorf("merged job spec lost defaults: batch %d optimizer %q", s.GlobalBatch, s.Optimizer.Name)
	}
}

func TestBundledEtcdAndTLS(t *testing.T) {
	r := mustRender(t, loadChart(t), `
etcd: {endpoints: []}
worker: {device: auto}
coordinator: {state: {persistence: false}}
tls: {enabled: true, secretName: ringtrain-tls}
`)
	e := r.sts(t, "rt-ringtrain-etcd")
	if *e.Spec.Replicas != 1 || len(e.Spec.VolumeClaimTemplates) != 1 {
		t.Errorf("etcd: replicas %d, claim templates %d", *e.Spec.Replicas, len(e.Spec.VolumeClaimTemplates))
	}
	ec := e.Spec.Template.Spec.Containers[0]
	host := "rt-ringtrain-etcd-0.rt-ringtrain-etcd.ml.svc.cluster.local"
	if got := arg(t, ec, "initial-cluster"); got != "$(POD_NAME)=http://"+host+":2380" {
		t.Errorf("etcd --initial-cluster %q", got)
	}
	if s, ok := r.services["rt-ringtrain-etcd"]; !ok || s.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("etcd headless service missing: %+v", s)
	}
	wc := r.sts(t, "rt-ringtrain-worker").Spec.Template.Spec.Containers[0]
	if _, ok := wc.Resources.Limits[gpuRes]; ok {
		t.Errorf("device auto must not request a GPU")
	}
	co := r.sts(t, "rt-ringtrain-coordinator")
	if len(co.Spec.VolumeClaimTemplates) != 0 {
		t.Errorf("state persistence off but claim templates rendered")
	}
	if !slices.ContainsFunc(co.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "state" && v.EmptyDir != nil }) {
		t.Errorf("state persistence off: no emptyDir state volume")
	}
	for _, n := range []string{"rt-ringtrain-coordinator", "rt-ringtrain-worker"} {
		spec := r.sts(t, n).Spec.Template.Spec
		if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "ringtrain-tls" }) ||
			!slices.ContainsFunc(spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/etc/ringtrain/tls" }) {
			t.Errorf("%s: TLS secret not mounted", n)
		}
	}
	checkSharedVolume(t, r, "rt-ringtrain-shared", "rt-ringtrain-coordinator", "rt-ringtrain-worker")
	for _, n := range []string{"rt-ringtrain-coordinator", "rt-ringtrain-worker"} {
		c := r.sts(t, n).Spec.Template.Spec.Containers[0]
		for flag, want := range map[string]string{"tls-cert": "/etc/ringtrain/tls/tls.crt", "tls-key": "/etc/ringtrain/tls/tls.key",
			"tls-ca": "/etc/ringtrain/tls/ca.crt", "tls-server-name": "ringtrain"} {
			if got := arg(t, c, flag); got != want {
				t.Errorf("%s: --%s=%q, want %q", n, flag, got, want)
			}
		}
	}
	if !strings.Contains(r.notes, "Mutual TLS is on") {
		t.Errorf("NOTES.txt does not say that mutual TLS is on")
	}
	checkJobYAML(t, r)
}

// TestExampleValues renders every values file in examples/ and checks the
// job spec each one produces.
func TestExampleValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example values (%v)", err)
	}
	c := loadChart(t)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := render(t, c, string(b))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		s := checkJobYAML(t, r)
		w := r.sts(t, "rt-ringtrain-worker").Spec.Template.Spec.Containers[0]
		_, gpu := w.Resources.Limits[gpuRes]
		if cuda := arg(t, w, "device") == "cuda"; gpu != cuda {
			t.Errorf("%s: device cuda %v but GPU limit %v", f, cuda, gpu)
		}
		t.Logf("%s: job %s, %d workers, output %s", f, s.Name, *r.sts(t, "rt-ringtrain-worker").Spec.Replicas, s.OutputDir)
	}
}

// TestRenderToDir writes the manifests of the values file named by
// RINGTRAIN_HELM_VALUES (default: none, the chart's defaults) to the directory
// RINGTRAIN_HELM_OUT, like `helm template`; `make helm-template` runs it.
// Without RINGTRAIN_HELM_OUT it is skipped.
func TestRenderToDir(t *testing.T) {
	dir := os.Getenv("RINGTRAIN_HELM_OUT")
	if dir == "" {
		t.Skip("RINGTRAIN_HELM_OUT not set")
	}
	var overrides []byte
	if p := os.Getenv("RINGTRAIN_HELM_VALUES"); p != "" {
		var err error
		if overrides, err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	c := loadChart(t)
	vals, err := chartutil.ReadValues(overrides)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	rv, err := chartutil.ToRenderValues(c, vals.AsMap(),
		chartutil.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Engine{Strict: true}.Render(c, rv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := render(t, c, string(overrides)); err != nil { // also decodes strictly
		t.Fatal(err)
	}
	for name, text := range out {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d files under %s", len(out), dir)
}

// TestBadValues: values the binaries cannot run with fail at render time
// with a message naming the value.
func TestBadValues(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct{ values, want string }{
		{"coordinator: {replicas: 2}", "coordinator.replicas must be 1 or 3"},
		{"worker: {device: tpu}", "worker.device must be cpu, cuda or auto"},
		{"tls: {enabled: true}", "tls.secretName is required"},
		{"job: {name: null}", "job.name is required"},
	} {
		_, err := render(t, c, tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: error %v, want one containing %q", tc.values, err, tc.want)
		}
	}
	// A job key the binaries do not know renders, but pkg/job rejects it.
	r := mustRender(t, c, "job: {epochz: 3}")
	cm := r.configMaps["rt-ringtrain-job"]
	path := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["job.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	s := job.Default()
	if err := s.LoadYAML(path); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("unknown job key: LoadYAML error %v, want job.ErrInvalid", err)
	}
}

// checkHTTPProbes checks that a container serves HTTP (scheme) on its
// "http" port and that its probes use /healthz (liveness, startup) and
// /readyz (readiness) there.
func checkHTTPProbes(t *testing.T, name string, c corev1.Container, scheme corev1.URIScheme) {
	t.Helper()
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "http" }) {
		t.Errorf("%s has no http port: %+v", name, c.Ports)
	}
	if _, ok := lookupArg(c, "http"); !ok {
		t.Errorf("%s runs without --http: %q", name, c.Args)
	}
	probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	if c.StartupProbe != nil {
		probes["startup"] = c.StartupProbe
	}
	for kind, p := range probes {
		want := "/healthz"
		if kind == "readiness" {
			want = "/readyz"
		}
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "http" || p.HTTPGet.Scheme != scheme {
			t.Errorf("%s %s probe is not %s %s on the http port: %+v", name, kind, scheme, want, p)
		}
	}
}

func TestMetricsAndProbes(t *testing.T) {
	r := mustRender(t, loadChart(t), "")
	for _, n := range []string{"rt-ringtrain-coordinator", "rt-ringtrain-worker"} {
		sts := r.sts(t, n)
		checkHTTPProbes(t, n, sts.Spec.Template.Spec.Containers[0], corev1.URISchemeHTTP)
		a := sts.Spec.Template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" || a["prometheus.io/scheme"] != "http" || a["prometheus.io/port"] == "" {
			t.Errorf("%s: scrape annotations %v", n, a)
		}
		svc, ok := r.services[n]
		if !ok || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" }) {
			t.Errorf("%s: no http Service port", n)
		}
	}
	if got := arg(t, r.sts(t, "rt-ringtrain-coordinator").Spec.Template.Spec.Containers[0], "http"); got != ":8080" {
		t.Errorf("coordinator --http %q", got)
	}
	if len(r.serviceMonitors) != 0 {
		t.Errorf("ServiceMonitors rendered by default: %v", keys(r.serviceMonitors))
	}

	r = mustRender(t, loadChart(t), `
metrics: {annotations: false, serviceMonitor: {enabled: true, labels: {release: prom}}}
tls: {enabled: true, secretName: ringtrain-tls}
`)
	for _, n := range []string{"rt-ringtrain-coordinator", "rt-ringtrain-worker"} {
		sts := r.sts(t, n)
		checkHTTPProbes(t, n, sts.Spec.Template.Spec.Containers[0], corev1.URISchemeHTTPS)
		if _, ok := sts.Spec.Template.Annotations["prometheus.io/scrape"]; ok {
			t.Errorf("%s: scrape annotations although metrics.annotations is false", n)
		}
		sm, ok := r.serviceMonitors[n]
		if !ok {
			t.Fatalf("no ServiceMonitor %s (have %v)", n, keys(r.serviceMonitors))
		}
		labels := sm["metadata"].(map[string]any)["labels"].(map[string]any)
		ep := sm["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
		if labels["release"] != "prom" || ep["port"] != "http" || ep["scheme"] != "https" || ep["tlsConfig"] == nil {
			t.Errorf("ServiceMonitor %s: labels %v endpoint %v", n, labels, ep)
		}
	}
}
