package gpu

import (
	"bytes"
	"os"
	"testing"
)

func TestKernelCacheKey(t *testing.T) {
	k := kernelCacheKey("src", "sm_90", "13.0", nil)
	if k != kernelCacheKey("src", "sm_90", "13.0", nil) {
		t.Fatal("key not deterministic")
	}
	for _, other := range []string{
		kernelCacheKey("src2", "sm_90", "13.0", nil),
		kernelCacheKey("src", "sm_80", "13.0", nil),
		kernelCacheKey("src", "sm_90", "12.8", nil),
		kernelCacheKey("src", "sm_90", "13.0", []string{"-G"}),
		kernelCacheKey("srcs", "m_90", "13.0", nil), // no ambiguity from concatenation
	} {
		if other == k {
			t.Fatalf("key collision for a different input: %s", k)
		}
	}
}

func TestKernelCacheStoreLoad(t *testing.T) {
	c := kernelCache{dir: t.TempDir() + "/sub"}
	if c.load("k", "cubin") != nil {
		t.Fatal("empty cache returned an image")
	}
	img := []byte{0x7f, 'E', 'L', 'F', 1, 2, 3}
	if err := c.store("k", "cubin", img); err != nil {
		t.Fatal(err)
	}
	if got := c.load("k", "cubin"); !bytes.Equal(got, img) {
		t.Fatalf("load = %v", got)
	}
	ents, _ := os.ReadDir(c.dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	off := kernelCache{}
	if off.store("k", "cubin", img) != nil || off.load("k", "cubin") != nil {
		t.Fatal("disabled cache stored or loaded")
	}
	if (Options{CacheDir: "off"}).cacheDir() != "" {
		t.Fatal(`CacheDir "off" does not disable the cache`)
	}
}
