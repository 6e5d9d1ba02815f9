// Package doccheck's tests keep the user documentation
// (README.md, BENCHMARKS.md, docs/*.md) and examples/*.yaml true to the
// repository: relative links and #anchors resolve, every `make TARGET`
// shown is a target, every YAML job file shown loads as --config loads it,
// every chart `--set KEY=` names a key of the chart's values.yaml, and
// every repository path named in a code span exists. HelmValues, its one
// function, also checks the commands' help texts (cmd/coordinator's tests).
package doccheck
