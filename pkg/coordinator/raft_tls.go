package coordinator

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// tlsStream is a raft.StreamLayer over mutual TLS: raft's own TCP
// transport has no TLS, so the replicas' log replication would otherwise
// cross the network in clear.
type tlsStream struct {
	net.Listener
	client *tls.Config
}

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), s.client)
}

// NewTLSTransport binds a raft transport to bind whose connections use
// mutual TLS (server is the listening side, client the dialling side, as
// pkg/tlsconf builds them). Like NewTCPTransport, its address is the bound
// one, which must not be a wildcard.
func NewTLSTransport(bind string, server, client *tls.Config, logger *zap.Logger) (*raft.NetworkTransport, error) {
	if server == nil || client == nil {
		return nil, fmt.Errorf("%w: raft TLS transport without TLS configuration", ErrInvalid)
	}
	lis, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft transport on %s: %w", bind, err)
	}
	if a, ok := lis.Addr().(*net.TCPAddr); !ok || a.IP.IsUnspecified() {
		lis.Close()
		return nil, fmt.Errorf("%w: raft bind address %s is not one the other replicas can dial", ErrInvalid, lis.Addr())
	}
	st := &tlsStream{Listener: tls.NewListener(lis, server), client: client}
	return raft.NewNetworkTransportWithLogger(st, 3, 5*time.Second, hcLogger(logger)), nil
}
