package doccheck

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// HelmValues reads a chart's values.yaml at path and returns whether a
// dotted key (`tls.secretName`, as `helm --set` takes it) names one of its
// values. Helm accepts unknown keys silently, so the documentation's and
// the commands' help texts are checked with it.
func HelmValues(path string) (has func(key string) bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return func(key string) bool {
		var cur any = values
		for _, part := range strings.Split(key, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			if cur, ok = m[part]; !ok {
				return false
			}
		}
		return true
	}, nil
}
