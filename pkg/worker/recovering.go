package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/observe"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// ringError marks an error of the ring (opening it or a collective): the
// plan's ring is broken and a new plan is needed.
type ringError struct {
	open bool // the ring could not be opened
	err  error
}

func (e *ringError) Error() string { return e.err.Error() }
func (e *ringError) Unwrap() error { return e.err }

// ErrBackendFailed: the compute backend itself failed for good (a GPU's
// sticky error: out of memory, an illegal address, a lost device), so
// every later op of this process would fail too. The worker stops with
// it; a supervisor (the coordinator's --workers mode, Kubernetes) starts
// a fresh process, within its restart limit.
var ErrBackendFailed = errors.New("worker: the compute backend failed; this process cannot go on")

// ringFailed classifies an error of a step under the current plan: a
// cancelled run is a clean stop, a newer plan means waiting, an input
// error (a diverged model, a bad label: see IsInputError) stops the job
// (no plan fixes that), a backend that no longer works stops this worker
// (ErrBackendFailed: no plan fixes that either, a new process may),
// anything else is a broken ring (recovering).
func (m *machine) ringFailed(ctx context.Context, err error) (state, error) {
	if ctx.Err() != nil {
		return stateDone, nil
	}
	if m.plans.generation() > m.plan.GetGeneration() {
		return stateWaiting, nil // aborted for a newer plan
	}
	if IsInputError(err) {
		return stateDone, err // diverged, a bad label ...: no plan fixes that
	}
	// On the goroutine that ran the step: the backend reports its sticky
	// error (the CPU backend has none).
	if berr := m.t.B.Sync(); berr != nil {
		m.Log.Error("compute backend failed; stopping this worker", zap.Error(berr), zap.NamedError("step_error", err))
		return stateDone, fmt.Errorf("%w: %w", ErrBackendFailed, berr)
	}
	m.failure = &ringError{err: err}
	return stateRecovering, nil
}

// recovering tells the control plane that the ring of the current plan
// failed (then: waiting), naming a suspect when a liveness probe of the
// ring neighbours (of every member when the ring could not even be
// opened) finds one that is dead or stalled. Without a suspect it first
// waits briefly for a newer plan: the dead worker's neighbours report it,
// and an unqualified report arriving first would make a plan that still
// contains it.
func (m *machine) recovering(ctx context.Context) (state, error) {
	p, err := m.plan, m.failure
	m.failure = nil
	if ctx.Err() != nil {
		return stateDone, nil
	}
	m.Metrics.RingFailure()
	m.Metrics.SetState(observe.StateJoining)
	var re *ringError
	openFailed := errors.As(err, &re) && re.open
	suspect := m.findSuspect(ctx, p, openFailed)
	m.Log.Warn("ring failed; reporting and waiting for a new plan", zap.Error(err), zap.String("suspect", suspect),
		zap.Uint64("generation", p.GetGeneration()), zap.Int64("step", m.t.Step))
	if suspect == "" {
		_, changed := m.plans.get()
		if m.plans.generation() > p.GetGeneration() {
			return stateWaiting, nil
		}
		select {
		case <-ctx.Done():
			return stateWaiting, nil
		case <-changed:
			if m.plans.generation() > p.GetGeneration() {
				return stateWaiting, nil
			}
		case <-time.After(m.Timing.SuspectWait):
		}
	}
	rctx, cancel := context.WithTimeout(ctx, m.Timing.CallTimeout)
	defer cancel()
	if _, err := m.Control.ReportFailure(rctx, &controlpb.FailureReport{WorkerId: m.ID, Generation: p.GetGeneration(),
		Reason: err.Error(), SuspectId: suspect}); err != nil && ctx.Err() == nil {
		m.Log.Warn("failure not reported", zap.Error(err))
	}
	return stateWaiting, nil
}

// findSuspect probes the ring neighbours of this worker in plan p (every
// other member when all is true) and returns the id of the first that does
// not answer, or "".
func (m *machine) findSuspect(ctx context.Context, p *controlpb.Plan, all bool) string {
	members := p.GetMembers()
	world := len(members)
	rank := int(p.GetYourRank())
	if world < 2 || rank < 0 {
		return ""
	}
	var cands []*controlpb.PlanMember
	if all {
		for _, pm := range members {
			if int(pm.GetRank()) != rank {
				cands = append(cands, pm)
			}
		}
	} else {
		byRank := make(map[int]*controlpb.PlanMember, world)
		for _, pm := range members {
			byRank[int(pm.GetRank())] = pm
		}
		cands = append(cands, byRank[(rank+world-1)%world])
		if world > 2 {
			cands = append(cands, byRank[(rank+1)%world])
		}
	}
	type result struct {
		id  string
		err error
	}
	res := make(chan result, len(cands))
	for _, pm := range cands {
		go func(pm *controlpb.PlanMember) {
			pctx, cancel := context.WithTimeout(ctx, m.Timing.ProbeTimeout)
			defer cancel()
			res <- result{pm.GetId(), m.Probe(pctx, pm.GetAddress())}
		}(pm)
	}
	suspect := ""
	for range cands {
		r := <-res
		if r.err != nil && suspect == "" && ctx.Err() == nil {
			m.Log.Warn("ring neighbour does not answer", zap.String("peer", r.id), zap.Error(r.err))
			suspect = r.id
		}
	}
	return suspect
}
