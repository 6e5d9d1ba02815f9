package nn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// stFile assembles a safetensors file from a raw header and data buffer.
func stFile(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	return append(append(out, header...), data...)
}

func sampleTensors(t testing.TB) []*STTensor {
	t.Helper()
	a, err := F32Tensor("layer1.0.conv1.weight", []int{2, 3}, []float32{1, -2, 3.5, 0, float32(math.Inf(1)), -0.125})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := I64Tensor("bn1.num_batches_tracked", []int{}, []int64{12345678901})
	h, _ := F16Tensor("half", []int{3}, []float32{1, -2, 65504})
	bf, _ := BF16Tensor("bf", []int{2, 1}, []float32{1.5, -3})
	e, _ := F32Tensor("empty", []int{0, 4}, nil)
	return []*STTensor{a, n, h, bf, e}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.safetensors")
	meta := map[string]string{"format": "pt", "epoch": "3"}
	if err := WriteSafetensorsFile(path, sampleTensors(t), meta); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSafetensorsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Metadata["epoch"] != "3" || s.Metadata["format"] != "pt" || len(s.Metadata) != 2 {
		t.Fatalf("metadata %v", s.Metadata)
	}
	if len(s.Tensors) != 5 {
		t.Fatalf("%d tensors", len(s.Tensors))
	}
	w, _ := s.Get("layer1.0.conv1.weight")
	v, err := w.Float32()
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{1, -2, 3.5, 0, float32(math.Inf(1)), -0.125}
	for i := range want {
		if v[i] != want[i] {
			t.Fatalf("weight %v, want %v", v, want)
		}
	}
	if !SameShape(w.Shape, []int{2, 3}) {
		t.Fatalf("shape %v", w.Shape)
	}
	n, _ := s.Get("bn1.num_batches_tracked")
	if iv, err := n.Int64(); err != nil || iv[0] != 12345678901 || len(n.Shape) != 0 {
		t.Fatalf("count %v %v shape %v", iv, err, n.Shape)
	}
	if _, err := n.Float32(); !errors.Is(err, ErrSTWrongDType) {
		t.Fatalf("I64 as float32: %v", err)
	}
	if _, err := w.Int64(); !errors.Is(err, ErrSTWrongDType) {
		t.Fatalf("F32 as int64: %v", err)
	}
	h, _ := s.Get("half")
	if hv, _ := h.Float32(); hv[0] != 1 || hv[1] != -2 || hv[2] != 65504 {
		t.Fatalf("half %v", hv)
	}
	bf, _ := s.Get("bf")
	if bv, _ := bf.Float32(); bv[0] != 1.5 || bv[1] != -3 {
		t.Fatalf("bf16 %v", bv)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrSTNotFound) {
		t.Fatalf("missing name: %v", err)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after an atomic write", len(entries))
	}
}

// TestSafetensorsLayout pins the byte layout to the reference
// implementation's: __metadata__ first, data by element size (largest
// first) then name, header padded with spaces to a multiple of 8.
func TestSafetensorsLayout(t *testing.T) {
	a, _ := F32Tensor("b", []int{1}, []float32{1})
	c, _ := F32Tensor("a", []int{1}, []float32{2})
	n, _ := I64Tensor("z", []int{}, []int64{7})
	var buf bytes.Buffer
	if err := EncodeSafetensors(&buf, []*STTensor{a, c, n}, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	header := `{"__metadata__":{"format":"pt"},` +
		`"z":{"dtype":"I64","shape":[],"data_offsets":[0,8]},` +
		`"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},` +
		`"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}`
	for len(header)%8 != 0 {
		header += " "
	}
	data := []byte{7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0x80, 0x3f}
	if want := stFile(header, data); !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("encoded\n%q\nwant\n%q", buf.Bytes(), want)
	}
	// No tensors at all: "{}" padded.
	buf.Reset()
	if err := EncodeSafetensors(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if want := stFile("{}      ", nil); !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("empty file %q", buf.Bytes())
	}
}

func TestSafetensorsEncodeRejects(t *testing.T) {
	a, _ := F32Tensor("a", []int{1}, []float32{1})
	bad := map[string][]*STTensor{
		"duplicate":    {a, a},
		"empty name":   {{Name: "", DType: F32, Shape: []int{}, Data: make([]byte, 4)}},
		"metadata":     {{Name: "__metadata__", DType: F32, Shape: []int{}, Data: make([]byte, 4)}},
		"dtype":        {{Name: "x", DType: "Q4", Shape: []int{}, Data: make([]byte, 4)}},
		"size":         {{Name: "x", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}},
		"negative dim": {{Name: "x", DType: F32, Shape: []int{-1}, Data: nil}},
		"nil":          {nil},
	}
	for name, ts := range bad {
		if err := EncodeSafetensors(&bytes.Buffer{}, ts, nil); !errors.Is(err, ErrSafetensors) {
			t.Errorf("%s: %v, want ErrSafetensors", name, err)
		}
	}
	if _, err := F32Tensor("x", []int{2, 2}, []float32{1}); !errors.Is(err, ErrShape) {
		t.Errorf("F32Tensor size mismatch: %v", err)
	}
}

// TestSafetensorsRejects feeds every kind of malformed file and checks the
// specific error and that the message names the offending tensor.
func TestSafetensorsRejects(t *testing.T) {
	f32 := func(name, shape, offs string) string {
		return `"` + name + `":{"dtype":"F32","shape":` + shape + `,"data_offsets":` + offs + `}`
	}
	lenPrefix := func(n uint64, rest []byte) []byte {
		out := make([]byte, 8)
		binary.LittleEndian.PutUint64(out, n)
		return append(out, rest...)
	}
	cases := []struct {
		name string
		file []byte
		kind error
		who  string // must appear in the message
	}{
		{"short", []byte{1, 2, 3}, ErrSTTruncated, ""},
		{"huge header", lenPrefix(1<<40, []byte("{}")), ErrSTHeaderSize, ""},
		{"header past end", lenPrefix(1000, []byte("{}")), ErrSTTruncated, ""},
		{"not json", stFile("{nope", nil), ErrSTHeader, ""},
		{"not an object", stFile("[1,2]   ", nil), ErrSTHeader, ""},
		{"bad utf8", stFile("{\"\xff\":1}", nil), ErrSTHeader, ""},
		{"trailing", stFile("{} {}", nil), ErrSTHeader, ""},
		{"entry not object", stFile(`{"w":5}`, nil), ErrSTHeader, "w"},
		{"empty name", stFile("{"+f32("", "[1]", "[0,4]")+"}", make([]byte, 4)), ErrSTHeader, ""},
		{"missing field", stFile(`{"w":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), ErrSTHeader, "w"},
		{"unknown dtype", stFile(`{"w":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrSTDType, "w"},
		{"duplicate", stFile("{"+f32("w", "[1]", "[0,4]")+","+f32("w", "[1]", "[4,8]")+"}", make([]byte, 8)), ErrSTDuplicate, "w"},
		{"duplicate metadata", stFile(`{"__metadata__":{},"__metadata__":{}}`, nil), ErrSTDuplicate, "__metadata__"},
		{"metadata not strings", stFile(`{"__metadata__":{"a":1}}`, nil), ErrSTHeader, "a"},
		{"negative dim", stFile("{"+f32("w", "[-1]", "[0,4]")+"}", make([]byte, 4)), ErrSTHeader, "w"},
		{"fractional dim", stFile("{"+f32("w", "[1.5]", "[0,4]")+"}", make([]byte, 4)), ErrSTHeader, "w"},
		{"offsets reversed", stFile("{"+f32("w", "[1]", "[4,0]")+"}", make([]byte, 4)), ErrSTOffsets, "w"},
		{"offsets wrong count", stFile("{"+f32("w", "[1]", "[0]")+"}", make([]byte, 4)), ErrSTOffsets, "w"},
		{"offset past end", stFile("{"+f32("w", "[2]", "[0,8]")+"}", make([]byte, 4)), ErrSTTruncated, "w"},
		{"size mismatch", stFile("{"+f32("w", "[2]", "[0,4]")+"}", make([]byte, 4)), ErrSTSizeMismatch, "w"},
		{"overflowing shape", stFile("{"+f32("w", "[4294967296,4294967296,4294967296]", "[0,4]")+"}", make([]byte, 4)), ErrSTSizeMismatch, "w"},
		{"overlap", stFile("{"+f32("a", "[2]", "[0,8]")+","+f32("b", "[2]", "[4,12]")+"}", make([]byte, 12)), ErrSTOffsets, "b"},
		{"gap", stFile("{"+f32("a", "[1]", "[0,4]")+","+f32("b", "[1]", "[8,12]")+"}", make([]byte, 12)), ErrSTOffsets, "b"},
		{"trailing data", stFile("{"+f32("a", "[1]", "[0,4]")+"}", make([]byte, 8)), ErrSTOffsets, ""},
		{"truncated data", stFile("{"+f32("a", "[1]", "[0,4]")+","+f32("b", "[1]", "[4,8]")+"}", make([]byte, 6)), ErrSTTruncated, "b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSafetensors(c.file)
			if !errors.Is(err, ErrSafetensors) || !errors.Is(err, c.kind) {
				t.Fatalf("error %v, want ErrSafetensors and %v", err, c.kind)
			}
			if c.who != "" && !strings.Contains(err.Error(), `"`+c.who+`"`) {
				t.Fatalf("error %q does not name %q", err, c.who)
			}
		})
	}
	// A truncated real file fails at every cut.
	var buf bytes.Buffer
	if err := EncodeSafetensors(&buf, sampleTensors(t), map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	for cut := 0; cut < len(full); cut++ {
		if _, err := ParseSafetensors(full[:cut]); !errors.Is(err, ErrSafetensors) {
			t.Fatalf("file cut at %d/%d: %v", cut, len(full), err)
		}
	}
	if _, err := ParseSafetensors(full); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSafetensorsFile(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestSafetensorsNoAllocationFromLyingHeader: headers that promise huge
// sizes must be refused before anything of that size is allocated.
func TestSafetensorsNoAllocationFromLyingHeader(t *testing.T) {
	lies := [][]byte{
		stFile(`{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}`, make([]byte, 16)),
		stFile(`{"w":{"dtype":"F64","shape":[100000,100000],"data_offsets":[0,16]}}`, make([]byte, 16)),
		append(binary.LittleEndian.AppendUint64(nil, 90_000_000), "{}"...),
	}
	for i, f := range lies {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := ParseSafetensors(f); !errors.Is(err, ErrSafetensors) {
			t.Fatalf("lie %d accepted: %v", i, err)
		}
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Fatalf("lie %d: %d bytes allocated", i, d)
		}
	}
}

func TestHalfConversions(t *testing.T) {
	known := map[uint16]float32{
		0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: float32(math.Ldexp(1, -24)),
		0x03ff: float32(math.Ldexp(1023, -24)), 0x0400: float32(math.Ldexp(1, -14)), 0x3555: 0.333251953125,
		0x7c00: float32(math.Inf(1)), 0xfc00: float32(math.Inf(-1)),
	}
	for h, f := range known {
		if got := HalfToFloat32(h); got != f {
			t.Errorf("HalfToFloat32(%#04x) = %v, want %v", h, got, f)
		}
		if got := Float32ToHalf(f); got != h {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", f, got, h)
		}
	}
	// Every half survives the round trip (NaNs stay NaN).
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := HalfToFloat32(h)
		back := Float32ToHalf(f)
		if f != f {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("half %#04x → %v → %#04x", h, f, back)
		}
	}
	// Rounding: halfway between two halves goes to the even one; anything
	// above the midpoint goes up; overflow goes to Inf.
	one, next := float64(1), 1+math.Ldexp(1, -10)
	if got := Float32ToHalf(float32((one + next) / 2)); got != 0x3c00 {
		t.Errorf("tie 1 → %#04x, want 0x3c00 (even)", got)
	}
	if got := Float32ToHalf(float32((one+next)/2 + math.Ldexp(1, -20))); got != 0x3c01 {
		t.Errorf("above tie → %#04x, want 0x3c01", got)
	}
	if got := Float32ToHalf(65520); got != 0x7c00 {
		t.Errorf("65520 → %#04x, want Inf", got)
	}
	if got := Float32ToHalf(float32(math.Ldexp(1, -25))); got != 0 {
		t.Errorf("2^-25 → %#04x, want 0 (tie to even)", got)
	}
	if got := Float32ToHalf(float32(math.Ldexp(1.5, -25))); got != 1 {
		t.Errorf("1.5*2^-25 → %#04x, want 1", got)
	}
	// bfloat16.
	for _, c := range []struct {
		f float32
		b uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {float32(math.Inf(1)), 0x7f80}, {1 + 1.0/256, 0x3f80}, {1 + 3.0/256, 0x3f82}, {1 + 1.0/128 + 1.0/1024, 0x3f81}} {
		if got := Float32ToBF16(c.f); got != c.b {
			t.Errorf("Float32ToBF16(%v) = %#04x, want %#04x", c.f, got, c.b)
		}
	}
	if b := Float32ToBF16(float32(math.NaN())); b&0x7f80 != 0x7f80 || b&0x7f == 0 {
		t.Errorf("NaN → %#04x", b)
	}
}

// A failing writer leaves the old file and no temporary file behind.
func TestWriteFileAtomicFuncKeepsOldFileOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	if err := WriteFileAtomic(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := WriteFileAtomicFunc(path, func(w io.Writer) error {
		if _, err := w.Write(make([]byte, 3<<20)); err != nil { // past the buffer: reaches the file
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want the writer's error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("file now holds %d bytes, want the old content", len(b))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the file", len(ents))
	}
}
