//go:build !linux

package nn

import "runtime"

// yieldThread lets other goroutines run (no portable thread yield).
func yieldThread() { runtime.Gosched() }
