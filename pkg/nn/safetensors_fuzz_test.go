package nn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzReadSafetensors: the reader never panics, every rejection wraps
// ErrSafetensors, and every accepted file is self-consistent and survives
// a re-encode → re-parse round trip unchanged.
//
//	go test ./pkg/nn -run '^$' -fuzz FuzzReadSafetensors -fuzztime 2m
func FuzzReadSafetensors(f *testing.F) {
	var buf bytes.Buffer
	if err := EncodeSafetensors(&buf, sampleTensors(f), map[string]string{"format": "pt", "k": "v"}); err != nil {
		f.Fatal(err)
	}
	valid := append([]byte(nil), buf.Bytes()...)
	f.Add(valid)
	buf.Reset()
	_ = EncodeSafetensors(&buf, nil, nil)
	f.Add(append([]byte(nil), buf.Bytes()...))
	f.Add(stFile(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F64","shape":[],"data_offsets":[4,12]}}`, make([]byte, 12)))
	// Broken seeds: truncations, lying lengths, bad offsets and dtypes.
	f.Add(valid[:len(valid)/2])
	f.Add(valid[:7])
	lying := append([]byte(nil), valid...)
	binary.LittleEndian.PutUint64(lying, 1<<62)
	f.Add(lying)
	f.Add(stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add(stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, make([]byte, 1)))
	f.Add(stFile(`{"a":{"dtype":"F32","shape":[9223372036854775807,2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(stFile(`{"__metadata__":{"a":"b"},"a":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}}`, nil))

	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSafetensors(data)
		if err != nil {
			if !errors.Is(err, ErrSafetensors) {
				t.Fatalf("error %v does not wrap ErrSafetensors", err)
			}
			return
		}
		total := 0
		for i, tn := range s.Tensors {
			if i > 0 && s.Tensors[i-1].Name >= tn.Name {
				t.Fatalf("tensors not sorted: %q then %q", s.Tensors[i-1].Name, tn.Name)
			}
			if len(tn.Data) != tn.Numel()*tn.DType.Size() {
				t.Fatalf("tensor %q: %d bytes for %s %v", tn.Name, len(tn.Data), tn.DType, tn.Shape)
			}
			total += len(tn.Data)
			if tn.DType == I64 {
				if _, err := tn.Int64(); err != nil {
					t.Fatal(err)
				}
			} else if _, err := tn.Float32(); err != nil {
				t.Fatal(err)
			}
		}
		if total > len(data) {
			t.Fatalf("tensors hold %d bytes of a %d-byte file", total, len(data))
		}
		var out bytes.Buffer
		if err := EncodeSafetensors(&out, s.Tensors, s.Metadata); err != nil {
			t.Fatalf("re-encoding an accepted file: %v", err)
		}
		s2, err := ParseSafetensors(out.Bytes())
		if err != nil {
			t.Fatalf("re-parsing our own encoding: %v", err)
		}
		if len(s2.Tensors) != len(s.Tensors) || len(s2.Metadata) != len(s.Metadata) {
			t.Fatalf("round trip changed the file: %d→%d tensors", len(s.Tensors), len(s2.Tensors))
		}
		for k, v := range s.Metadata {
			if s2.Metadata[k] != v {
				t.Fatalf("metadata %q: %q → %q", k, v, s2.Metadata[k])
			}
		}
		for i, a := range s.Tensors {
			b := s2.Tensors[i]
			if a.Name != b.Name || a.DType != b.DType || !SameShape(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
				t.Fatalf("tensor %q changed in the round trip", a.Name)
			}
		}
	})
}
