package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/deploy/podman"
)

// needPodman skips unless RINGTRAIN_PODMAN=1 (make test-image): these tests
// build images with buildah and start them with podman, as root.
func needPodman(t *testing.T) {
	t.Helper()
	if os.Getenv("RINGTRAIN_PODMAN") == "" {
		t.Skip("set RINGTRAIN_PODMAN=1 (make test-image): builds and runs images with buildah and podman")
	}
	if err := podman.Available(); err != nil {
		t.Fatal(err)
	}
}

// TestImageMissingRuntimeFileFailsLoudly builds the ringtrain image without
// one of the files its binaries need and expects the build to fail with
// the dynamic loader's own message, from a binary started inside the
// image; the archive of the broken image is not left behind.
func TestImageMissingRuntimeFileFailsLoudly(t *testing.T) {
	needPodman(t)
	for _, c := range []struct {
		omit string
		want string
	}{
		{"/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6: cannot open shared object file"},
		{"/lib64/ld-linux-x86-64.so.2", "no such file or directory"},
	} {
		t.Run(filepath.Base(c.omit), func(t *testing.T) {
			out := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			_, err := build(ctx, options{root: "../..", out: out, chart: "deploy/helm/ringtrain", etcdRepo: "ghcr.io/ringtrain/etcd",
				only: "ringtrain", omit: []string{c.omit}})
			if !errors.Is(err, ErrCheck) {
				t.Fatalf("image without %s: err %v, want %v", c.omit, err, ErrCheck)
			}
			if !strings.Contains(err.Error(), "/usr/local/bin/coordinator --help") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("image without %s: the error does not name the command and the loader's message %q:\n%v", c.omit, c.want, err)
			}
			t.Logf("as expected: %v", err)
			if left, _ := filepath.Glob(filepath.Join(out, "*")); len(left) != 0 {
				t.Fatalf("a broken image left %v", left)
			}
		})
	}
}

// TestImageBuildsAndRuns builds both images (each one's binaries started
// inside it; the ringtrain image trains a two-step job) and loads the
// archives into a fresh store, as `podman load` would on another machine.
func TestImageBuildsAndRuns(t *testing.T) {
	needPodman(t)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	lines, err := build(ctx, options{root: "../..", out: out, chart: "deploy/helm/ringtrain", etcdRepo: "ghcr.io/ringtrain/etcd"})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.Join(lines, "\n"))
	st, err := podman.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	archives, _ := filepath.Glob(filepath.Join(out, "*.oci.tar"))
	if len(archives) != 2 {
		t.Fatalf("archives %v, want 2", archives)
	}
	for _, a := range archives {
		if _, err := st.Podman(ctx, "load", "-q", "-i", a); err != nil {
			t.Fatal(err)
		}
	}
	refs := map[string]string{} // repository -> ref, from "image REF: ..."
	for _, l := range lines {
		ref, _, _ := strings.Cut(strings.TrimPrefix(l, "image "), ":"+" ")
		ref = strings.TrimSuffix(ref, ":")
		repo := ref[:strings.LastIndex(ref, ":")]
		refs[repo[strings.LastIndex(repo, "/")+1:]] = ref
	}
	v, err := st.Podman(ctx, "run", "--rm", "--network", "none", refs["etcd"], "--version")
	if err != nil || !strings.Contains(v, "etcd Version: 3.") {
		t.Fatalf("etcd --version in the loaded image: %q, %v", v, err)
	}
	u, err := st.Podman(ctx, "run", "--rm", "--network", "none", "--entrypoint", "/usr/local/bin/worker", refs["ringtrain"], "run", "--help")
	if err != nil || !strings.Contains(u, "--procs") {
		t.Fatalf("worker run --help in the loaded image: %q, %v", u, err)
	}
}
