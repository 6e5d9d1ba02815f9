package data

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// archiveEnv names the CIFAR-10 archive for tests that need the real data.
const archiveEnv = "RINGTRAIN_CIFAR_ARCHIVE"

// locateArchive finds the real CIFAR-10 binary archive: $RINGTRAIN_CIFAR_ARCHIVE,
// or ../shared/data/cifar-10-binary.tar.gz next to the repository root
// (the nearest directory above the test's holding go.mod). Without one it
// returns "" and a sentence saying how to provide it.
func locateArchive() (path, why string) {
	if p := os.Getenv(archiveEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Sprintf("%s=%s: %v", archiveEnv, p, err)
		}
		return p, ""
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err.Error()
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Sprintf("CIFAR-10 archive not found (no repository root above the test directory); set %s to its path", archiveEnv)
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "data", CIFAR10ArchiveName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Sprintf("CIFAR-10 archive not found at %s; set %s to its path", p, archiveEnv)
	}
	return p, ""
}

// cifarArchive returns the real archive or skips the test, saying how to
// run it.
func cifarArchive(t testing.TB) string {
	t.Helper()
	p, why := locateArchive()
	if p == "" {
		if os.Getenv(archiveEnv) != "" {
			t.Fatal(why)
		}
		t.Skip(why + " to run this test")
	}
	return p
}

var realCIFAR struct {
	once        sync.Once
	train, test *CIFAR10
	err         error
}

// loadRealCIFAR reads both splits of the real archive once per test binary.
func loadRealCIFAR(t testing.TB) (train, test *CIFAR10) {
	t.Helper()
	p := cifarArchive(t)
	realCIFAR.once.Do(func() {
		realCIFAR.train, realCIFAR.test, realCIFAR.err = LoadCIFAR10ArchiveAll(p)
	})
	if realCIFAR.err != nil {
		t.Fatal(realCIFAR.err)
	}
	return realCIFAR.train, realCIFAR.test
}

// cifarRecords builds n records of the CIFAR-10 binary format; record i has
// label label(i) and pixel bytes derived from i.
func cifarRecords(n int, label func(i int) byte) []byte {
	b := make([]byte, 0, n*CIFARRecordSize)
	for i := range n {
		b = append(b, label(i))
		for k := range cifarPixels {
			b = append(b, byte(i*7+k*13))
		}
	}
	return b
}
