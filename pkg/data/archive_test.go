package data

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tarEntry is one member of a crafted archive.
type tarEntry struct {
	name string
	typ  byte
	body []byte
	link string
}

func reg(name string, body []byte) tarEntry {
	return tarEntry{name: name, typ: tar.TypeReg, body: body}
}

// makeTarGz builds a gzip-compressed tar of the entries, as written.
func makeTarGz(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var smallRules = ArchiveRules{
	Root:     "set",
	Members:  map[string]int64{"a.bin": 100, "b.txt": 10},
	Required: []string{"a.bin"},
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExtractArchiveAcceptsExactLayout(t *testing.T) {
	dir := t.TempDir()
	arc := writeFile(t, dir, "ok.tar.gz", makeTarGz(t,
		tarEntry{name: "set/", typ: tar.TypeDir},
		reg("set/a.bin", bytes.Repeat([]byte{7}, 100)),
		reg("./set/b.txt", []byte("hello")),
	))
	dest := filepath.Join(dir, "out")
	got, err := ExtractArchive(arc, dest, smallRules)
	if err != nil {
		t.Fatal(err)
	}
	if got != filepath.Join(dest, "set") {
		t.Fatalf("extracted to %s", got)
	}
	b, err := os.ReadFile(filepath.Join(got, "a.bin"))
	if err != nil || !bytes.Equal(b, bytes.Repeat([]byte{7}, 100)) {
		t.Fatalf("a.bin: %v", err)
	}
	entries, _ := os.ReadDir(dest)
	if len(entries) != 1 {
		t.Fatalf("destination holds %d entries, want only set/ (no temporary directory)", len(entries))
	}
	// An existing result is never overwritten.
	if _, err := ExtractArchive(arc, dest, smallRules); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second extraction: %v", err)
	}
}

func TestExtractArchiveRejectsCraftedArchives(t *testing.T) {
	meta := []byte("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
	rec := cifarRecords(2, func(int) byte { return 0 })
	root := CIFARBatchesDir + "/"
	cases := []struct {
		name    string
		entries []tarEntry
		want    error
	}{
		{"absolute path", []tarEntry{reg("/tmp/ringtrain-evil", []byte("x"))}, ErrUnsafeArchive},
		{"dot-dot escape", []tarEntry{reg(root+"../../ringtrain-evil", []byte("x"))}, ErrUnsafeArchive},
		{"leading dot-dot", []tarEntry{reg("../ringtrain-evil", []byte("x"))}, ErrUnsafeArchive},
		{"symlink", []tarEntry{{name: root + "data_batch_1.bin", typ: tar.TypeSymlink, link: "/etc/passwd"}}, ErrUnsafeArchive},
		{"hard link", []tarEntry{{name: root + "data_batch_1.bin", typ: tar.TypeLink, link: "/etc/passwd"}}, ErrUnsafeArchive},
		{"device", []tarEntry{{name: root + "data_batch_1.bin", typ: tar.TypeChar}}, ErrUnsafeArchive},
		{"fifo", []tarEntry{{name: root + "data_batch_1.bin", typ: tar.TypeFifo}}, ErrUnsafeArchive},
		{"unexpected member", []tarEntry{reg(root+"run.sh", []byte("x"))}, ErrUnsafeArchive},
		{"member outside root", []tarEntry{reg("other/data_batch_1.bin", rec)}, ErrUnsafeArchive},
		{"member at top level", []tarEntry{reg("data_batch_1.bin", rec)}, ErrUnsafeArchive},
		{"nested directory", []tarEntry{{name: root + "sub/", typ: tar.TypeDir}}, ErrUnsafeArchive},
		{"backslash", []tarEntry{reg(root+`..\evil`, rec)}, ErrUnsafeArchive},
		{"oversize member", []tarEntry{reg(root+CIFARMetaFile, make([]byte, 5000))}, ErrUnsafeArchive},
		{"duplicate member", []tarEntry{reg(root+CIFARMetaFile, meta), reg(root+CIFARMetaFile, meta)}, ErrUnsafeArchive},
		{"missing members", []tarEntry{reg(root+CIFARMetaFile, meta)}, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			arc := writeFile(t, dir, "x.tar.gz", makeTarGz(t, c.entries...))
			dest := filepath.Join(dir, "data", "nested")
			_, err := ExtractArchive(arc, dest, CIFARArchiveRules)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if entries, _ := os.ReadDir(dest); len(entries) != 0 {
				t.Fatalf("refused archive left %d entries in the destination", len(entries))
			}
			for _, p := range []string{filepath.Join(dir, "data", "ringtrain-evil"), filepath.Join(dir, "ringtrain-evil"), "/tmp/ringtrain-evil"} {
				if _, err := os.Lstat(p); err == nil {
					t.Fatalf("%s was written", p)
				}
			}
		})
	}
}

func TestExtractArchiveRejectsDamagedStreams(t *testing.T) {
	dir := t.TempDir()
	good := makeTarGz(t, reg("set/a.bin", bytes.Repeat([]byte{1, 2, 3}, 30)))
	for name, b := range map[string][]byte{
		"not gzip":  []byte("PK\x03\x04 this is a zip"),
		"truncated": good[:len(good)/2],
		"garbage":   append(good[:12:12], bytes.Repeat([]byte{0xff}, 64)...),
	} {
		arc := writeFile(t, dir, "x.tar.gz", b)
		if _, err := ExtractArchive(arc, filepath.Join(dir, "out"), smallRules); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := ExtractArchive(filepath.Join(dir, "missing.tar.gz"), filepath.Join(dir, "out"), smallRules); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing archive: %v", err)
	}
}

// FuzzWalkArchive: arbitrary bytes as an archive are accepted or refused
// with ErrCorrupt or ErrUnsafeArchive; nothing panics and no accepted
// member breaks the rules.
func FuzzWalkArchive(f *testing.F) {
	f.Add(makeTarGz(f, reg("set/a.bin", []byte("abc"))))
	f.Add(makeTarGz(f, reg("set/../a.bin", []byte("abc"))))
	f.Add(makeTarGz(f, tarEntry{name: "set/a.bin", typ: tar.TypeSymlink, link: "/"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := walkArchive(bytes.NewReader(b), "fuzz", smallRules, func(name string, size int64, body io.Reader) error {
			if limit, ok := smallRules.Members[name]; !ok || size > limit {
				t.Fatalf("accepted member %q of %d bytes", name, size)
			}
			_, err := io.Copy(io.Discard, body)
			return err
		})
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsafeArchive) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
