// Package doccheck has no code: its tests keep the user documentation
// (README.md, BENCHMARKS.md, docs/*.md) and examples/*.yaml true to the
// repository (links and anchors, make targets, YAML job files).
package doccheck
