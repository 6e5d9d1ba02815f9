package gpu

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// noLibs makes the library search find nothing (no extra dirs, no globs); the
// bare sonames are still tried, so this runs only where no GPU is usable.
func noLibs() Options {
	return Options{LibDir: "/nonexistent", glob: func(string) ([]string, error) { return nil, nil }}
}

func TestSelectBackend(t *testing.T) {
	if b, err := Open(noLibs()); err == nil {
		b.Close()
		t.Skip("a CUDA GPU is usable here; the fallback paths are tested on machines without one")
	}
	b, err := SelectBackend("cpu", 2, Options{}, nil)
	if err != nil || b.Name() != "cpu" {
		t.Fatalf("cpu: %v %v", b, err)
	}
	var logged []string
	logf := func(f string, a ...any) { logged = append(logged, f) }
	b, err = SelectBackend("auto", 2, noLibs(), logf)
	if err != nil || b.Name() != "cpu" {
		t.Fatalf("auto: %v %v", b, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "CPU backend") {
		t.Fatalf("auto fallback logged %q", logged)
	}
	if _, err := SelectBackend("cuda", 2, noLibs(), nil); !errors.Is(err, ErrLibraryNotFound) && !errors.Is(err, ErrNoDevice) {
		t.Fatalf("cuda without a GPU: err = %v", err)
	}
	if _, err := SelectBackend("tpu", 2, Options{}, nil); !errors.Is(err, ErrDevice) {
		t.Fatalf("unknown device: err = %v", err)
	}
	if _, err := SelectBackend("auto", 2, Options{Precision: "fp8"}, nil); !errors.Is(err, ErrOptions) {
		t.Fatalf("bad options must not fall back silently: err = %v", err)
	}
}

// Unavailable: the errors a restart on the same machine meets again.
func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("gpu: --device cuda: %w: CUDA driver not loadable", ErrLibraryNotFound), true},
		{fmt.Errorf("x: %w", ErrNoDevice), true},
		{fmt.Errorf("x: %w: precision fp16", ErrOptions), true},
		{&cudaError{call: "cuMemAlloc", code: 2, text: "out of memory"}, false},
		{fmt.Errorf("x: %w", ErrNVRTC), false},
		{nil, false},
	} {
		if got := Unavailable(c.err); got != c.want {
			t.Errorf("Unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
