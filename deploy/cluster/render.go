package cluster

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// ErrUnsupported is returned for a manifest or a field the emulation does
// not carry out (rather than silently ignoring it).
var ErrUnsupported = errors.New("cluster: not emulated")

// Manifests are the objects of one rendered release, decoded strictly into
// their k8s.io/api types.
type Manifests struct {
	Release, Namespace string
	StatefulSets       map[string]*appsv1.StatefulSet
	Services           map[string]*corev1.Service
	ConfigMaps         map[string]*corev1.ConfigMap
	Secrets            map[string]*corev1.Secret
	PVCs               map[string]*corev1.PersistentVolumeClaim
}

// RenderOptions name the release and give the values (what -f values.yaml
// and --set would), as YAML.
type RenderOptions struct {
	Release, Namespace string
	Values             string
}

// Render renders the chart in chartDir with Helm's Go SDK (loader, values
// coalescing, the template engine in strict mode) the way `helm install
// RELEASE CHART -n NAMESPACE -f values.yaml` would, and decodes every
// manifest. A kind the emulation cannot run is an error.
func Render(chartDir string, o RenderOptions) (*Manifests, error) {
	c, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("cluster: load chart: %w", err)
	}
	vals, err := chartutil.ReadValues([]byte(o.Values))
	if err != nil {
		return nil, fmt.Errorf("cluster: values: %w", err)
	}
	rv, err := chartutil.ToRenderValues(c, vals.AsMap(),
		chartutil.ReleaseOptions{Name: o.Release, Namespace: o.Namespace, IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("cluster: values: %w", err)
	}
	out, err := engine.Engine{Strict: true}.Render(c, rv)
	if err != nil {
		return nil, fmt.Errorf("cluster: render: %w", err)
	}
	m := &Manifests{Release: o.Release, Namespace: o.Namespace,
		StatefulSets: map[string]*appsv1.StatefulSet{}, Services: map[string]*corev1.Service{},
		ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{},
		PVCs: map[string]*corev1.PersistentVolumeClaim{}}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt
		}
		for _, doc := range releaseutil.SplitManifests(out[name]) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			if err := m.Add(doc); err != nil {
				return nil, fmt.Errorf("cluster: %s: %w", name, err)
			}
		}
	}
	return m, nil
}

// Add decodes one manifest (YAML) into m.
func (m *Manifests) Add(doc string) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		return err
	}
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/StatefulSet":
		return decodeInto(doc, m.StatefulSets)
	case "v1/Service":
		return decodeInto(doc, m.Services)
	case "v1/ConfigMap":
		return decodeInto(doc, m.ConfigMaps)
	case "v1/Secret":
		return decodeInto(doc, m.Secrets)
	case "v1/PersistentVolumeClaim":
		return decodeInto(doc, m.PVCs)
	}
	return fmt.Errorf("%w: kind %s/%s", ErrUnsupported, tm.APIVersion, tm.Kind)
}

type named interface {
	GetName() string
}

func decodeInto[T any, PT interface {
	*T
	named
}](doc string, into map[string]PT) error {
	o := PT(new(T))
	if err := yaml.UnmarshalStrict([]byte(doc), o); err != nil {
		return err
	}
	if _, dup := into[o.GetName()]; dup {
		return fmt.Errorf("two objects named %s", o.GetName())
	}
	into[o.GetName()] = o
	return nil
}
