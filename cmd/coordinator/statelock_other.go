//go:build !unix

package main

// lockState does nothing where flock is missing: the raft log's and
// etcd's own file locks keep a second coordinator out (it waits for them).
func lockState(dir string) (release func(), err error) { return func() {}, nil }
