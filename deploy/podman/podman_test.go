package podman

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCloseLeavesNothing (RINGTRAIN_PODMAN=1): a store with a network, a
// volume and a container (from an image assembled from a host binary) is
// closed; its directories (store and run root) are gone. (The machine's
// default store is never consulted, so the test cannot touch it.)
func TestCloseLeavesNothing(t *testing.T) {
	if os.Getenv("RINGTRAIN_PODMAN") == "" {
		t.Skip("set RINGTRAIN_PODMAN=1 (make test-image): runs podman as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "store")
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Podman(ctx, "network", "create", "rt-test-net"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Podman(ctx, "volume", "create", "rt-test-vol"); err != nil {
		t.Fatal(err)
	}
	ctr, err := st.Buildah(ctx, "from", "scratch")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Buildah(ctx, "commit", "--quiet", ctr, "rt-test-image"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Podman(ctx, "create", "--name", "rt-test-ctr", "--network", "rt-test-net", "-v", "rt-test-vol:/v",
		"--entrypoint", "/nothing", "rt-test-image"); err != nil {
		t.Fatal(err)
	}
	left, err := st.Leftovers(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 4 {
		t.Fatalf("store holds %v, want a container, a volume, a network and an image", left)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, st.runroot} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("%s still exists after Close (%v)", d, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
