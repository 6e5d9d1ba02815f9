package allreduce

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/ringtrain/ringtrain/proto/ringpb"
)

// codecName is the gRPC content-subtype of the ring's streams
// ("application/grpc+ringraw").
const codecName = "ringraw"

// rawCodec is the gRPC codec of Ring.Exchange. A Chunk travels as
//
//	uint32 little-endian n | ChunkHeader (n bytes, protobuf) | raw payload
//
// The payload buffer is handed to gRPC without a copy when sending
// (wireChunk.payload) and is read in place from gRPC's receive buffers
// (wireChunk.pieces), so tensor bytes are never marshalled by protobuf.
// Other messages (Ack) are plain protobuf.
type rawCodec struct{}

func init() { encoding.RegisterCodecV2(rawCodec{}) }

func (rawCodec) Name() string { return codecName }

// wireChunk is the Go side of a Chunk on the wire.
type wireChunk struct {
	hdr ringpb.ChunkHeader
	// payload (sending): gRPC takes ownership and frees it once written.
	payload mem.Buffer
	// data and pieces (receiving): the payload in gRPC's buffers, which
	// this chunk holds a reference to until release.
	data   mem.BufferSlice
	pieces [][]byte
}

// release drops the received buffers.
func (w *wireChunk) release() {
	if w.data != nil {
		w.data.Free()
	}
	w.data, w.pieces = nil, nil
}

// maxHeaderBytes bounds a ChunkHeader on the wire.
const maxHeaderBytes = 64 << 10

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *wireChunk:
		hb, err := marshalHeader(&m.hdr)
		if err != nil {
			return nil, err
		}
		out := mem.BufferSlice{mem.SliceBuffer(hb)}
		if m.payload != nil {
			out = append(out, m.payload)
			m.payload = nil
		}
		return out, nil
	case *ringpb.Chunk:
		hb, err := marshalHeader(m.GetHeader())
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(hb), mem.SliceBuffer(m.GetPayload())}, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("ringraw: %w", err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("%w: ringraw codec cannot marshal %T", ErrMalformed, v)
}

func marshalHeader(h *ringpb.ChunkHeader) ([]byte, error) {
	if h == nil {
		h = &ringpb.ChunkHeader{}
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 4, 4+proto.Size(h)), h)
	if err != nil {
		return nil, fmt.Errorf("ringraw: header: %w", err)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *wireChunk:
		pieces, hb, err := splitHeader(data)
		if err != nil {
			return err
		}
		m.hdr.Reset()
		if err := proto.Unmarshal(hb, &m.hdr); err != nil {
			return fmt.Errorf("%w: chunk header: %w", ErrMalformed, err)
		}
		data.Ref()
		m.data, m.pieces = data, pieces
		return nil
	case *ringpb.Chunk:
		pieces, hb, err := splitHeader(data)
		if err != nil {
			return err
		}
		m.Reset()
		m.Header = &ringpb.ChunkHeader{}
		if err := proto.Unmarshal(hb, m.Header); err != nil {
			return fmt.Errorf("%w: chunk header: %w", ErrMalformed, err)
		}
		for _, p := range pieces {
			m.Payload = append(m.Payload, p...)
		}
		return nil
	case proto.Message:
		if err := proto.Unmarshal(data.Materialize(), m); err != nil {
			return fmt.Errorf("%w: %T: %w", ErrMalformed, v, err)
		}
		return nil
	}
	return fmt.Errorf("%w: ringraw codec cannot unmarshal into %T", ErrMalformed, v)
}

// splitHeader returns the payload pieces of a received Chunk (views into
// data) and its header bytes.
func splitHeader(data mem.BufferSlice) (payload [][]byte, hdr []byte, err error) {
	pieces := make([][]byte, 0, len(data))
	for _, b := range data {
		if d := b.ReadOnlyData(); len(d) > 0 {
			pieces = append(pieces, d)
		}
	}
	var lenb [4]byte
	pieces, ok := take(pieces, lenb[:])
	if !ok {
		return nil, nil, fmt.Errorf("%w: chunk shorter than its length prefix", ErrMalformed)
	}
	n := binary.LittleEndian.Uint32(lenb[:])
	if n > maxHeaderBytes {
		return nil, nil, fmt.Errorf("%w: chunk header of %d bytes", ErrMalformed, n)
	}
	hdr = make([]byte, n)
	pieces, ok = take(pieces, hdr)
	if !ok {
		return nil, nil, fmt.Errorf("%w: chunk shorter than its %d-byte header", ErrMalformed, n)
	}
	return pieces, hdr, nil
}

// take copies len(dst) bytes from the front of pieces and returns the rest.
func take(pieces [][]byte, dst []byte) ([][]byte, bool) {
	for len(dst) > 0 {
		if len(pieces) == 0 {
			return nil, false
		}
		k := copy(dst, pieces[0])
		dst = dst[k:]
		if k == len(pieces[0]) {
			pieces = pieces[1:]
		} else {
			pieces[0] = pieces[0][k:]
		}
	}
	return pieces, true
}

// toWire and fromWire convert headers.
func toWire(h *Header, w *ringpb.ChunkHeader) {
	w.Kind = ringpb.Kind_KIND_DATA
	w.Job, w.Generation, w.Step, w.Bucket, w.Seq = h.Job, h.Generation, h.Step, h.Bucket, h.Seq
	w.Round, w.Segment, w.Chunk, w.Offset, w.Count = h.Round, h.Segment, h.Chunk, h.Offset, h.Count
	w.Total = h.Total
	w.Dtype = ringpb.DType(h.DType)
	w.ShmSlot, w.PayloadBytes = 0, 0
	w.Hello = nil
}

func fromWire(w *ringpb.ChunkHeader, h *Header) error {
	if w.GetKind() != ringpb.Kind_KIND_DATA {
		return fmt.Errorf("%w: frame of kind %v where data was expected", ErrMalformed, w.GetKind())
	}
	*h = Header{Job: w.Job, Generation: w.Generation, Step: w.Step, Bucket: w.Bucket, Seq: w.Seq,
		Round: w.Round, Segment: w.Segment, Chunk: w.Chunk, Offset: w.Offset, Count: w.Count,
		Total: w.Total, DType: DType(w.Dtype)}
	return nil
}
