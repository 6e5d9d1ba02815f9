package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/ringtrain/ringtrain/deploy/podman"
)

// ErrRuntime is returned when a binary needs a file that is neither in the
// image nor in the Debian packages the image is assembled from.
var ErrRuntime = errors.New("image: runtime file missing")

// ErrCheck is returned when a binary does not start inside its image.
var ErrCheck = errors.New("image: check failed")

// nonroot is the user every image runs as (the chart's runAsUser).
const nonroot = 65532

// spec is one image: its files, its configuration and the commands that
// must succeed inside it.
type spec struct {
	Ref        string            // repository:tag
	Archive    string            // file name of the OCI archive
	Binaries   map[string]string // image path -> host file
	Debs       []string          // Debian packages the runtime files come from
	Extra      map[string]string // image path -> host file (e.g. the CA bundle)
	Entrypoint []string
	Cmd        []string
	Env        []string
	Checks     [][]string // each a command run in the image; all must exit 0
	Omit       []string   // image paths left out (for the test of a broken image)
}

// rootfs is an image's file tree, assembled in a host directory.
type rootfs struct {
	dir string
}

// assemble writes the tree of s under dir: the binaries, every file their
// ELF headers ask for (interpreter and DT_NEEDED, recursively) taken from
// the extracted Debian packages in debDir, /etc/passwd and /etc/group with
// the nonroot user, /tmp and /cache.
func assemble(dir, debDir string, s spec) (*rootfs, error) {
	r := &rootfs{dir: dir}
	omit := map[string]bool{}
	for _, p := range s.Omit {
		omit[path.Clean(p)] = true
	}
	for _, d := range []string{"tmp", "cache", "etc", "usr/local/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o777|fs.ModeSticky); err != nil {
		return nil, err
	}
	if err := os.Chown(filepath.Join(dir, "cache"), nonroot, nonroot); err != nil {
		return nil, err
	}
	files := map[string]string{}
	for p, src := range s.Binaries {
		files[p] = src
	}
	for p, src := range s.Extra {
		files[p] = src
	}
	idx, err := indexTree(debDir)
	if err != nil {
		return nil, err
	}
	var bins []string
	for p := range s.Binaries {
		bins = append(bins, p)
	}
	sort.Strings(bins)
	links := map[string]string{}
	for _, p := range bins {
		if err := runtimeFiles(s.Binaries[p], p, debDir, idx, files, links, s.Debs); err != nil {
			return nil, err
		}
	}
	for p, src := range files {
		if omit[path.Clean(p)] {
			continue
		}
		if err := copyFile(src, filepath.Join(dir, p)); err != nil {
			return nil, err
		}
	}
	for p, target := range links {
		if omit[path.Clean(p)] {
			continue
		}
		dst := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(target, dst); err != nil {
			return nil, err
		}
	}
	etc := map[string]string{
		"etc/passwd": fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/cache:/sbin/nologin\n", nonroot, nonroot),
		"etc/group":  fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonroot),
	}
	for p, text := range etc {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// indexTree maps image paths ("/lib/x86_64-linux-gnu/libc.so.6") to the
// files and symlinks of the extracted packages under root.
func indexTree(root string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		idx["/"+filepath.ToSlash(rel)] = p
		return nil
	})
	return idx, err
}

// libDirs are the directories the dynamic loader searches (Debian's
// multiarch layout, merged-/usr or not).
func libDirs() []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib", "/usr/lib", "/lib64"}
}

// runtimeFiles adds to files (image path -> host file) and links (image
// path -> symlink target) what the ELF file bin needs to start: its
// interpreter and shared libraries, recursively, from the packages. A
// static binary needs nothing.
func runtimeFiles(bin, imagePath, debDir string, idx, files, links map[string]string, debs []string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("image: %s: %w", bin, err)
	}
	defer f.Close()
	var need []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("image: %s: interpreter: %w", bin, err)
			}
			need = append(need, strings.TrimRight(string(b), "\x00"))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("image: %s: %w", bin, err)
	}
	for _, l := range libs {
		p, ok := findLib(l, idx)
		if !ok {
			return fmt.Errorf("%w: %s (needed by %s) is not in the Debian packages %v", ErrRuntime, l, imagePath, debs)
		}
		need = append(need, p)
	}
	for _, p := range need {
		if _, done := files[p]; done {
			continue
		}
		if _, done := links[p]; done {
			continue
		}
		src, ok := idx[p]
		if !ok {
			return fmt.Errorf("%w: %s (needed by %s) is not in the Debian packages %v", ErrRuntime, p, imagePath, debs)
		}
		if fi, err := os.Lstat(src); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			links[p] = target
			abs := target
			if !path.IsAbs(abs) {
				abs = path.Join(path.Dir(p), target)
			}
			tsrc, ok := idx[abs]
			if !ok {
				return fmt.Errorf("%w: %s (the target of %s) is not in the Debian packages %v", ErrRuntime, abs, p, debs)
			}
			if err := addELF(abs, tsrc, debDir, idx, files, links, debs); err != nil {
				return err
			}
			continue
		}
		if err := addELF(p, src, debDir, idx, files, links, debs); err != nil {
			return err
		}
	}
	return nil
}

// addELF adds the library at image path p (host file src) and what it needs.
func addELF(p, src, debDir string, idx, files, links map[string]string, debs []string) error {
	if _, done := files[p]; done {
		return nil
	}
	files[p] = src
	return runtimeFiles(src, p, debDir, idx, files, links, debs)
}

func findLib(name string, idx map[string]string) (string, bool) {
	for _, d := range libDirs() {
		if _, ok := idx[d+"/"+name]; ok {
			return d + "/" + name, true
		}
	}
	return "", false
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, fi.Mode().Perm())
}

// debs downloads the Debian packages with apt-get (the versions apt would
// install) into dir and extracts each into dir/root.
func debs(ctx context.Context, dir string, pkgs []string) (string, error) {
	dl := filepath.Join(dir, "debs")
	if err := os.MkdirAll(dl, 0o777); err != nil {
		return "", err
	}
	_ = os.Chmod(dl, 0o777) // apt's _apt user writes the downloads
	c := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, pkgs...)...)
	c.Dir = dl
	if out, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("image: apt-get download %v: %w\n%s(run 'apt-get update' first?)", pkgs, err, out)
	}
	root := filepath.Join(dir, "root")
	matches, err := filepath.Glob(filepath.Join(dl, "*.deb"))
	if err != nil {
		return "", err
	}
	if len(matches) != len(pkgs) {
		return "", fmt.Errorf("image: apt-get download %v gave %d packages", pkgs, len(matches))
	}
	for _, m := range matches {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", m, root).CombinedOutput(); err != nil {
			return "", fmt.Errorf("image: dpkg-deb -x %s: %w\n%s", m, err, out)
		}
	}
	return root, nil
}

// caBundle concatenates the certificates of Debian's ca-certificates
// package (extracted under root) into one PEM file, as
// update-ca-certificates does, and returns its path.
func caBundle(root, out string) (string, error) {
	certs, err := filepath.Glob(filepath.Join(root, "usr/share/ca-certificates/mozilla/*.crt"))
	if err != nil {
		return "", err
	}
	if len(certs) == 0 {
		return "", fmt.Errorf("%w: no certificates in the ca-certificates package", ErrRuntime)
	}
	sort.Strings(certs)
	var b []byte
	for _, c := range certs {
		pem, err := os.ReadFile(c)
		if err != nil {
			return "", err
		}
		b = append(b, pem...)
		if len(pem) > 0 && pem[len(pem)-1] != '\n' {
			b = append(b, '\n')
		}
	}
	return out, os.WriteFile(out, b, 0o644)
}

// commit turns the tree into the image s.Ref in the store (buildah from
// scratch, the tree copied in with its owners and modes, the config set)
// and writes it as an OCI archive to archive.
func commit(ctx context.Context, st *podman.Store, r *rootfs, s spec, archive string) error {
	ctr, err := st.Buildah(ctx, "from", "scratch")
	if err != nil {
		return err
	}
	defer func() { _, _ = st.Buildah(context.Background(), "rm", ctr) }()
	mnt, err := st.Buildah(ctx, "mount", ctr)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", r.dir+"/.", mnt+"/").CombinedOutput(); err != nil {
		return fmt.Errorf("image: copy the tree: %w\n%s", err, out)
	}
	if _, err := st.Buildah(ctx, "umount", ctr); err != nil {
		return err
	}
	args := []string{"config", "--user", fmt.Sprintf("%d:%d", nonroot, nonroot), "--workingdir", "/cache",
		"--entrypoint", jsonList(s.Entrypoint), "--cmd", jsonList(s.Cmd),
		"--label", "org.opencontainers.image.title=" + s.Ref}
	for _, e := range s.Env {
		args = append(args, "--env", e)
	}
	if _, err := st.Buildah(ctx, append(args, ctr)...); err != nil {
		return err
	}
	if _, err := st.Buildah(ctx, "commit", "--quiet", "--format", "oci", "--timestamp", "0", ctr, s.Ref); err != nil {
		return err
	}
	_ = os.Remove(archive)
	_, err = st.Buildah(ctx, "push", "--quiet", s.Ref, "oci-archive:"+archive+":"+s.Ref)
	return err
}

func jsonList(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// check runs every check command of s in the image (as the image's user,
// no network) and returns ErrCheck with the command's output when one
// fails: a binary whose loader or libraries are missing prints the
// loader's own message there.
func check(ctx context.Context, st *podman.Store, s spec) error {
	for _, c := range s.Checks {
		args := append([]string{"run", "--rm", "--network", "none", "--entrypoint", c[0], s.Ref}, c[1:]...)
		if _, err := st.Podman(ctx, args...); err != nil {
			var pe *podman.Error
			if errors.As(err, &pe) {
				return fmt.Errorf("%w: %s: `%s` does not run inside the image (exit %d): %s",
					ErrCheck, s.Ref, strings.Join(c, " "), pe.ExitCode(), strings.TrimSpace(tail(pe.Output, 2000)))
			}
			return fmt.Errorf("%w: %s: %w", ErrCheck, s.Ref, err)
		}
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
