package cluster

import "errors"

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrInvalid reports bad input: an empty or malformed job name, member
	// id, manifest, or option.
	ErrInvalid = errors.New("cluster: invalid argument")
	// ErrUnreachable reports that no etcd endpoint answered in time.
	ErrUnreachable = errors.New("cluster: etcd unreachable")
	// ErrClosed reports use of a closed Client or Embedded server.
	ErrClosed = errors.New("cluster: closed")
	// ErrMemberExists reports that a live member already holds the id.
	ErrMemberExists = errors.New("cluster: member id already registered")
	// ErrNotFound reports a missing key (e.g. no manifest for a step).
	ErrNotFound = errors.New("cluster: not found")
)
