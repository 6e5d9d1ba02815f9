package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultMemberTTL is the lease TTL of a registration when none is given:
// a worker that stops keeping its lease alive leaves within this time.
const DefaultMemberTTL = 3 * time.Second

// Member is one registered worker, stored as JSON at MemberKey.
type Member struct {
	ID      string    `json:"id"`
	Address string    `json:"address"` // ring (data-plane) endpoint host:port
	HostID  string    `json:"host_id"` // equal for workers on one machine
	Device  string    `json:"device"`  // e.g. "cpu", "cuda:0"
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// JoinRevision is the etcd revision that created the key: the join
	// order. It is filled in on reads, not stored.
	JoinRevision int64 `json:"-"`
}

// Validate checks the fields a registration needs.
func (m Member) Validate() error {
	if err := ValidateName("member id", m.ID); err != nil {
		return err
	}
	if m.PID < 0 {
		return fmt.Errorf("%w: member %q has negative pid %d", ErrInvalid, m.ID, m.PID)
	}
	return nil
}

// Registration is a live membership: the member key exists while the
// lease is kept alive. It is safe for concurrent use.
type Registration struct {
	session *concurrency.Session
	key     string
	member  Member
	once    sync.Once
	err     error // set by the first Close
}

// Register stores m under MemberKey(job, m.ID), attached to a new lease
// with the given TTL (DefaultMemberTTL when zero; rounded up to whole
// seconds, at least 1 s) that a background keep-alive renews. It fails with
// ErrMemberExists while another live registration holds the id.
func (j *Job) Register(ctx context.Context, m Member, ttl time.Duration) (*Registration, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if ttl < 0 {
		return nil, fmt.Errorf("%w: negative member TTL %s", ErrInvalid, ttl)
	}
	if ttl == 0 {
		ttl = DefaultMemberTTL
	}
	secs := int((ttl + time.Second - 1) / time.Second)
	if m.Started.IsZero() {
		m.Started = time.Now().UTC()
	}
	val, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode member: %w", err)
	}
	s, err := concurrency.NewSession(j.c.etcd, concurrency.WithTTL(secs))
	if err != nil {
		return nil, fmt.Errorf("cluster: lease for member %q: %w", m.ID, err)
	}
	key := MemberKey(j.name, m.ID)
	resp, err := j.c.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(s.Lease()))).
		Commit()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("cluster: register member %q: %w", m.ID, err)
	}
	if !resp.Succeeded {
		s.Close()
		return nil, fmt.Errorf("%w: %q in job %q", ErrMemberExists, m.ID, j.name)
	}
	m.JoinRevision = resp.Header.Revision
	return &Registration{session: s, key: key, member: m}, nil
}

// Member returns the registered member, with its JoinRevision.
func (r *Registration) Member() Member { return r.member }

// Key returns the member's etcd key.
func (r *Registration) Key() string { return r.key }

// LeaseID returns the registration's etcd lease.
func (r *Registration) LeaseID() clientv3.LeaseID { return r.session.Lease() }

// Done is closed when the lease is lost (keep-alive failed, the lease
// expired or was revoked, or the client closed): the worker is then no
// longer a member and must stop using its plan.
func (r *Registration) Done() <-chan struct{} { return r.session.Done() }

// Close revokes the lease, which deletes the member key at once (a clean
// leave). It is idempotent.
func (r *Registration) Close() error {
	r.once.Do(func() {
		if err := r.session.Close(); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.err = fmt.Errorf("cluster: leave %s: %w", r.key, err)
		}
	})
	return r.err
}

// Members returns the live members in join order (JoinRevision, then id)
// and the revision of the read.
func (j *Job) Members(ctx context.Context) ([]Member, int64, error) {
	resp, err := j.c.etcd.Get(ctx, MembersPrefix(j.name), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: list members of %q: %w", j.name, err)
	}
	ms := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m, err := decodeMember(kv)
		if err != nil {
			return nil, 0, err
		}
		ms = append(ms, m)
	}
	sortMembers(ms)
	return ms, resp.Header.Revision, nil
}

func decodeMember(kv *mvccpb.KeyValue) (Member, error) {
	var m Member
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return Member{}, fmt.Errorf("cluster: decode member %s: %w", kv.Key, err)
	}
	m.JoinRevision = kv.CreateRevision
	return m, nil
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.JoinRevision, b.JoinRevision), strings.Compare(a.ID, b.ID))
	})
}

// EventType says how a member changed.
type EventType int

// The member event types.
const (
	MemberJoined EventType = iota + 1
	MemberUpdated
	MemberLeft
)

// String returns "joined", "updated" or "left".
func (t EventType) String() string {
	switch t {
	case MemberJoined:
		return "joined"
	case MemberUpdated:
		return "updated"
	case MemberLeft:
		return "left"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// MemberEvent is one change of membership. For MemberLeft only Member.ID
// is certain to be set.
type MemberEvent struct {
	Type   EventType
	Member Member
}

// MemberSnapshot is the complete live membership at an etcd revision, plus
// the events that led to it from the previous snapshot. The first snapshot
// of a watch, and any after the watch had to re-read (Resync), has no events.
type MemberSnapshot struct {
	Revision int64
	Members  []Member // join order
	Events   []MemberEvent
	Resync   bool
}

// watchRetry is the pause before a broken watch re-reads and resumes.
const watchRetry = 200 * time.Millisecond

// WatchMembers reads the membership and then follows it. The returned
// channel delivers the initial snapshot, then one snapshot per etcd watch
// response that changed membership. If the watch breaks (compaction, lost
// connection), it re-reads and delivers a Resync snapshot. The channel is
// closed when ctx ends or the client is closed. Slow readers slow the
// watch; they never miss the latest state.
func (j *Job) WatchMembers(ctx context.Context) (<-chan MemberSnapshot, error) {
	ms, rev, err := j.Members(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan MemberSnapshot, 1)
	out <- MemberSnapshot{Revision: rev, Members: ms}
	go j.followMembers(ctx, out, ms, rev)
	return out, nil
}

func (j *Job) followMembers(ctx context.Context, out chan<- MemberSnapshot, ms []Member, rev int64) {
	defer close(out)
	cur := make(map[string]Member, len(ms))
	for _, m := range ms {
		cur[m.ID] = m
	}
	send := func(s MemberSnapshot) bool {
		select {
		case out <- s:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := j.c.etcd.Watch(wctx, MembersPrefix(j.name), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if resp.Err() != nil {
				break // re-read below
			}
			var evs []MemberEvent
			for _, ev := range resp.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), MembersPrefix(j.name))
				switch ev.Type {
				case mvccpb.PUT:
					m, err := decodeMember(ev.Kv)
					if err != nil {
						continue // a foreign value under our prefix: not a member
					}
					t := MemberUpdated
					if ev.IsCreate() {
						t = MemberJoined
					}
					cur[id] = m
					evs = append(evs, MemberEvent{Type: t, Member: m})
				case mvccpb.DELETE:
					m, ok := cur[id]
					if !ok {
						m = Member{ID: id}
					}
					delete(cur, id)
					evs = append(evs, MemberEvent{Type: MemberLeft, Member: m})
				}
			}
			rev = resp.Header.Revision
			if len(evs) == 0 {
				continue
			}
			if !send(MemberSnapshot{Revision: rev, Members: snapshotOf(cur), Events: evs}) {
				cancel()
				return
			}
		}
		cancel()
		// The watch ended: ctx done, client closed, or a broken stream.
		for {
			if ctx.Err() != nil || j.c.isClosed() {
				return
			}
			select {
			case <-time.After(watchRetry):
			case <-ctx.Done():
				return
			}
			ms2, rev2, err := j.Members(ctx)
			if err != nil {
				continue
			}
			clear(cur)
			for _, m := range ms2 {
				cur[m.ID] = m
			}
			rev = rev2
			if !send(MemberSnapshot{Revision: rev, Members: ms2, Resync: true}) {
				return
			}
			break
		}
	}
}

func snapshotOf(cur map[string]Member) []Member {
	ms := make([]Member, 0, len(cur))
	for _, m := range cur {
		ms = append(ms, m)
	}
	sortMembers(ms)
	return ms
}
