package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/internal/doccheck"
)

// TestHelpHelmSetKeysExist checks every `--set KEY=VALUE` the commands'
// help shows against the chart's values.yaml: helm ignores an unknown key
// silently, so a misspelt one (the certs help said tls.secret for
// tls.secretName) installs a chart without TLS.
func TestHelpHelmSetKeysExist(t *testing.T) {
	has, err := doccheck.HelmValues("../../deploy/helm/ringtrain/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set := regexp.MustCompile(`--set[ =]'?([^\s'{]+)`)
	root := rootCmd()
	root.AddCommand(checkpointsCmd(), certsCmd(), statusCmd(), benchCmd())
	n := 0
	for _, c := range append(root.Commands(), root) {
		for _, m := range set.FindAllStringSubmatch(c.Long+"\n"+c.Example, -1) {
			for _, kv := range strings.Split(strings.TrimRight(m[1], ".,;"), ",") {
				k, _, _ := strings.Cut(kv, "=")
				n++
				if !has(k) {
					t.Errorf("coordinator %s --help: --set %s: no such key in deploy/helm/ringtrain/values.yaml", c.Name(), k)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no --set found in any help text")
	}
}
