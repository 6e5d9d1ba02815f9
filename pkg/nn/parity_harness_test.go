package nn_test

// Tests of the parity harness itself: a reference test is only worth
// something if it fails on a mismatch.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParityCompareDetectsMismatch(t *testing.T) {
	want := []float32{1, -2, 0.5, 4}
	if r := compare([]float32{1, -2, 0.5, 4}, want, nil, 1e-6); r.rel != 0 {
		t.Fatalf("identical tensors: relative error %g, want 0", r.rel)
	}
	// One element off by 1e-3 of the scale (4): relative error 1e-3.
	r := compare([]float32{1, -2, 0.5 + 0.004, 4}, want, nil, 1e-4)
	if math.Abs(r.rel-1e-3) > 1e-6 || r.worstIdx != 2 || r.beyond != 1 {
		t.Fatalf("one bad element: got rel %g idx %d beyond %d, want 1e-3, 2, 1", r.rel, r.worstIdx, r.beyond)
	}
	if r := compare([]float32{1, float32(math.NaN()), 0.5, 4}, want, nil, 1); !math.IsInf(r.rel, 1) {
		t.Fatalf("NaN: relative error %g, want +Inf", r.rel)
	}
	if r := compare([]float32{1, 2}, want, nil, 1); !math.IsInf(r.rel, 1) {
		t.Fatalf("length mismatch: relative error %g, want +Inf", r.rel)
	}
	// Update-relative: init 1, torch moved to 1.01, we moved to 1.011 → 0.1.
	r = compare([]float32{1.011}, []float32{1.01}, []float32{1}, 1e-3)
	if math.Abs(r.rel-0.1) > 1e-3 {
		t.Fatalf("update-relative error %g, want 0.1", r.rel)
	}
}

// recTB records Errorf calls instead of failing the test.
type recTB struct {
	testing.TB
	errs []string
}

func (r *recTB) Helper() {}
func (r *recTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recTB) Logf(string, ...any) {}

func TestParityTallyCountsFailures(t *testing.T) {
	rec := &recTB{TB: t}
	tl := &parityTally{}
	tl.check(rec, "a", []float32{1, 2}, []float32{1, 2}, nil, 1e-6)
	tl.check(rec, "b", []float32{1, 2.1}, []float32{1, 2}, nil, 1e-3)
	tl.checkExact(rec, "c", 4, 5)
	tl.pass(rec, "d")
	tl.fail(rec, "e", "engine error %d", 7)
	if tl.checks != 5 || tl.failed != 3 {
		t.Fatalf("tally: %d checks, %d failed; want 5, 3", tl.checks, tl.failed)
	}
	if len(rec.errs) != 3 || !strings.HasPrefix(rec.errs[0], "MISMATCH b:") {
		t.Fatalf("reports: %q", rec.errs)
	}
	if tl.worstName != "b" || math.Abs(tl.worst-0.05) > 1e-6 {
		t.Fatalf("worst: %s %g, want b 0.05", tl.worstName, tl.worst)
	}
}

func TestParityGoldenReaderRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(header string, data []byte) []byte {
		b := make([]byte, 8, 8+len(header)+len(data))
		binary.LittleEndian.PutUint64(b, uint64(len(header)))
		return append(append(b, header...), data...)
	}
	cases := map[string]struct {
		raw  []byte
		good bool
	}{
		"good":      {file(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}`, make([]byte, 16)), true},
		"truncated": {file(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)), false},
		"f16":       {file(`{"x":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}`, make([]byte, 8)), false},
		"lying":     {append([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, "{}"...), false},
	}
	for name, c := range cases {
		p := filepath.Join(dir, name+".safetensors")
		if err := os.WriteFile(p, c.raw, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := readGolden(p)
		switch {
		case c.good && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.good:
			if x, err := f.f32("x"); err != nil || len(x.F32) != 2 {
				t.Errorf("%s: tensor x: %v", name, err)
			}
			if _, err := f.labels("y"); err != nil {
				t.Errorf("%s: labels y: %v", name, err)
			}
			if _, err := f.f32("y"); !errors.Is(err, errGolden) {
				t.Errorf("%s: I64 y read as F32: error %v, want errGolden", name, err)
			}
		case !errors.Is(err, errGolden):
			t.Errorf("%s: error %v, want errGolden", name, err)
		}
	}
}
