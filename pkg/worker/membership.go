package worker

import (
	"context"
	"time"

	"github.com/ringtrain/ringtrain/pkg/cluster"
)

// Membership is the job's directory as a worker uses it: its own
// registration, held by a lease, and the manifests of the checkpoints it
// writes. etcdMembership (over a *cluster.Job) is the real one;
// MemMembership the in-memory twin.
type Membership interface {
	// Register registers m under a lease of ttl. It fails with
	// cluster.ErrMemberExists while another lease holds m.ID.
	Register(ctx context.Context, m cluster.Member, ttl time.Duration) (Lease, error)
	// PutManifest stores a checkpoint's manifest and returns its key.
	PutManifest(ctx context.Context, m cluster.Manifest) (string, error)
	// ListManifests returns the stored manifests.
	ListManifests(ctx context.Context) ([]cluster.Manifest, error)
	// DeleteManifest deletes the manifest of step.
	DeleteManifest(ctx context.Context, step int64) error
}

// Lease is a registration: Done is closed when it is lost (expired or
// revoked by someone else); Close revokes it.
type Lease interface {
	Done() <-chan struct{}
	Close() error
}

// etcdMembership is the Membership of a job in etcd.
type etcdMembership struct{ *cluster.Job }

var (
	_ Membership = etcdMembership{}
	_ Lease      = (*cluster.Registration)(nil)
)

func (e etcdMembership) Register(ctx context.Context, m cluster.Member, ttl time.Duration) (Lease, error) {
	r, err := e.Job.Register(ctx, m, ttl)
	if err != nil {
		return nil, err
	}
	return r, nil
}
