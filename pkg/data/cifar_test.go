package data

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseCIFARBatchValid(t *testing.T) {
	b := cifarRecords(5, func(i int) byte { return byte(9 - i) })
	labels, pixels, err := ParseCIFARBatch("x.bin", b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(labels, []uint8{9, 8, 7, 6, 5}) {
		t.Fatalf("labels %v", labels)
	}
	for i := range 5 {
		if !slices.Equal(pixels[i*cifarPixels:(i+1)*cifarPixels], b[i*CIFARRecordSize+1:(i+1)*CIFARRecordSize]) {
			t.Fatalf("record %d pixels differ", i)
		}
	}
	ds, err := NewCIFAR10(labels, pixels, strings.Fields("a b c d e f g h i j"))
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, CIFARShape.Len())
	label, err := ds.Get(2, dst)
	if err != nil || label != 7 {
		t.Fatalf("Get(2) = %d, %v", label, err)
	}
	// Byte k of the record is channel k/1024, row (k/32)%32, column k%32.
	for _, k := range []int{0, 1, 31, 32, 1023, 1024, 2048, 3071} {
		want := float32(b[2*CIFARRecordSize+1+k]) / 255
		if dst[k] != want {
			t.Fatalf("value %d = %v, want %v", k, dst[k], want)
		}
	}
	if _, err := ds.Get(5, dst); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Get out of range: %v", err)
	}
	if _, err := ds.Get(0, dst[:10]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Get with short dst: %v", err)
	}
}

func TestParseCIFARBatchErrorsNameFileAndRecord(t *testing.T) {
	good := cifarRecords(5, func(i int) byte { return byte(i) })
	bad := slices.Clone(good)
	bad[3*CIFARRecordSize] = 10
	cases := []struct {
		name  string
		data  []byte
		wants []string
	}{
		{"empty", nil, []string{"f.bin", "empty"}},
		{"truncated", good[:len(good)-10], []string{"f.bin", "record 4", "truncated", "3063 of 3073"}},
		{"one byte over", append(slices.Clone(good), 0), []string{"f.bin", "record 5", "1 of 3073"}},
		{"bad label", bad, []string{"f.bin", "record 3", "label 10"}},
	}
	for _, c := range cases {
		_, _, err := ParseCIFARBatch("f.bin", c.data)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
			continue
		}
		for _, w := range c.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
}

func TestReadCIFARBatchAndLoadErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "data_batch_1.bin")
	if err := os.WriteFile(p, cifarRecords(3, func(int) byte { return 1 }), 0o644); err != nil {
		t.Fatal(err)
	}
	labels, _, err := ReadCIFARBatch(p)
	if err != nil || len(labels) != 3 {
		t.Fatalf("ReadCIFARBatch: %d labels, %v", len(labels), err)
	}
	if _, _, err := ReadCIFARBatch(filepath.Join(dir, "missing.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// LoadCIFAR10 wants batches.meta.txt ...
	if _, err := LoadCIFAR10(dir, Train); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no meta: %v", err)
	}
	meta := "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"
	if err := os.WriteFile(filepath.Join(dir, CIFARMetaFile), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	// ... and official files of exactly 10,000 records.
	_, err = LoadCIFAR10(dir, Train)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "data_batch_1.bin") || !strings.Contains(err.Error(), "3 records") {
		t.Fatalf("short batch file: %v", err)
	}
	if _, err := LoadCIFAR10(dir, Split(7)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad split: %v", err)
	}
}

func TestParseClassNames(t *testing.T) {
	names, err := ParseClassNames("m", []byte("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"))
	if err != nil || len(names) != 10 || names[9] != "truck" {
		t.Fatalf("%v %v", names, err)
	}
	for _, bad := range []string{"a\nb\n", "a\nb\nc\nd\ne\nf\ng\nh\ni\na\n", ""} {
		if _, err := ParseClassNames("m", []byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: %v, want ErrCorrupt", bad, err)
		}
	}
}

func TestNewCIFAR10Validates(t *testing.T) {
	classes := strings.Fields("a b")
	if _, err := NewCIFAR10(nil, nil, classes); !errors.Is(err, ErrInvalid) {
		t.Error("no records accepted")
	}
	if _, err := NewCIFAR10([]uint8{0}, make([]uint8, 5), classes); !errors.Is(err, ErrInvalid) {
		t.Error("short pixels accepted")
	}
	if _, err := NewCIFAR10([]uint8{2}, make([]uint8, cifarPixels), classes); !errors.Is(err, ErrInvalid) {
		t.Error("label beyond classes accepted")
	}
}

func TestRealCIFAR10Archive(t *testing.T) {
	train, test := loadRealCIFAR(t)
	want := strings.Fields("airplane automobile bird cat deer dog frog horse ship truck")
	if !slices.Equal(train.Classes(), want) {
		t.Fatalf("classes %v", train.Classes())
	}
	for _, c := range []struct {
		ds       *CIFAR10
		n, per   int
		mean0    float64
		split    string
		tolerant float64
	}{
		{train, 50000, 5000, 0.4913, "train", 0.0006},
		{test, 10000, 1000, 0.4941, "test", 0.0006},
	} {
		if c.ds.Len() != c.n {
			t.Fatalf("%s: %d images", c.split, c.ds.Len())
		}
		counts := make([]int, 10)
		for i := range c.ds.Len() {
			counts[c.ds.Label(i)]++
		}
		for k, n := range counts {
			if n != c.per {
				t.Fatalf("%s: class %d has %d images, want %d", c.split, k, n, c.per)
			}
		}
		// The red channel's mean, a figure published for this copy.
		var sum float64
		dst := make([]float32, CIFARShape.Len())
		for i := range c.ds.Len() {
			if _, err := c.ds.Get(i, dst); err != nil {
				t.Fatal(err)
			}
			for _, v := range dst[:1024] {
				sum += float64(v)
			}
		}
		if m := sum / float64(c.ds.Len()*1024); m < c.mean0-c.tolerant || m > c.mean0+c.tolerant {
			t.Fatalf("%s: red mean %.4f, want %.4f", c.split, m, c.mean0)
		}
	}
}

// FuzzParseCIFARBatch: any input either parses into consistent records or
// is refused with ErrCorrupt; nothing panics.
func FuzzParseCIFARBatch(f *testing.F) {
	f.Add(cifarRecords(2, func(i int) byte { return byte(i) }))
	f.Add(cifarRecords(1, func(int) byte { return 12 }))
	f.Add([]byte{})
	f.Add(make([]byte, CIFARRecordSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		labels, pixels, err := ParseCIFARBatch("fuzz.bin", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "fuzz.bin") {
				t.Fatalf("error %v does not wrap ErrCorrupt or name the file", err)
			}
			return
		}
		if len(labels)*CIFARRecordSize != len(b) || len(pixels) != len(labels)*cifarPixels {
			t.Fatalf("%d bytes parsed into %d labels, %d pixels", len(b), len(labels), len(pixels))
		}
		for i, l := range labels {
			if l > 9 || l != b[i*CIFARRecordSize] {
				t.Fatalf("record %d: label %d", i, l)
			}
		}
	})
}
