package worker

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/pkg/cluster"
)

// MemMembership is the in-memory twin of the job's etcd directory, for
// tests: registrations held by leases that Expire can end, and checkpoint
// manifests. It is safe for concurrent use.
type MemMembership struct {
	mu        sync.Mutex // guards leases, manifests, registered, changed
	leases    map[string]*memLease
	manifests map[int64]cluster.Manifest
	// registered counts successful registrations by id.
	registered map[string]int
	changed    chan struct{} // closed and replaced on every change
}

type memLease struct {
	m      *MemMembership
	member cluster.Member
	done   chan struct{}
	once   sync.Once
}

var (
	_ Membership = (*MemMembership)(nil)
	_ Lease      = (*memLease)(nil)
)

// NewMemMembership returns an empty membership.
func NewMemMembership() *MemMembership {
	return &MemMembership{leases: map[string]*memLease{}, manifests: map[int64]cluster.Manifest{},
		registered: map[string]int{}, changed: make(chan struct{})}
}

func (s *MemMembership) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Register implements Membership.
func (s *MemMembership) Register(_ context.Context, m cluster.Member, _ time.Duration) (Lease, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, held := s.leases[m.ID]; held {
		return nil, fmt.Errorf("%w: %s", cluster.ErrMemberExists, m.ID)
	}
	l := &memLease{m: s, member: m, done: make(chan struct{})}
	s.leases[m.ID] = l
	s.registered[m.ID]++
	s.changedLocked()
	return l, nil
}

// Expire ends the lease of id as an etcd outage longer than the TTL would;
// it reports whether id was registered.
func (s *MemMembership) Expire(id string) bool {
	s.mu.Lock()
	l, ok := s.leases[id]
	s.mu.Unlock()
	if ok {
		l.end()
	}
	return ok
}

// Members returns the registered ids, sorted.
func (s *MemMembership) Members() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.leases {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Registrations returns how many times id registered.
func (s *MemMembership) Registrations(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registered[id]
}

// Await waits until cond holds, or ctx ends (an error).
func (s *MemMembership) Await(ctx context.Context, cond func(*MemMembership) bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("membership: condition not reached: %w", ctx.Err())
		}
	}
}

// PutManifest implements Membership.
func (s *MemMembership) PutManifest(_ context.Context, m cluster.Manifest) (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manifests[m.Step] = m
	s.changedLocked()
	return fmt.Sprintf("mem/checkpoints/%d", m.Step), nil
}

// ListManifests implements Membership (by step, oldest first).
func (s *MemMembership) ListManifests(context.Context) ([]cluster.Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]cluster.Manifest, 0, len(s.manifests))
	for _, m := range s.manifests {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out, nil
}

// DeleteManifest implements Membership.
func (s *MemMembership) DeleteManifest(_ context.Context, step int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.manifests, step)
	s.changedLocked()
	return nil
}

func (l *memLease) Done() <-chan struct{} { return l.done }

// Close revokes the lease (idempotent).
func (l *memLease) Close() error {
	l.end()
	return nil
}

func (l *memLease) end() {
	l.once.Do(func() {
		s := l.m
		s.mu.Lock()
		if s.leases[l.member.ID] == l {
			delete(s.leases, l.member.ID)
		}
		s.changedLocked()
		s.mu.Unlock()
		close(l.done)
	})
}
