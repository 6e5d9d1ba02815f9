package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/cluster/embedded"
)

// startEtcd is cluster.Options.Start: the embedded etcd of one-machine
// mode (the coordinator is the only binary that links etcd's server).
func startEtcd(ctx context.Context, dir string, tls *cluster.ServerTLS, log *zap.Logger) (cluster.Server, error) {
	cfg := embedded.Config{Dir: dir, Logger: log}
	if tls != nil {
		cfg.TLS = &embedded.ServerTLS{CertFile: tls.CertFile, KeyFile: tls.KeyFile, CAFile: tls.CAFile}
	}
	return embedded.Start(ctx, cfg)
}
