// Package cluster is ringtrain's etcd layer: an embedded etcd server for
// one-machine mode, a client for an embedded or external cluster,
// lease-based worker membership with watches, and checkpoint manifests.
//
// Key layout (every key of a job lives under /ringtrain/<job>/):
//
//	/ringtrain/<job>/members/<id>        Member JSON, attached to the worker's lease
//	/ringtrain/<job>/checkpoints/<step>  Manifest JSON; <step> is zero-padded to 20
//	                                     digits so that key order is step order
//
// Promises: a member key exists exactly as long as its worker's lease is
// alive (a worker killed with SIGKILL disappears within the lease TTL); a
// membership watch delivers a consistent snapshot first and then one
// snapshot per change, each at an etcd revision, never older than the one
// before. Errors are sentinel values from this package wrapped with %w,
// or wrapped etcd errors.
package cluster
