package data

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// ErrUnsafeArchive is wrapped by every refusal to extract an archive member:
// an absolute or escaping path, a link or device, a member that is not on
// the expected list, a duplicate, or a member larger than allowed.
var ErrUnsafeArchive = errors.New("data: unsafe archive")

// ArchiveRules is the exact shape a tar.gz must have to be accepted: one
// top-level directory Root holding only the named regular files.
type ArchiveRules struct {
	// Root is the single top-level directory, e.g. "cifar-10-batches-bin".
	Root string
	// Members maps each allowed file name inside Root to its largest
	// acceptable size in bytes.
	Members map[string]int64
	// Required lists the members that must be present.
	Required []string
}

// CIFARArchiveRules describes the official CIFAR-10 binary archive. Its
// readme.html is allowed but not required.
var CIFARArchiveRules = ArchiveRules{
	Root: CIFARBatchesDir,
	Members: map[string]int64{
		"data_batch_1.bin": CIFARRecordsPerFile * CIFARRecordSize,
		"data_batch_2.bin": CIFARRecordsPerFile * CIFARRecordSize,
		"data_batch_3.bin": CIFARRecordsPerFile * CIFARRecordSize,
		"data_batch_4.bin": CIFARRecordsPerFile * CIFARRecordSize,
		"data_batch_5.bin": CIFARRecordsPerFile * CIFARRecordSize,
		"test_batch.bin":   CIFARRecordsPerFile * CIFARRecordSize,
		CIFARMetaFile:      4 << 10,
		"readme.html":      1 << 20,
	},
	Required: []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
		"data_batch_5.bin", "test_batch.bin", CIFARMetaFile},
}

// memberName checks a tar header against the rules and returns the file's
// base name inside Root, or "" for the Root directory entry itself.
func (r ArchiveRules) memberName(h *tar.Header) (string, error) {
	raw := h.Name
	unsafe := func(why string) error {
		return fmt.Errorf("%w: member %q: %s", ErrUnsafeArchive, raw, why)
	}
	switch {
	case raw == "":
		return "", unsafe("empty name")
	case strings.HasPrefix(raw, "/") || filepath.IsAbs(raw) || (len(raw) > 1 && raw[1] == ':'):
		return "", unsafe("absolute path")
	case strings.ContainsAny(raw, "\\\x00"):
		return "", unsafe("backslash or NUL in name")
	}
	if slices.Contains(strings.Split(raw, "/"), "..") {
		return "", unsafe(`path contains ".."`)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		return "", unsafe("symbolic link to " + h.Linkname)
	case tar.TypeLink:
		return "", unsafe("hard link to " + h.Linkname)
	default:
		return "", unsafe(fmt.Sprintf("unsupported member type %q", h.Typeflag))
	}
	name := strings.TrimPrefix(path.Clean(raw), "./")
	if h.Typeflag == tar.TypeDir {
		if name != r.Root {
			return "", unsafe("unexpected directory")
		}
		return "", nil
	}
	dir, base := path.Split(name)
	if dir != r.Root+"/" {
		return "", unsafe("outside " + r.Root + "/")
	}
	limit, ok := r.Members[base]
	if !ok {
		return "", unsafe("not an expected member")
	}
	if h.Size < 0 || h.Size > limit {
		return "", unsafe(fmt.Sprintf("size %d bytes exceeds the limit of %d", h.Size, limit))
	}
	return base, nil
}

// walkArchive streams a tar.gz and calls fn for every accepted regular file
// with its base name and contents (exactly hdr.Size bytes). It stops at the
// first refusal or error, and checks that every required member was seen.
func walkArchive(src io.Reader, label string, rules ArchiveRules, fn func(name string, size int64, body io.Reader) error) error {
	zr, err := gzip.NewReader(src)
	if err != nil {
		return fmt.Errorf("%w: %s: not a gzip stream: %w", ErrCorrupt, label, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, label, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX metadata, not a file
		}
		name, err := rules.memberName(h)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		if name == "" {
			continue
		}
		if seen[name] {
			return fmt.Errorf("%w: %s: member %q appears twice", ErrUnsafeArchive, label, h.Name)
		}
		seen[name] = true
		if err := fn(name, h.Size, corruptReader{tr, label, h.Name}); err != nil {
			return err
		}
	}
	for _, req := range rules.Required {
		if !seen[req] {
			return fmt.Errorf("%w: %s: member %s/%s is missing", ErrCorrupt, label, rules.Root, req)
		}
	}
	return nil
}

// corruptReader marks read errors of an archive member (a damaged or
// truncated stream) as ErrCorrupt.
type corruptReader struct {
	r            io.Reader
	label, where string
}

func (c corruptReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %s: member %s: %w", ErrCorrupt, c.label, c.where, err)
	}
	return n, err
}

// ExtractArchive unpacks the tar.gz at archive into destDir, accepting only
// what rules allow (see [ErrUnsafeArchive]). It extracts into a fresh
// temporary directory inside destDir and renames the finished Root into
// place, so destDir/Root either does not exist or is complete. It refuses to
// replace an existing destDir/Root. It returns the path of destDir/Root.
func ExtractArchive(archive, destDir string, rules ArchiveRules) (string, error) {
	final := filepath.Join(destDir, rules.Root)
	if _, err := os.Lstat(final); err == nil {
		return "", fmt.Errorf("%w: %s already exists; remove it to extract again", ErrInvalid, final)
	}
	f, err := os.Open(archive)
	if err != nil {
		return "", fmt.Errorf("data: open archive: %w", err)
	}
	defer f.Close()
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return "", fmt.Errorf("data: create data directory: %w", err)
	}
	tmp, err := os.MkdirTemp(destDir, ".extract-*")
	if err != nil {
		return "", fmt.Errorf("data: create extraction directory: %w", err)
	}
	defer os.RemoveAll(tmp) // after the rename only the empty temp dir is left
	root := filepath.Join(tmp, rules.Root)
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", fmt.Errorf("data: create extraction directory: %w", err)
	}
	err = walkArchive(f, archive, rules, func(name string, size int64, body io.Reader) error {
		return writeMember(filepath.Join(root, name), size, body)
	})
	if err != nil {
		return "", err
	}
	if err := os.Rename(root, final); err != nil {
		return "", fmt.Errorf("data: place extracted %s: %w", rules.Root, err)
	}
	syncDir(destDir)
	return final, nil
}

// writeMember creates path (which must not exist) with exactly size bytes
// from body and flushes it to disk.
func writeMember(path string, size int64, body io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("data: extract: %w", err)
	}
	n, err := io.Copy(out, io.LimitReader(body, size))
	if err == nil && n != size {
		err = fmt.Errorf("%w: %s: archive member truncated at %d of %d bytes", ErrCorrupt, filepath.Base(path), n, size)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("data: extract %s: %w", filepath.Base(path), err)
	}
	return nil
}

// syncDir flushes a directory entry change (a rename) to disk; failures
// are ignored because some file systems do not support it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// LoadCIFAR10Archive reads one split straight from a CIFAR-10 binary
// tar.gz without extracting it to disk, with the same member checks as
// [ExtractArchive] and the same record checks as [LoadCIFAR10].
func LoadCIFAR10Archive(archive string, split Split) (*CIFAR10, error) {
	sets, err := loadArchive(archive, split)
	if err != nil {
		return nil, err
	}
	return sets[0], nil
}

// LoadCIFAR10ArchiveAll reads both splits in one pass over the archive
// (decompressing it once), like two calls of [LoadCIFAR10Archive].
func LoadCIFAR10ArchiveAll(archive string) (train, test *CIFAR10, err error) {
	sets, err := loadArchive(archive, Train, Test)
	if err != nil {
		return nil, nil, err
	}
	return sets[0], sets[1], nil
}

// loadArchive reads the given splits in one pass over the archive.
func loadArchive(archive string, splits ...Split) ([]*CIFAR10, error) {
	type part struct {
		files          []string
		labels, pixels []uint8
	}
	parts := make([]part, len(splits))
	for k, sp := range splits {
		files, err := CIFARFiles(sp)
		if err != nil {
			return nil, err
		}
		parts[k] = part{
			files:  files,
			labels: make([]uint8, len(files)*CIFARRecordsPerFile),
			pixels: make([]uint8, len(files)*CIFARRecordsPerFile*cifarPixels),
		}
	}
	f, err := os.Open(archive)
	if err != nil {
		return nil, fmt.Errorf("data: open archive: %w", err)
	}
	defer f.Close()
	var classes []string
	err = walkArchive(f, archive, CIFARArchiveRules, func(name string, size int64, body io.Reader) error {
		p, k := -1, -1
		for i := range parts {
			if j := slices.Index(parts[i].files, name); j >= 0 {
				p, k = i, j
			}
		}
		if name != CIFARMetaFile && p < 0 {
			return nil // a file of a split not asked for: skipped by the tar reader
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(body, b); err != nil {
			return fmt.Errorf("%w: %s: member %s truncated: %w", ErrCorrupt, archive, name, err)
		}
		label := archive + ":" + CIFARBatchesDir + "/" + name
		if name == CIFARMetaFile {
			classes, err = ParseClassNames(label, b)
			return err
		}
		return parseStandardBatch(label, b, parts[p].labels, parts[p].pixels, k)
	})
	if err != nil {
		return nil, err
	}
	out := make([]*CIFAR10, len(parts))
	for i, p := range parts {
		if out[i], err = NewCIFAR10(p.labels, p.pixels, classes); err != nil {
			return nil, err
		}
	}
	return out, nil
}
