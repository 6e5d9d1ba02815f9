package allreduce

import (
	"fmt"
	"time"
)

// Compression selects the on-the-wire element type of the bandwidth path.
// Accumulation is always float32.
type Compression int

const (
	// CompressNone sends float32.
	CompressNone Compression = iota
	// CompressBF16 sends bfloat16 (round to nearest even): half the bytes;
	// each partial sum is rounded once per hop, so the result differs from
	// the exact sum by at most about N * 2^-8 * sum|x_i| per element.
	CompressBF16
)

// String names the compression as the command-line flags do.
func (c Compression) String() string {
	switch c {
	case CompressNone:
		return "none"
	case CompressBF16:
		return "bf16"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// ParseCompression parses "none" or "bf16".
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "none", "fp32", "f32":
		return CompressNone, nil
	case "bf16":
		return CompressBF16, nil
	}
	return 0, fmt.Errorf("%w: compression %q (want none or bf16)", ErrConfig, s)
}

// Config describes this worker's place in one ring (one plan generation).
type Config struct {
	Job        string // job id; frames of other jobs are refused
	Generation uint64 // plan generation; frames of other generations are refused
	Rank       int    // 0 <= Rank < World
	World      int    // number of workers, 1..MaxWorld

	// ChunkBytes is the wire size of one pipelined chunk (default 1 MiB).
	// Smaller chunks pipeline better, larger ones cost less per byte. It
	// must not exceed the transport's message limit, and must be the same
	// on every rank. A ring whose links all go through shared memory uses
	// chunks of at most 256 KiB (lockstepChunkBytes), which stay in cache.
	ChunkBytes int
	// SmallBytes: vectors of at most this many float32 bytes take the
	// low-latency path (one ring all-gather, N-1 hops instead of 2(N-1),
	// then a local sum in rank order). Default 32 KiB; 0 keeps the default,
	// a negative value disables the path. Values above ChunkBytes act as
	// ChunkBytes (a small vector travels as one frame).
	SmallBytes int
	// Timeout bounds every collective (default 10 s). A collective that has
	// not finished by then fails with ErrTimeout and breaks the ring.
	Timeout time.Duration
	// Compression of the bandwidth path (the small path is always float32).
	Compression Compression
}

// Defaults used when a Config field is zero.
const (
	DefaultChunkBytes = 1 << 20
	DefaultSmallBytes = 32 << 10
	DefaultTimeout    = 10 * time.Second
	// MaxWorld is the largest ring this package is tested for.
	MaxWorld = 1 << 12
)

// DefaultConfig returns a Config for rank of world with every knob at its
// default.
func DefaultConfig(job string, generation uint64, rank, world int) Config {
	c := Config{Job: job, Generation: generation, Rank: rank, World: world}
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.ChunkBytes == 0 {
		c.ChunkBytes = DefaultChunkBytes
	}
	if c.SmallBytes == 0 {
		c.SmallBytes = DefaultSmallBytes
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Validate reports the first invalid field of c (after defaults are filled).
func (c Config) Validate() error {
	c.fill()
	switch {
	case c.Job == "":
		return fmt.Errorf("%w: empty job id", ErrConfig)
	case c.World < 1 || c.World > MaxWorld:
		return fmt.Errorf("%w: world %d not in [1, %d]", ErrConfig, c.World, MaxWorld)
	case c.Rank < 0 || c.Rank >= c.World:
		return fmt.Errorf("%w: rank %d not in [0, %d)", ErrConfig, c.Rank, c.World)
	case c.ChunkBytes < 64 || c.ChunkBytes%4 != 0:
		return fmt.Errorf("%w: chunk bytes %d (want a multiple of 4, >= 64)", ErrConfig, c.ChunkBytes)
	case c.Timeout < 0:
		return fmt.Errorf("%w: negative timeout %v", ErrConfig, c.Timeout)
	case c.Compression != CompressNone && c.Compression != CompressBF16:
		return fmt.Errorf("%w: unknown compression %d", ErrConfig, int(c.Compression))
	}
	return nil
}
