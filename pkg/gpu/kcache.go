package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// kernelCacheKey names a compiled image: a hash of everything that changes
// the compiler's output (source, target architecture, NVRTC version,
// options).
func kernelCacheKey(src, arch, nvrtcVersion string, opts []string) string {
	h := sha256.New()
	for _, s := range []string{src, arch, nvrtcVersion, strings.Join(opts, " ")} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// defaultCacheDir is os.UserCacheDir()/ringtrain/kernels, or "" when the
// user has no cache directory.
func defaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "ringtrain", "kernels")
}

// kernelCache stores compiled images on disk. A zero dir disables it.
type kernelCache struct{ dir string }

func (c kernelCache) path(key, ext string) string { return filepath.Join(c.dir, key+"."+ext) }

// load returns the cached image, or nil when absent or unreadable.
func (c kernelCache) load(key, ext string) []byte {
	if c.dir == "" {
		return nil
	}
	b, err := os.ReadFile(c.path(key, ext))
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// store writes the image atomically (temp file + rename), so concurrent
// processes never read a partial file.
func (c kernelCache) store(key, ext string, img []byte) error {
	if c.dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("gpu: kernel cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, key+".tmp*")
	if err != nil {
		return fmt.Errorf("gpu: kernel cache: %w", err)
	}
	_, werr := f.Write(img)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("gpu: kernel cache: writing %s: %w", f.Name(), firstErr(werr, cerr))
	}
	if err := os.Rename(f.Name(), c.path(key, ext)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("gpu: kernel cache: %w", err)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
