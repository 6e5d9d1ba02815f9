// Command image builds ringtrain's OCI images without docker and without
// pulling anything (make image):
//
//   - ringtrain:<appVersion> — /usr/local/bin/coordinator and worker (and
//     scalebench, which `coordinator bench` runs: docs/scale.md). The
//     binaries are built with CGO_ENABLED=0 but are not static: pkg/gpu opens
//     the CUDA libraries through purego, which links the dynamic loader and
//     libc. The image therefore carries exactly the files the binaries' ELF
//     headers ask for (interpreter and DT_NEEDED, recursively), taken from
//     Debian's libc6 package, plus the CA bundle of Debian's ca-certificates
//     (the CIFAR-10 download). Keeping the dynamic binary (rather than a
//     static CPU-only variant) means the CPU image runs the very binary the
//     CUDA image runs, and `--device auto` still finds a GPU when one is
//     mounted in.
//   - etcd:v<version> — the etcd server built from the go.etcd.io/etcd/server
//     module at the version in go.mod (the one ringtrain embeds); static.
//
// Each image is assembled FROM scratch with buildah in a private store,
// written as an OCI archive (podman load -i FILE; skopeo or buildah push it
// to a registry), and then checked: its binaries are started inside the
// image with podman (and the ringtrain image trains a two-step job), so an
// image missing a runtime file fails here, loudly, with the loader's message.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/ringtrain/ringtrain/deploy/podman"
)

type options struct {
	root      string   // repository root
	out       string   // where the archives go
	chart     string   // the chart (its appVersion and image.repository name the image)
	etcdRepo  string   // repository of the etcd image
	omit      []string // image paths left out of the ringtrain image (tests)
	only      string   // build only the image whose archive name starts with this
	skipCheck bool
}

func main() {
	var o options
	var omit string
	flag.StringVar(&o.root, "root", ".", "repository root")
	flag.StringVar(&o.out, "out", "build/images", "directory for the OCI archives")
	flag.StringVar(&o.chart, "chart", "deploy/helm/ringtrain", "Helm chart whose appVersion and image.repository name the image")
	flag.StringVar(&o.etcdRepo, "etcd-repository", "ghcr.io/ringtrain/etcd", "repository of the etcd image")
	flag.StringVar(&omit, "omit", "", "comma-separated image paths to leave out of the ringtrain image (to see a broken image fail)")
	flag.StringVar(&o.only, "only", "", "build only this image (ringtrain or etcd)")
	flag.BoolVar(&o.skipCheck, "no-check", false, "do not start the binaries inside the images")
	flag.Parse()
	if omit != "" {
		o.omit = strings.Split(omit, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	built, err := build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range built {
		fmt.Println(b)
	}
}

// build builds both images and returns one line per image.
func build(ctx context.Context, o options) ([]string, error) {
	c, err := loader.Load(filepath.Join(o.root, o.chart))
	if err != nil {
		return nil, fmt.Errorf("image: load chart: %w", err)
	}
	repo, _ := c.Values["image"].(map[string]any)["repository"].(string)
	if repo == "" {
		return nil, fmt.Errorf("image: the chart has no image.repository")
	}
	version := c.Metadata.AppVersion
	etcdVersion, err := goOut(ctx, o.root, "list", "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ringtrain-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	bin := filepath.Join(work, "bin")
	if _, err := goOut(ctx, o.root, "build", "-trimpath", "-ldflags", "-s -w", "-o", bin+"/", "./cmd/coordinator", "./cmd/worker", "./cmd/scalebench"); err != nil {
		return nil, err
	}
	if _, err := goOut(ctx, o.root, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(bin, "etcd"), "go.etcd.io/etcd/server/v3"); err != nil {
		return nil, err
	}
	pkgs := []string{"libc6", "ca-certificates"}
	debRoot, err := debs(ctx, work, pkgs)
	if err != nil {
		return nil, err
	}
	ca, err := caBundle(debRoot, filepath.Join(work, "ca-certificates.crt"))
	if err != nil {
		return nil, err
	}
	images := []spec{{
		Ref:     repo + ":" + version,
		Archive: "ringtrain-" + version + ".oci.tar",
		Binaries: map[string]string{"/usr/local/bin/coordinator": filepath.Join(bin, "coordinator"), "/usr/local/bin/worker": filepath.Join(bin, "worker"),
			"/usr/local/bin/scalebench": filepath.Join(bin, "scalebench")},
		Debs:       pkgs,
		Extra:      map[string]string{"/etc/ssl/certs/ca-certificates.crt": ca},
		Entrypoint: []string{"/usr/local/bin/coordinator"},
		Cmd:        []string{"--help"},
		Env:        []string{"XDG_CACHE_HOME=/cache", "HOME=/cache"},
		Checks: [][]string{
			{"/usr/local/bin/coordinator", "--help"},
			{"/usr/local/bin/worker", "--help"},
			{"/usr/local/bin/coordinator", "bench", "--help"}, // runs /usr/local/bin/scalebench
			// The whole job in one container: embedded etcd, raft, a worker
			// process started from /usr/local/bin/worker, two steps.
			{"/usr/local/bin/coordinator", "--workers", "1", "--dataset", "synthetic", "--synthetic-size", "64", "--epochs", "1",
				"--batch", "32", "--width", "0.125", "--threads", "1", "--no-progress", "--output", "/tmp/out"},
		},
		Omit: o.omit,
	}, {
		Ref:        o.etcdRepo + ":" + etcdVersion,
		Archive:    "etcd-" + etcdVersion + ".oci.tar",
		Binaries:   map[string]string{"/usr/local/bin/etcd": filepath.Join(bin, "etcd")},
		Debs:       pkgs,
		Entrypoint: []string{"/usr/local/bin/etcd"},
		Checks:     [][]string{{"/usr/local/bin/etcd", "--version"}},
	}}

	st, err := podman.Open(filepath.Join(work, "store"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var lines []string
	for i, s := range images {
		if o.only != "" && !strings.HasPrefix(s.Archive, o.only+"-") {
			continue
		}
		r, err := assemble(filepath.Join(work, fmt.Sprintf("rootfs%d", i)), debRoot, s)
		if err != nil {
			return nil, err
		}
		archive, err := filepath.Abs(filepath.Join(o.out, s.Archive))
		if err != nil {
			return nil, err
		}
		if err := commit(ctx, st, r, s, archive); err != nil {
			return nil, err
		}
		if !o.skipCheck {
			if err := check(ctx, st, s); err != nil {
				_ = os.Remove(archive) // a broken image is not left behind as a result
				return nil, err
			}
		}
		fi, err := os.Stat(archive)
		if err != nil {
			return nil, err
		}
		lines = append(lines, fmt.Sprintf("image %s: %s (%.1f MB)", s.Ref, archive, float64(fi.Size())/1e6))
	}
	return lines, nil
}

// goOut runs the go command in dir with CGO_ENABLED=0 and returns its
// standard output.
func goOut(ctx context.Context, dir string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, "go", args...)
	c.Dir = dir
	c.Env = append(c.Environ(), "CGO_ENABLED=0")
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("image: go %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
