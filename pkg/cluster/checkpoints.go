package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	ckpt "github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
)

// Manifest is a checkpoint's manifest (owned by pkg/checkpoint: see
// package manifest); this package records one per checkpoint in etcd.
type Manifest = ckpt.Manifest

// PutManifest validates m and stores it at CheckpointKey(job, m.Step),
// replacing any manifest of that step. It returns the key.
func (j *Job) PutManifest(ctx context.Context, m Manifest) (string, error) {
	if err := m.Validate(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	val, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("cluster: encode manifest: %w", err)
	}
	key := CheckpointKey(j.name, m.Step)
	if _, err := j.c.etcd.Put(ctx, key, string(val)); err != nil {
		return "", fmt.Errorf("cluster: store manifest of step %d: %w", m.Step, err)
	}
	return key, nil
}

// GetManifest returns the manifest of step, or ErrNotFound.
func (j *Job) GetManifest(ctx context.Context, step int64) (Manifest, error) {
	key := CheckpointKey(j.name, step)
	resp, err := j.c.etcd.Get(ctx, key)
	if err != nil {
		return Manifest{}, fmt.Errorf("cluster: read manifest of step %d: %w", step, err)
	}
	if len(resp.Kvs) == 0 {
		return Manifest{}, fmt.Errorf("%w: no manifest for step %d of job %q", ErrNotFound, step, j.name)
	}
	return decodeManifest(j.name, string(resp.Kvs[0].Key), resp.Kvs[0].Value)
}

// ListManifests returns every manifest of the job, oldest step first.
func (j *Job) ListManifests(ctx context.Context) ([]Manifest, error) {
	resp, err := j.c.etcd.Get(ctx, CheckpointsPrefix(j.name), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("cluster: list manifests of %q: %w", j.name, err)
	}
	out := make([]Manifest, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m, err := decodeManifest(j.name, string(kv.Key), kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// LatestManifest returns the manifest with the highest step, or ErrNotFound.
func (j *Job) LatestManifest(ctx context.Context) (Manifest, error) {
	resp, err := j.c.etcd.Get(ctx, CheckpointsPrefix(j.name), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return Manifest{}, fmt.Errorf("cluster: read latest manifest of %q: %w", j.name, err)
	}
	if len(resp.Kvs) == 0 {
		return Manifest{}, fmt.Errorf("%w: no manifests for job %q", ErrNotFound, j.name)
	}
	return decodeManifest(j.name, string(resp.Kvs[0].Key), resp.Kvs[0].Value)
}

// DeleteManifest removes the manifest of step; ErrNotFound if there was none.
func (j *Job) DeleteManifest(ctx context.Context, step int64) error {
	resp, err := j.c.etcd.Delete(ctx, CheckpointKey(j.name, step))
	if err != nil {
		return fmt.Errorf("cluster: delete manifest of step %d: %w", step, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: no manifest for step %d of job %q", ErrNotFound, step, j.name)
	}
	return nil
}

func decodeManifest(job, key string, val []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(val, &m); err != nil {
		return Manifest{}, fmt.Errorf("cluster: decode manifest %s: %w", key, err)
	}
	step, err := stepFromKey(job, key)
	if err != nil {
		return Manifest{}, err
	}
	if step != m.Step {
		return Manifest{}, fmt.Errorf("%w: manifest at %s says step %d", ErrInvalid, key, m.Step)
	}
	return m, nil
}
