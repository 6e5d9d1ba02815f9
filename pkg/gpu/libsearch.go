package gpu

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ebitengine/purego"
)

// standardDirs are the usual homes of the driver and toolkit libraries.
var standardDirs = []string{
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib64",
	"/usr/local/cuda/lib64",
	"/usr/local/cuda/targets/x86_64-linux/lib",
	"/usr/local/nvidia/lib64",
	"/usr/local/nvidia/lib",
}

// pythonNvidiaGlobs find the lib directories of NVIDIA's Python wheels
// (nvidia-cublas, nvidia-cuda-nvrtc, ...: site-packages/nvidia/<pkg>/lib,
// or nvidia/cu13/lib for CUDA 13 wheels).
var pythonNvidiaGlobs = []string{
	"/usr/lib/python3*/site-packages/nvidia/*/lib",
	"/usr/lib/python3*/dist-packages/nvidia/*/lib",
	"/usr/local/lib/python3*/site-packages/nvidia/*/lib",
	"/usr/local/lib/python3*/dist-packages/nvidia/*/lib",
	"/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
	"/opt/*/lib/python3*/site-packages/nvidia/*/lib",
	"/opt/conda/lib/python3*/site-packages/nvidia/*/lib",
}

// searchDirs returns the directories to search, in order, without
// duplicates: explicit, libPath, standard directories, Python wheel
// directories (the standard ones, then those of each of pythonRoots).
// glob is a parameter so tests can fake it.
func searchDirs(explicit string, libPath, pythonRoots []string, glob func(string) ([]string, error)) []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		if d == "" || seen[d] {
			return
		}
		seen[d] = true
		dirs = append(dirs, d)
	}
	add(explicit)
	for _, d := range libPath {
		add(d)
	}
	for _, d := range standardDirs {
		add(d)
	}
	globs := append([]string(nil), pythonNvidiaGlobs...)
	for _, r := range pythonRoots {
		if r != "" {
			globs = append(globs, filepath.Join(r, "lib/python3*/site-packages/nvidia/*/lib"))
		}
	}
	for _, g := range globs {
		m, err := glob(g)
		if err != nil {
			continue
		}
		sort.Strings(m)
		for _, d := range m {
			add(d)
		}
	}
	return dirs
}

// candidates returns every path to try for one library: each name in each
// directory (only those that exist), then each bare name for the dynamic
// loader's own search (ld.so.cache, RUNPATH).
func candidates(dirs, names []string, exists func(string) bool) []string {
	var out []string
	for _, d := range dirs {
		for _, n := range names {
			p := filepath.Join(d, n)
			if exists(p) {
				out = append(out, p)
			}
		}
	}
	return append(out, names...)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// library is an opened shared library.
type library struct {
	name   string // what was asked for, e.g. "cublas"
	path   string // what was opened
	handle uintptr
}

// openLibrary dlopens the first loadable candidate of names over dirs. The
// error wraps ErrLibraryNotFound and lists every directory searched and
// every failed dlopen with its reason. before, if not nil, is called with
// the directory of a candidate before it is opened (to preload siblings).
func openLibrary(what string, names []string, dirs []string, before func(dir string)) (*library, error) {
	var tried []string
	for _, p := range candidates(dirs, names, fileExists) {
		if before != nil && strings.ContainsRune(p, '/') {
			before(filepath.Dir(p))
		}
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			return &library{name: what, path: p, handle: h}, nil
		}
		tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
	}
	return nil, fmt.Errorf("%w: %s (names %s) not loadable; searched directories [%s]; dlopen attempts: %s; point --cuda-lib-dir or $RINGTRAIN_CUDA_LIB_DIR (Options.LibDir) at the libraries' directory",
		ErrLibraryNotFound, what, strings.Join(names, ", "), strings.Join(dirs, ", "), strings.Join(tried, "; "))
}

// sym registers a C function of lib into fptr; a missing symbol is an error.
func (l *library) sym(fptr any, name string) (err error) {
	if _, err := purego.Dlsym(l.handle, name); err != nil {
		return fmt.Errorf("%w: symbol %s missing in %s: %v", ErrLibraryNotFound, name, l.path, err)
	}
	purego.RegisterLibFunc(fptr, l.handle, name)
	return nil
}

// symAny registers the first of names that the library exports.
func (l *library) symAny(fptr any, names ...string) error {
	for _, n := range names {
		if _, err := purego.Dlsym(l.handle, n); err == nil {
			purego.RegisterLibFunc(fptr, l.handle, n)
			return nil
		}
	}
	return fmt.Errorf("%w: none of the symbols %v in %s", ErrLibraryNotFound, names, l.path)
}
