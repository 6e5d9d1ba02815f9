// Package allreduce is ringtrain's data plane: it sums (or averages) float32
// vectors across the N workers of a job.
//
// The pieces, one concept per file:
//
//   - transport.go: Transport opens a Link (an outgoing stream to the right
//     neighbour, an incoming one from the left) for one plan. Implementations:
//     GRPCTransport (gRPC over TCP, TLS-ready, with a same-host shared-memory
//     fast path for tensor bytes) and InmemTransport (channels, for tests).
//   - ring.go: Ring runs collectives over a Link: a pipelined ring
//     reduce-scatter followed by an all-gather for large vectors, and a
//     one-pass ring all-gather with a local sum for small ones.
//   - order.go: the frame order of the ring, one per ring: round-major, or
//     lockstep when every link goes through shared memory.
//   - fused.go: the one-pass ring of a rank whose two links both go through
//     shared memory: each chunk is added or copied straight into the
//     outgoing slot while it is being received.
//   - reducer.go: Reducer groups a model's flat gradient into buckets (in
//     reverse layer order) and starts each bucket's all-reduce as soon as
//     backward has produced it, so communication overlaps computation.
//   - device.go, devreducer.go: the device ring. Vectors in GPU memory
//     (Device) are reduced device to device between same-host ranks:
//     AttachDevice exchanges memory handles (CUDA IPC) over the link,
//     StartDevice and DeviceReducer run the host ring's schedule as device
//     kernels reading the left neighbour's memory (or, where the device
//     has no peer access to it, a local copy of each segment: RingPull
//     into a staging area); the link carries only "round done" signals.
//     MemDevice is its in-memory twin.
//   - Ring implements nn.ChannelReducer for SyncBatchNorm.
//
// Promises. Every worker ends a collective with bit-identical values, and the
// same inputs give the same bits in every run: segment s of the vector is
// always summed starting at rank s and going round the ring in rank order,
// whatever the timing (with compression the rounding points are fixed too).
// A device collective gives the bits the host collective gives on the same
// values, with peer access or copies through the device on any link.
// AttachDevice ends the same way on every rank: attached, or
// ErrNoDeviceRing with the ring still usable.
// Every frame carries (job, plan generation, step, bucket, sequence, round,
// segment, chunk, offset, count, dtype) and a receiver refuses any frame that
// is not exactly the one it expects. A collective that cannot finish (a dead,
// stalled or misbehaving peer) returns an error within Config.Timeout on
// every survivor and leaves the Ring broken: the caller rebuilds it for the
// next plan. Memory in flight is bounded by the transports' windows.
package allreduce
