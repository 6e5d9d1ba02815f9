package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/cluster"
)

// registering is the first state: the worker registers in the job's
// membership, retrying while its id is still held by the lease of the
// process it replaces or the membership does not answer, for at most
// Patience. It returns a nil lease when ctx ended first (a clean stop).
func (m *machine) registering(ctx context.Context) (Lease, error) {
	reg, err := m.register(ctx, m.Patience)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: register in %s: %w", ErrUnreachable, m.MembersName, err)
	}
	m.Log.Info("joined", zap.String("job", m.Job), zap.String("ring", m.Member.Address), zap.String("backend", m.Member.Device))
	return reg, nil
}

// register registers the worker, retrying for at most patience.
func (m *machine) register(ctx context.Context, patience time.Duration) (Lease, error) {
	deadline := time.Now().Add(patience)
	for {
		rctx, cancel := context.WithTimeout(ctx, m.Timing.RegisterTimeout)
		reg, err := m.Members.Register(rctx, m.Member, m.TTL)
		cancel()
		if err == nil {
			return reg, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		if errors.Is(err, cluster.ErrMemberExists) {
			m.Log.Info("id still registered by an earlier process; waiting for its lease to expire", zap.Error(err))
		} else {
			m.Log.Warn("registration failed; retrying", zap.Error(err))
		}
		sleepCtx(ctx, m.Timing.RegisterRetry)
	}
}

// keepRegistered holds the membership while the machine runs: when the
// lease is lost (the membership was unreachable for longer than the TTL)
// or the waiting state asks for it, it registers again, so that the
// coordinator plans this worker in again. It revokes the lease when ctx
// ends (a clean leave).
func (m *machine) keepRegistered(ctx context.Context, reg Lease) {
	for {
		select {
		case <-ctx.Done():
			_ = reg.Close()
			return
		case <-reg.Done():
			m.Log.Warn("membership lease lost; registering again")
		case <-m.rereg:
		}
		_ = reg.Close()
		for {
			var err error
			reg, err = m.register(ctx, 24*time.Hour)
			if err == nil {
				m.Log.Info("registered again")
				break
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}
