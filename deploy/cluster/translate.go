package cluster

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PodRun is what the translation needs to know about one incarnation of a
// pod beyond the manifests: where it lives.
type PodRun struct {
	Set     *appsv1.StatefulSet
	Ordinal int
	IP      string // assigned on the podman network
	Network string
	Domain  string            // cluster DNS domain (cluster.local)
	Dirs    map[string]string // ConfigMap or Secret name -> host directory holding its keys as files
}

// Name is the pod's name: <statefulset>-<ordinal>.
func (p PodRun) Name() string { return fmt.Sprintf("%s-%d", p.Set.Name, p.Ordinal) }

// ClaimVolume is the podman volume of a volumeClaimTemplate of a pod, the
// name Kubernetes gives the PVC: <template>-<pod>.
func ClaimVolume(template, pod string) string { return template + "-" + pod }

// container returns the pod's only container (the emulation runs one
// container per pod; init containers and sidecars are refused).
func container(set *appsv1.StatefulSet) (corev1.Container, error) {
	spec := set.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		return corev1.Container{}, fmt.Errorf("%w: %s has %d containers and %d init containers (one container per pod is emulated)",
			ErrUnsupported, set.Name, len(spec.Containers), len(spec.InitContainers))
	}
	return spec.Containers[0], nil
}

// Labels of the pod (the template's).
func podLabels(set *appsv1.StatefulSet) map[string]string { return set.Spec.Template.Labels }

// selects reports whether a Service selector selects a pod with labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Aliases are the DNS names of the pod, as cluster DNS would serve them:
// for every headless Service that selects it <svc>.<ns>.svc.<domain>, and
// for its StatefulSet's governing Service <pod>.<svc>.<ns>.svc.<domain>.
// Shorter forms resolve through the search domains (see RunArgs).
func (m *Manifests) Aliases(p PodRun) ([]string, error) {
	var out []string
	names := make([]string, 0, len(m.Services))
	for n := range m.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := m.Services[n]
		if !selects(s.Spec.Selector, podLabels(p.Set)) {
			continue
		}
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			return nil, fmt.Errorf("%w: Service %s is not headless (virtual IPs are not emulated)", ErrUnsupported, n)
		}
		if !s.Spec.PublishNotReadyAddresses {
			return nil, fmt.Errorf("%w: Service %s publishes only ready pods (readiness-gated DNS is not emulated)", ErrUnsupported, n)
		}
		svc := fmt.Sprintf("%s.%s.svc.%s", n, m.Namespace, p.Domain)
		out = append(out, svc)
		if p.Set.Spec.ServiceName == n {
			out = append(out, p.Name()+"."+svc)
		}
	}
	return out, nil
}

// env resolves the container's environment as the kubelet does: literal
// values (with $(VAR) references to earlier variables expanded) and the
// downward API fields metadata.name, metadata.namespace, status.podIP.
func (m *Manifests) env(c corev1.Container, p PodRun) ([][2]string, error) {
	vars := map[string]string{}
	var out [][2]string
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("%w: envFrom", ErrUnsupported)
	}
	for _, e := range c.Env {
		v := expand(e.Value, vars)
		if f := e.ValueFrom; f != nil {
			if f.FieldRef == nil {
				return nil, fmt.Errorf("%w: env %s: only fieldRef is emulated", ErrUnsupported, e.Name)
			}
			switch f.FieldRef.FieldPath {
			case "metadata.name":
				v = p.Name()
			case "metadata.namespace":
				v = m.Namespace
			case "status.podIP":
				v = p.IP
			default:
				return nil, fmt.Errorf("%w: env %s: fieldRef %s", ErrUnsupported, e.Name, f.FieldRef.FieldPath)
			}
		}
		vars[e.Name] = v
		out = append(out, [2]string{e.Name, v})
	}
	return out, nil
}

// expand replaces $(VAR) with vars[VAR] the way Kubernetes expands command,
// args and env: an undefined reference stays as written, $$ is a $.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// RunArgs translates one pod of a StatefulSet into the arguments of
// `podman run` (after "run"): the container's image, command, args and
// environment (downward API included), its volume mounts (claims as
// podman volumes, ConfigMaps and Secrets as read-only bind mounts of their
// keys, emptyDirs as tmpfs, a memory-backed one with its size limit), the
// pod's hostname and DNS (its stable name and every Service name as
// network aliases, the cluster's search domains), its security context and
// its memory and CPU limits. Anything it cannot carry out is an error that
// names it.
func (m *Manifests) RunArgs(p PodRun) ([]string, error) {
	c, err := container(p.Set)
	if err != nil {
		return nil, err
	}
	spec := p.Set.Spec.Template.Spec
	name := p.Name()
	args := []string{"--detach", "--name", name, "--hostname", name, "--pull", "never",
		"--network", p.Network, "--ip", p.IP,
		"--label", "io.ringtrain.cluster.statefulset=" + p.Set.Name,
		"--label", "io.ringtrain.cluster.pod=" + name}
	aliases, err := m.Aliases(p)
	if err != nil {
		return nil, err
	}
	for _, a := range aliases {
		args = append(args, "--network-alias", a)
	}
	for _, d := range []string{m.Namespace + ".svc." + p.Domain, "svc." + p.Domain, p.Domain} {
		args = append(args, "--dns-search", d)
	}

	env, err := m.env(c, p)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		args = append(args, "--env", kv[0]+"="+kv[1])
		vars[kv[0]] = kv[1]
	}

	sec, err := securityArgs(spec.SecurityContext, c.SecurityContext)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	args = append(args, sec...)
	res, err := resourceArgs(c.Resources)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	args = append(args, res...)
	mounts, err := m.mountArgs(p, c, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	args = append(args, mounts...)

	// Container ports need no publishing: pods reach each other on the
	// network directly; probes resolve named ports with Port.
	if len(c.Command) > 0 {
		cmd := make([]string, len(c.Command))
		for i, s := range c.Command {
			cmd[i] = expand(s, vars)
		}
		js, _ := json.Marshal(cmd)
		args = append(args, "--entrypoint", string(js))
	}
	args = append(args, c.Image)
	for _, a := range c.Args {
		args = append(args, expand(a, vars))
	}
	return args, nil
}

// securityArgs carries out the pod's and the container's security
// contexts (the container's fields win).
func securityArgs(pod *corev1.PodSecurityContext, ctr *corev1.SecurityContext) ([]string, error) {
	var uid, gid *int64
	nonRoot := false
	var out []string
	if pod != nil {
		uid, gid = pod.RunAsUser, pod.RunAsGroup
		nonRoot = pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
		if pod.FSGroup != nil {
			// Volumes are made group-owned by fsGroup (see Cluster); the
			// processes get it as a supplementary group.
			out = append(out, "--group-add", strconv.FormatInt(*pod.FSGroup, 10))
		}
		if len(pod.SupplementalGroups) > 0 || pod.SeccompProfile != nil || pod.SELinuxOptions != nil || len(pod.Sysctls) > 0 {
			return nil, fmt.Errorf("%w: pod securityContext beyond runAsUser/runAsGroup/runAsNonRoot/fsGroup", ErrUnsupported)
		}
	}
	if ctr != nil {
		if ctr.RunAsUser != nil {
			uid = ctr.RunAsUser
		}
		if ctr.RunAsGroup != nil {
			gid = ctr.RunAsGroup
		}
		if ctr.RunAsNonRoot != nil {
			nonRoot = *ctr.RunAsNonRoot
		}
		if ctr.Privileged != nil && *ctr.Privileged {
			return nil, fmt.Errorf("%w: privileged containers", ErrUnsupported)
		}
		if ctr.AllowPrivilegeEscalation != nil && !*ctr.AllowPrivilegeEscalation {
			out = append(out, "--security-opt", "no-new-privileges")
		}
		if ctr.ReadOnlyRootFilesystem != nil && *ctr.ReadOnlyRootFilesystem {
			out = append(out, "--read-only")
		}
		if cp := ctr.Capabilities; cp != nil {
			for _, d := range cp.Drop {
				out = append(out, "--cap-drop", strings.ToLower(string(d)))
			}
			for _, a := range cp.Add {
				out = append(out, "--cap-add", strings.ToLower(string(a)))
			}
		}
	}
	if uid != nil {
		u := strconv.FormatInt(*uid, 10)
		if gid != nil {
			u += ":" + strconv.FormatInt(*gid, 10)
		}
		out = append(out, "--user", u)
	}
	if nonRoot && (uid == nil || *uid == 0) {
		// The kubelet refuses to start it (an image's USER is not read here).
		return nil, fmt.Errorf("runAsNonRoot without a non-zero runAsUser")
	}
	return out, nil
}

// resourceArgs applies memory and CPU limits; requests only matter to a
// scheduler. Any other resource (a GPU) needs a device plugin.
func resourceArgs(r corev1.ResourceRequirements) ([]string, error) {
	var out []string
	for name, q := range r.Limits {
		switch name {
		case corev1.ResourceMemory:
			out = append(out, "--memory", strconv.FormatInt(q.Value(), 10))
		case corev1.ResourceCPU:
			out = append(out, "--cpus", strconv.FormatFloat(float64(q.MilliValue())/1000, 'f', 3, 64))
		default:
			return nil, fmt.Errorf("%w: resource limit %s (needs a device plugin)", ErrUnsupported, name)
		}
	}
	for name := range r.Requests {
		if name != corev1.ResourceMemory && name != corev1.ResourceCPU {
			return nil, fmt.Errorf("%w: resource request %s (needs a device plugin)", ErrUnsupported, name)
		}
	}
	return out, nil
}

// mountArgs translates the container's volume mounts.
func (m *Manifests) mountArgs(p PodRun, c corev1.Container, spec corev1.PodSpec) ([]string, error) {
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	templates := map[string]bool{}
	for _, t := range p.Set.Spec.VolumeClaimTemplates {
		templates[t.Name] = true
	}
	var out []string
	for _, vm := range c.VolumeMounts {
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			return nil, fmt.Errorf("%w: volumeMount %s: subPath", ErrUnsupported, vm.Name)
		}
		ro := ""
		if vm.ReadOnly {
			ro = ":ro"
		}
		if templates[vm.Name] {
			if _, both := vols[vm.Name]; both {
				return nil, fmt.Errorf("volume %s is both a volume and a volumeClaimTemplate", vm.Name)
			}
			out = append(out, "--volume", ClaimVolume(vm.Name, p.Name())+":"+vm.MountPath+ro)
			continue
		}
		v, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no such volume in the pod", vm.Name)
		}
		switch {
		case v.PersistentVolumeClaim != nil:
			claim := v.PersistentVolumeClaim.ClaimName
			if _, ok := m.PVCs[claim]; !ok {
				return nil, fmt.Errorf("volume %s: PersistentVolumeClaim %s is not in the release", vm.Name, claim)
			}
			if v.PersistentVolumeClaim.ReadOnly {
				ro = ":ro"
			}
			out = append(out, "--volume", claim+":"+vm.MountPath+ro)
		case v.ConfigMap != nil:
			if _, ok := m.ConfigMaps[v.ConfigMap.Name]; !ok {
				return nil, fmt.Errorf("volume %s: ConfigMap %s is not in the release", vm.Name, v.ConfigMap.Name)
			}
			if len(v.ConfigMap.Items) > 0 {
				return nil, fmt.Errorf("%w: volume %s: configMap items", ErrUnsupported, vm.Name)
			}
			out = append(out, "--mount", "type=bind,src="+p.Dirs[v.ConfigMap.Name]+",dst="+vm.MountPath+",ro=true")
		case v.Secret != nil:
			if _, ok := m.Secrets[v.Secret.SecretName]; !ok {
				return nil, fmt.Errorf("volume %s: Secret %s does not exist (create it before installing)", vm.Name, v.Secret.SecretName)
			}
			if len(v.Secret.Items) > 0 {
				return nil, fmt.Errorf("%w: volume %s: secret items", ErrUnsupported, vm.Name)
			}
			out = append(out, "--mount", "type=bind,src="+p.Dirs[v.Secret.SecretName]+",dst="+vm.MountPath+",ro=true")
		case v.EmptyDir != nil:
			// Pod-lifetime scratch space: a tmpfs (a new pod gets a new
			// one). A memory-backed one keeps its size limit (e.g. /dev/shm).
			opt := "type=tmpfs,dst=" + vm.MountPath + ",tmpfs-mode=1777"
			if l := v.EmptyDir.SizeLimit; l != nil {
				opt += ",tmpfs-size=" + strconv.FormatInt(l.Value(), 10)
			}
			out = append(out, "--mount", opt)
		default:
			return nil, fmt.Errorf("%w: volume %s: only persistentVolumeClaim, configMap, secret and emptyDir", ErrUnsupported, vm.Name)
		}
	}
	return out, nil
}

// Port resolves a probe's or Service's port (a number or a container port
// name) against the container.
func Port(c corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}
