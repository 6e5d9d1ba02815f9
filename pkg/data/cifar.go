package data

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The CIFAR-10 binary format: every record is one label byte (0-9) followed
// by the 32x32 red, green and blue planes, row-major, one byte per pixel.
const (
	// CIFARRecordSize is the size in bytes of one record.
	CIFARRecordSize = 1 + cifarPixels
	// CIFARRecordsPerFile is the record count of every official batch file.
	CIFARRecordsPerFile = 10000
	// CIFARBatchesDir is the directory the official archive unpacks to.
	CIFARBatchesDir = "cifar-10-batches-bin"
	// CIFARMetaFile lists the class names, one per line, in label order.
	CIFARMetaFile = "batches.meta.txt"

	cifarSide    = 32
	cifarPixels  = 3 * cifarSide * cifarSide
	cifarClasses = 10
)

// CIFARShape is the size of a CIFAR-10 image.
var CIFARShape = Shape{C: 3, H: cifarSide, W: cifarSide}

// Split selects the training or the test part of a dataset.
type Split int

const (
	// Train is the training split (CIFAR-10: data_batch_1..5.bin, 50,000 images).
	Train Split = iota
	// Test is the test split (CIFAR-10: test_batch.bin, 10,000 images).
	Test
)

func (s Split) String() string {
	switch s {
	case Train:
		return "train"
	case Test:
		return "test"
	}
	return fmt.Sprintf("Split(%d)", int(s))
}

// CIFARFiles returns the batch file names of a split, in reading order.
func CIFARFiles(s Split) ([]string, error) {
	switch s {
	case Train:
		return []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}, nil
	case Test:
		return []string{"test_batch.bin"}, nil
	}
	return nil, fmt.Errorf("%w: unknown split %v", ErrInvalid, s)
}

// ParseCIFARBatch checks and splits the contents of one CIFAR-10 binary
// batch file. name is only used in errors. It returns one label per record
// and the records' pixels, packed (record i's pixels are
// pixels[i*3072:(i+1)*3072]). An empty file, a size that is not a multiple
// of 3073 bytes or a label outside 0-9 is an error wrapping [ErrCorrupt]
// that names the file and the record.
func ParseCIFARBatch(name string, b []byte) (labels []uint8, pixels []uint8, err error) {
	if err := checkBatchSize(name, len(b)); err != nil {
		return nil, nil, err
	}
	n := len(b) / CIFARRecordSize
	labels = make([]uint8, n)
	pixels = make([]uint8, n*cifarPixels)
	if err := parseRecords(name, b, labels, pixels); err != nil {
		return nil, nil, err
	}
	return labels, pixels, nil
}

// parseRecords splits whole records b into labels and pixels, which must
// have room for exactly len(b)/CIFARRecordSize records.
func parseRecords(name string, b []byte, labels, pixels []uint8) error {
	for i := range labels {
		rec := b[i*CIFARRecordSize : (i+1)*CIFARRecordSize]
		if rec[0] >= cifarClasses {
			return fmt.Errorf("%w: %s: record %d (byte offset %d): label %d outside 0-%d",
				ErrCorrupt, name, i, i*CIFARRecordSize, rec[0], cifarClasses-1)
		}
		labels[i] = rec[0]
		copy(pixels[i*cifarPixels:(i+1)*cifarPixels], rec[1:])
	}
	return nil
}

// ReadCIFARBatch reads and checks one CIFAR-10 binary batch file of any
// positive number of records (see [ParseCIFARBatch]).
func ReadCIFARBatch(path string) (labels []uint8, pixels []uint8, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("data: read CIFAR-10 batch: %w", err)
	}
	return ParseCIFARBatch(path, b)
}

// ParseClassNames parses batches.meta.txt: one class name per line, in
// label order; blank lines and surrounding spaces are ignored. It wants
// exactly 10 distinct names.
func ParseClassNames(name string, b []byte) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		if seen[s] {
			return nil, fmt.Errorf("%w: %s: line %d: class %q listed twice", ErrCorrupt, name, line, s)
		}
		seen[s] = true
		names = append(names, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	if len(names) != cifarClasses {
		return nil, fmt.Errorf("%w: %s: %d class names, expected %d", ErrCorrupt, name, len(names), cifarClasses)
	}
	return names, nil
}

// CIFAR10 is one split of CIFAR-10 held in memory (about 150 MB for the
// training split). It implements [Dataset]; Get is safe for concurrent use.
type CIFAR10 struct {
	labels  []uint8
	pixels  []uint8 // len(labels) records of 3072 bytes: R, G, B planes
	classes []string
}

var _ Dataset = (*CIFAR10)(nil)

// NewCIFAR10 wraps already parsed records (as returned by
// [ParseCIFARBatch], concatenated) and class names.
func NewCIFAR10(labels, pixels []uint8, classes []string) (*CIFAR10, error) {
	if len(labels) == 0 {
		return nil, fmt.Errorf("%w: no records", ErrInvalid)
	}
	if len(pixels) != len(labels)*cifarPixels {
		return nil, fmt.Errorf("%w: %d labels need %d pixel bytes, got %d", ErrInvalid, len(labels), len(labels)*cifarPixels, len(pixels))
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("%w: no class names", ErrInvalid)
	}
	for i, l := range labels {
		if int(l) >= len(classes) {
			return nil, fmt.Errorf("%w: record %d: label %d but only %d classes", ErrInvalid, i, l, len(classes))
		}
	}
	return &CIFAR10{labels: labels, pixels: pixels, classes: append([]string(nil), classes...)}, nil
}

// LoadCIFAR10 reads one split from dir, which is either the directory that
// holds cifar-10-batches-bin/ (the data directory) or cifar-10-batches-bin/
// itself. Every batch file must hold exactly 10,000 valid records; class
// names come from batches.meta.txt.
func LoadCIFAR10(dir string, split Split) (*CIFAR10, error) {
	files, err := CIFARFiles(split)
	if err != nil {
		return nil, err
	}
	base := dir
	if _, err := os.Stat(filepath.Join(dir, CIFARBatchesDir)); err == nil {
		base = filepath.Join(dir, CIFARBatchesDir)
	}
	meta, err := os.ReadFile(filepath.Join(base, CIFARMetaFile))
	if err != nil {
		return nil, fmt.Errorf("data: CIFAR-10 class names: %w", err)
	}
	classes, err := ParseClassNames(filepath.Join(base, CIFARMetaFile), meta)
	if err != nil {
		return nil, err
	}
	labels := make([]uint8, len(files)*CIFARRecordsPerFile)
	pixels := make([]uint8, len(files)*CIFARRecordsPerFile*cifarPixels)
	for k, f := range files {
		path := filepath.Join(base, f)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("data: read CIFAR-10 batch: %w", err)
		}
		if err := parseStandardBatch(path, b, labels, pixels, k); err != nil {
			return nil, err
		}
	}
	return NewCIFAR10(labels, pixels, classes)
}

// parseStandardBatch checks that b is an official batch file (exactly
// 10,000 valid records) and parses it into slot k of labels and pixels,
// which have room for whole files.
func parseStandardBatch(name string, b []byte, labels, pixels []uint8, k int) error {
	if err := checkBatchSize(name, len(b)); err != nil {
		return err
	}
	if want := CIFARRecordsPerFile * CIFARRecordSize; len(b) != want {
		return fmt.Errorf("%w: %s: %d records, an official batch file has %d (%d bytes)",
			ErrCorrupt, name, len(b)/CIFARRecordSize, CIFARRecordsPerFile, want)
	}
	const n = CIFARRecordsPerFile
	return parseRecords(name, b, labels[k*n:(k+1)*n], pixels[k*n*cifarPixels:(k+1)*n*cifarPixels])
}

// checkBatchSize rejects empty files and partial records.
func checkBatchSize(name string, size int) error {
	if size == 0 {
		return fmt.Errorf("%w: %s: empty file, expected records of %d bytes", ErrCorrupt, name, CIFARRecordSize)
	}
	if rem := size % CIFARRecordSize; rem != 0 {
		return fmt.Errorf("%w: %s: size %d bytes is not a multiple of %d: record %d is truncated (%d of %d bytes)",
			ErrCorrupt, name, size, CIFARRecordSize, size/CIFARRecordSize, rem, CIFARRecordSize)
	}
	return nil
}

// Len is the number of images.
func (c *CIFAR10) Len() int { return len(c.labels) }

// Shape is 3x32x32.
func (c *CIFAR10) Shape() Shape { return CIFARShape }

// Classes returns the class names in label order (a copy).
func (c *CIFAR10) Classes() []string { return append([]string(nil), c.classes...) }

// Label returns the label of image i without decoding it.
func (c *CIFAR10) Label(i int) int { return int(c.labels[i]) }

// Get writes image i as float32 in [0, 1] (byte/255, as torchvision's
// ToTensor) into dst and returns its label.
func (c *CIFAR10) Get(i int, dst []float32) (int, error) {
	if err := checkGet(i, len(c.labels), dst, CIFARShape); err != nil {
		return 0, err
	}
	src := c.pixels[i*cifarPixels : (i+1)*cifarPixels]
	dst = dst[:len(src)]
	for k, v := range src {
		dst[k] = byteToUnit[v]
	}
	return int(c.labels[i]), nil
}
