package allreduce

import "github.com/ringtrain/ringtrain/pkg/nn"

// A Ring is the nn.ChannelReducer of SyncBatchNorm: AllReduceSum sums the
// layer's per-channel vectors over the workers through the small-message
// path (deterministic, N-1 hops). Running-statistics averaging (the default
// BN mode) instead rides with the last gradient bucket: ReducerConfig.Extra.
var _ nn.ChannelReducer = (*Ring)(nil)
