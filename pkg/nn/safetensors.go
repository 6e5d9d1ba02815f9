package nn

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"unicode/utf8"

	"github.com/ringtrain/ringtrain/internal/atomicfile"
)

// Safetensors I/O (https://github.com/huggingface/safetensors format):
//
//	8 bytes   little-endian uint64 N, the header length
//	N bytes   JSON object {name: {"dtype", "shape", "data_offsets": [begin, end]}, …,
//	          optional "__metadata__": {string: string}}, padded with spaces
//	rest      the data buffer; offsets are relative to its start
//
// The reader is strict, like the reference implementation: a header longer
// than 100 MB or than the file, invalid JSON or UTF-8, an unknown dtype, a
// duplicate name, offsets that are out of range, overlap, leave gaps or
// disagree with dtype×shape, or a truncated file are all rejected with an
// error naming the tensor. Nothing is allocated from header numbers before
// they are checked against the real size of the input.

// MaxSafetensorsHeader is the largest header accepted (the reference
// implementation's limit).
const MaxSafetensorsHeader = 100_000_000

// ErrSafetensors is wrapped by every error about a malformed safetensors
// file; each such error also wraps one of the more specific errors below.
var ErrSafetensors = errors.New("nn: invalid safetensors data")

// Specific safetensors errors; each is returned together with ErrSafetensors.
var (
	ErrSTTruncated    = errors.New("truncated")
	ErrSTHeaderSize   = errors.New("bad header length")
	ErrSTHeader       = errors.New("bad header")
	ErrSTDType        = errors.New("unknown dtype")
	ErrSTDuplicate    = errors.New("duplicate tensor name")
	ErrSTOffsets      = errors.New("bad data offsets")
	ErrSTSizeMismatch = errors.New("data size does not match dtype and shape")
)

// ErrSTNotFound is returned by Safetensors accessors for a missing name.
var ErrSTNotFound = errors.New("nn: no such tensor in safetensors data")

// ErrSTWrongDType is returned when an accessor cannot convert a tensor's dtype.
var ErrSTWrongDType = errors.New("nn: safetensors dtype cannot be read as requested")

func stErr(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrSafetensors, kind}, args...)...)
}

// DType is a safetensors element type.
type DType string

// The dtypes ringtrain reads. F16, BF16 and F64 are converted to float32 on
// read; I64 holds BatchNorm's num_batches_tracked.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	F64  DType = "F64"
	I64  DType = "I64"
)

// Size is the element size in bytes (0 for an unknown dtype).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case F64, I64:
		return 8
	}
	return 0
}

// STTensor is one tensor of a safetensors file: its raw little-endian
// bytes, len(Data) == Numel()*DType.Size().
type STTensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// Numel is the number of elements (1 for a scalar, shape []).
func (t *STTensor) Numel() int { return numel(t.Shape) }

// Float32 decodes the tensor as float32 (F32 as is; F16, BF16 exactly;
// F64 rounded to nearest).
func (t *STTensor) Float32() ([]float32, error) {
	n := t.Numel()
	out := make([]float32, n)
	switch t.DType {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(t.Data[2*i:])) << 16)
		}
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		}
	default:
		return nil, fmt.Errorf("%w: tensor %q is %s, not a float type", ErrSTWrongDType, t.Name, t.DType)
	}
	return out, nil
}

// Int64 decodes an I64 tensor.
func (t *STTensor) Int64() ([]int64, error) {
	if t.DType != I64 {
		return nil, fmt.Errorf("%w: tensor %q is %s, not I64", ErrSTWrongDType, t.Name, t.DType)
	}
	out := make([]int64, t.Numel())
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

// F32Tensor encodes float32 values as an F32 tensor.
func F32Tensor(name string, shape []int, v []float32) (*STTensor, error) {
	if numel(shape) != len(v) {
		return nil, fmt.Errorf("%w: tensor %q: %d values for shape %v", ErrShape, name, len(v), shape)
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return &STTensor{Name: name, DType: F32, Shape: append([]int{}, shape...), Data: b}, nil
}

// F16Tensor encodes float32 values as an F16 tensor (round to nearest even).
func F16Tensor(name string, shape []int, v []float32) (*STTensor, error) {
	if numel(shape) != len(v) {
		return nil, fmt.Errorf("%w: tensor %q: %d values for shape %v", ErrShape, name, len(v), shape)
	}
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], Float32ToHalf(x))
	}
	return &STTensor{Name: name, DType: F16, Shape: append([]int{}, shape...), Data: b}, nil
}

// BF16Tensor encodes float32 values as a BF16 tensor (round to nearest even).
func BF16Tensor(name string, shape []int, v []float32) (*STTensor, error) {
	if numel(shape) != len(v) {
		return nil, fmt.Errorf("%w: tensor %q: %d values for shape %v", ErrShape, name, len(v), shape)
	}
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], Float32ToBF16(x))
	}
	return &STTensor{Name: name, DType: BF16, Shape: append([]int{}, shape...), Data: b}, nil
}

// I64Tensor encodes int64 values as an I64 tensor.
func I64Tensor(name string, shape []int, v []int64) (*STTensor, error) {
	if numel(shape) != len(v) {
		return nil, fmt.Errorf("%w: tensor %q: %d values for shape %v", ErrShape, name, len(v), shape)
	}
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return &STTensor{Name: name, DType: I64, Shape: append([]int{}, shape...), Data: b}, nil
}

// Safetensors is a parsed safetensors file.
type Safetensors struct {
	Metadata map[string]string // the "__metadata__" map; nil when absent
	Tensors  []*STTensor       // sorted by name
	byName   map[string]*STTensor
}

// Get returns the tensor called name, or an error wrapping ErrSTNotFound.
func (s *Safetensors) Get(name string) (*STTensor, error) {
	if t, ok := s.byName[name]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrSTNotFound, name)
}

// ReadSafetensorsFile reads and validates a safetensors file. The whole
// file is read (its size is real, so no lying header can make the reader
// allocate more than the file holds).
func ReadSafetensorsFile(path string) (*Safetensors, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nn: read safetensors: %w", err)
	}
	s, err := ParseSafetensors(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// stHeaderEntry is one tensor's header record. Pointers tell a missing
// field from a zero one.
type stHeaderEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// ParseSafetensors validates and decodes a safetensors file held in data.
// Tensor Data slices alias data.
func ParseSafetensors(data []byte) (*Safetensors, error) {
	if len(data) < 8 {
		return nil, stErr(ErrSTTruncated, "%d bytes, shorter than the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxSafetensorsHeader {
		return nil, stErr(ErrSTHeaderSize, "header length %d exceeds the %d-byte limit", n, MaxSafetensorsHeader)
	}
	if n > uint64(len(data)-8) {
		return nil, stErr(ErrSTTruncated, "header length %d exceeds the %d bytes after it", n, len(data)-8)
	}
	header := data[8 : 8+n]
	buf := data[8+n:]
	if !utf8.Valid(header) {
		return nil, stErr(ErrSTHeader, "header is not valid UTF-8")
	}
	if len(bytes.TrimLeft(header, " \t\r\n")) == 0 || bytes.TrimLeft(header, " \t\r\n")[0] != '{' {
		return nil, stErr(ErrSTHeader, "header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, stErr(ErrSTHeader, "header is not a JSON object")
	}
	s := &Safetensors{byName: map[string]*STTensor{}}
	type span struct {
		t          *STTensor
		begin, end int64
	}
	var spans []span
	sawMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, stErr(ErrSTHeader, "%v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, stErr(ErrSTHeader, "object key %v is not a string", tok)
		}
		if name == "__metadata__" {
			if sawMeta {
				return nil, stErr(ErrSTDuplicate, "%q appears twice", name)
			}
			sawMeta = true
			var raw map[string]json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, stErr(ErrSTHeader, "__metadata__: %v", err)
			}
			if raw == nil {
				continue // "__metadata__": null
			}
			s.Metadata = make(map[string]string, len(raw))
			for k, v := range raw {
				var str string
				if err := json.Unmarshal(v, &str); err != nil {
					return nil, stErr(ErrSTHeader, "__metadata__ value of %q is not a string", k)
				}
				s.Metadata[k] = str
			}
			continue
		}
		if name == "" {
			return nil, stErr(ErrSTHeader, "a tensor has an empty name")
		}
		if _, dup := s.byName[name]; dup {
			return nil, stErr(ErrSTDuplicate, "tensor %q appears twice", name)
		}
		var e stHeaderEntry
		if err := dec.Decode(&e); err != nil {
			return nil, stErr(ErrSTHeader, "tensor %q: %v", name, err)
		}
		if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
			return nil, stErr(ErrSTHeader, "tensor %q: dtype, shape and data_offsets are all required", name)
		}
		dt := DType(*e.DType)
		if dt.Size() == 0 {
			return nil, stErr(ErrSTDType, "tensor %q has dtype %q (supported: F32, F16, BF16, F64, I64)", name, *e.DType)
		}
		offs := *e.DataOffsets
		if len(offs) != 2 || offs[0] < 0 || offs[1] < offs[0] {
			return nil, stErr(ErrSTOffsets, "tensor %q has data_offsets %v, want [begin, end] with 0 <= begin <= end", name, offs)
		}
		if offs[1] > int64(len(buf)) {
			return nil, stErr(ErrSTTruncated, "tensor %q ends at byte %d of a %d-byte data buffer", name, offs[1], len(buf))
		}
		// The element count can be trusted only up to the buffer size.
		shape := make([]int, len(*e.Shape))
		limit := int64(len(buf))/int64(dt.Size()) + 1
		count := int64(1)
		for i, d := range *e.Shape {
			if d < 0 {
				return nil, stErr(ErrSTHeader, "tensor %q has negative dimension %d in shape %v", name, d, *e.Shape)
			}
			shape[i] = int(d)
			if count != 0 {
				if d > limit || count > limit/max(d, 1) {
					count = limit // saturate: the size check below fails
				} else {
					count *= d
				}
			}
		}
		if count*int64(dt.Size()) != offs[1]-offs[0] {
			return nil, stErr(ErrSTSizeMismatch, "tensor %q: %s of shape %v needs %s bytes, data_offsets %v hold %d",
				name, dt, *e.Shape, stBytes(*e.Shape, dt), offs, offs[1]-offs[0])
		}
		t := &STTensor{Name: name, DType: dt, Shape: shape, Data: buf[offs[0]:offs[1]:offs[1]]}
		s.byName[name] = t
		spans = append(spans, span{t, offs[0], offs[1]})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, stErr(ErrSTHeader, "%v", err)
	}
	if rest := bytes.TrimSpace(header[dec.InputOffset():]); len(rest) > 0 {
		return nil, stErr(ErrSTHeader, "%d bytes of trailing data after the header object", len(rest))
	}
	// The tensors must tile the buffer: sorted by offset, each begins where
	// the previous ended, and the last ends at the end of the data.
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].end < spans[j].end
	})
	pos := int64(0)
	prev := ""
	for _, sp := range spans {
		switch {
		case sp.begin < pos:
			return nil, stErr(ErrSTOffsets, "tensor %q [%d,%d) overlaps tensor %q ending at %d", sp.t.Name, sp.begin, sp.end, prev, pos)
		case sp.begin > pos:
			return nil, stErr(ErrSTOffsets, "tensor %q starts at %d, leaving a gap after byte %d", sp.t.Name, sp.begin, pos)
		}
		pos, prev = sp.end, sp.t.Name
	}
	if pos != int64(len(buf)) {
		return nil, stErr(ErrSTOffsets, "tensors cover %d bytes of a %d-byte data buffer", pos, len(buf))
	}
	s.Tensors = make([]*STTensor, 0, len(s.byName))
	for _, t := range s.byName {
		s.Tensors = append(s.Tensors, t)
	}
	sort.Slice(s.Tensors, func(i, j int) bool { return s.Tensors[i].Name < s.Tensors[j].Name })
	return s, nil
}

// stBytes formats the byte size dtype×shape would need, saturating on overflow.
func stBytes(shape []int64, dt DType) string {
	size := uint64(dt.Size())
	for _, d := range shape {
		if d != 0 && size > math.MaxUint64/uint64(d) {
			return "more than 2^64"
		}
		size *= uint64(d)
	}
	return fmt.Sprint(size)
}

// EncodeSafetensors writes tensors and metadata in the safetensors format.
// Data is laid out as the reference implementation does: by element size,
// largest first (so every tensor is aligned to its element size), then by
// name; the header lists "__metadata__" first and pads with spaces to a
// multiple of 8 bytes. Names must be unique, non-empty and not
// "__metadata__", and each tensor's Data must match its dtype and shape.
func EncodeSafetensors(w io.Writer, tensors []*STTensor, meta map[string]string) error {
	ts := append([]*STTensor(nil), tensors...)
	seen := map[string]bool{}
	for _, t := range ts {
		switch {
		case t == nil:
			return fmt.Errorf("%w: nil tensor", ErrSafetensors)
		case t.Name == "" || t.Name == "__metadata__":
			return fmt.Errorf("%w: invalid tensor name %q", ErrSafetensors, t.Name)
		case seen[t.Name]:
			return fmt.Errorf("%w: %w: tensor %q given twice", ErrSafetensors, ErrSTDuplicate, t.Name)
		case t.DType.Size() == 0:
			return fmt.Errorf("%w: %w: tensor %q has dtype %q", ErrSafetensors, ErrSTDType, t.Name, t.DType)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("%w: tensor %q has negative dimension in shape %v", ErrSafetensors, t.Name, t.Shape)
			}
		}
		if len(t.Data) != t.Numel()*t.DType.Size() {
			return fmt.Errorf("%w: %w: tensor %q: %s of shape %v needs %d bytes, has %d",
				ErrSafetensors, ErrSTSizeMismatch, t.Name, t.DType, t.Shape, t.Numel()*t.DType.Size(), len(t.Data))
		}
		seen[t.Name] = true
	}
	sort.Slice(ts, func(i, j int) bool {
		if a, b := ts[i].DType.Size(), ts[j].DType.Size(); a != b {
			return a > b
		}
		return ts[i].Name < ts[j].Name
	})
	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	if len(meta) > 0 {
		mb, err := json.Marshal(meta) // map keys are sorted
		if err != nil {
			return fmt.Errorf("nn: safetensors metadata: %w", err)
		}
		h.WriteString(`"__metadata__":`)
		h.Write(mb)
		first = false
	}
	off := 0
	for _, t := range ts {
		if !first {
			h.WriteByte(',')
		}
		first = false
		nb, _ := json.Marshal(t.Name)
		h.Write(nb)
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		sb, _ := json.Marshal(shape)
		fmt.Fprintf(&h, `:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, t.DType, sb, off, off+len(t.Data))
		off += len(t.Data)
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(h.Len()))
	if _, err := w.Write(n[:]); err != nil {
		return fmt.Errorf("nn: write safetensors: %w", err)
	}
	if _, err := w.Write(h.Bytes()); err != nil {
		return fmt.Errorf("nn: write safetensors: %w", err)
	}
	for _, t := range ts {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("nn: write safetensors: %w", err)
		}
	}
	return nil
}

// WriteSafetensorsFile writes a safetensors file atomically: to a temporary
// file in the same directory, fsynced, renamed over path, then the
// directory fsynced. A crash leaves either the old file or the new one.
func WriteSafetensorsFile(path string, tensors []*STTensor, meta map[string]string) error {
	return WriteFileAtomicFunc(path, func(w io.Writer) error { return EncodeSafetensors(w, tensors, meta) })
}

// WriteFileAtomic replaces path with data atomically (temporary file in the
// same directory, fsync, rename, fsync of the directory): atomicfile.Write.
func WriteFileAtomic(path string, data []byte) error { return atomicfile.Write(path, data) }

// WriteFileAtomicFunc is WriteFileAtomic for content that write streams
// (atomicfile.WriteFunc). When write fails, path is left as it was.
func WriteFileAtomicFunc(path string, write func(io.Writer) error) error {
	return atomicfile.WriteFunc(path, write)
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 (exact).
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: mant * 2^-24.
	f := float32(mant) * (1.0 / (1 << 24))
	return math.Float32frombits(sign | math.Float32bits(f))
}

// Float32ToHalf converts float32 to binary16, rounding to nearest even;
// overflow gives ±Inf, NaN stays NaN (quiet).
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b >> 23) & 0xff)
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): value = m * 2^-24 with m = round(|f| * 2^24).
		if e < -10 {
			return sign // below half the smallest subnormal: rounds to 0
		}
		m := mant | 0x800000  // 24-bit significand, value = m * 2^(exp-150)
		shift := uint(14 - e) // to units of 2^-24
		q := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && q&1 == 1) {
			q++
		}
		return sign | uint16(q)
	}
	q := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && q&1 == 1) {
		q++ // may carry into the exponent, up to Inf: still correct
	}
	return sign | uint16(q)
}

// Float32ToBF16 converts float32 to bfloat16, rounding to nearest even;
// NaN stays NaN (quiet).
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7f800000 == 0x7f800000 && b&0x7fffff != 0 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
