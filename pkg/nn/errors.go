package nn

import (
	"errors"

	"github.com/ringtrain/ringtrain/pkg/schedule"
)

// Sentinel errors of the engine (ErrShape is in tensor.go). Every error
// returned by this package's model, layer and loss code wraps one of them.
var (
	// ErrConfig: a ResNetConfig, layer or schedule setting is invalid
	// (the same value as schedule.ErrConfig).
	ErrConfig = schedule.ErrConfig
	// ErrNonFinite: NaN or ±Inf found in an input, output, weight or loss.
	ErrNonFinite = errors.New("nn: non-finite value")
	// ErrLabel: a label is out of range, or the label count is wrong.
	ErrLabel = errors.New("nn: bad label")
	// ErrNoForward: Backward was called without a matching Forward.
	ErrNoForward = errors.New("nn: backward without forward")
	// ErrBatchNorm: batch statistics need more than one value per channel
	// in training mode (torch raises the same error).
	ErrBatchNorm = errors.New("nn: batch norm needs more than 1 value per channel in training")
	// ErrReduce: the ChannelReducer failed (SyncBatchNorm).
	ErrReduce = errors.New("nn: channel all-reduce failed")
)
