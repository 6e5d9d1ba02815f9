package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapio"
)

// Peer is one voter of the raft cluster.
type Peer struct {
	ID       string // raft server id, unique
	RaftAddr string // host:port of its raft transport
	// ControlAddr is its Control gRPC address (optional: the leader also
	// announces its own through the replicated state).
	ControlAddr string
}

// NodeConfig configures one raft replica.
type NodeConfig struct {
	// ID is this replica's raft server id. Required.
	ID string
	// Dir is the state directory: raft.db (log and stable store) and
	// snapshots/ live under Dir/raft. Required.
	Dir string
	// Transport carries raft traffic. If nil, a TCP transport is bound to
	// BindAddr and closed by Close.
	Transport raft.Transport
	// BindAddr is the TCP address to bind when Transport is nil.
	BindAddr string
	// TLSServer and TLSClient, when both set, make that TCP transport
	// use mutual TLS (see NewTLSTransport).
	TLSServer, TLSClient *tls.Config
	// Peers are all voters, this one included. Empty means a one-voter
	// cluster of this node alone.
	Peers []Peer
	// Bootstrap creates the cluster from Peers when the state directory
	// holds no raft state yet. Every voter of a new cluster may set it, as
	// long as all give the same Peers.
	Bootstrap bool
	// ControlAddr is this replica's Control gRPC address, announced to the
	// others whenever it becomes leader.
	ControlAddr string
	// HeartbeatTimeout and ElectionTimeout (default 1 s each) bound how
	// fast a dead leader is replaced.
	HeartbeatTimeout, ElectionTimeout time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot
	// (default 1024).
	SnapshotThreshold uint64
	// ApplyTimeout bounds one Apply when ctx has no deadline (default 5 s).
	ApplyTimeout time.Duration
	// Logger receives raft's warnings (default: none).
	Logger *zap.Logger
}

// DefaultTimeout is the default raft heartbeat and election timeout.
const DefaultTimeout = time.Second

// Node is one raft replica of the job state. It is safe for concurrent use.
type Node struct {
	cfg      NodeConfig
	raft     *raft.Raft
	fsm      *FSM
	store    *raftboltdb.BoltStore
	trans    raft.Transport
	ownTrans bool
	log      *zap.Logger
	notify   chan bool
	leaderCh chan bool   // latest leadership value, capacity 1
	ready    atomic.Bool // leader and its FSM has applied every earlier entry
	// startIndex is the last raft index this node had stored when it
	// was opened: entries up to it are an earlier run's.
	startIndex uint64
	done       chan struct{}
	wg         sync.WaitGroup

	mu     sync.Mutex // guards closed, leading and leadChanged
	closed bool
	// leading is the latest leadership value (ready as leader);
	// leadChanged is closed and replaced whenever it changes.
	leading     bool
	leadChanged chan struct{}
}

// NewTCPTransport binds a raft TCP transport to bind (e.g. "127.0.0.1:0");
// its address is the bound one.
func NewTCPTransport(bind string, logger *zap.Logger) (*raft.NetworkTransport, error) {
	t, err := raft.NewTCPTransportWithLogger(bind, nil, 3, 5*time.Second, hcLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft transport on %s: %w", bind, err)
	}
	return t, nil
}

// NewNode opens (or creates) the replica's state in cfg.Dir, joins the
// raft cluster and starts following it. A one-voter node elects itself
// within about one election timeout.
func NewNode(cfg NodeConfig) (n *Node, err error) {
	if err := validateNodeConfig(&cfg); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("coordinator: state directory: %w", err)
	}
	n = &Node{cfg: cfg, fsm: NewFSM(), log: log, notify: make(chan bool, 8), leaderCh: make(chan bool, 1), done: make(chan struct{}),
		leadChanged: make(chan struct{})}
	cleanup := func() {
		if n.ownTrans && n.trans != nil {
			if c, ok := n.trans.(interface{ Close() error }); ok {
				c.Close()
			}
		}
		if n.store != nil {
			n.store.Close()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()

	n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("coordinator: open raft store: %w", err)
	}
	hl := hcLogger(cfg.Logger)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		return nil, fmt.Errorf("coordinator: open snapshot store: %w", err)
	}
	n.trans = cfg.Transport
	if n.trans == nil {
		if cfg.TLSServer != nil && cfg.TLSClient != nil {
			n.trans, err = NewTLSTransport(cfg.BindAddr, cfg.TLSServer, cfg.TLSClient, cfg.Logger)
		} else {
			n.trans, err = NewTCPTransport(cfg.BindAddr, cfg.Logger)
		}
		if err != nil {
			return nil, err
		}
		n.ownTrans = true
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.SnapshotThreshold
	rc.NotifyCh = n.notify
	rc.Logger = hl
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("%w: raft: %w", ErrInvalid, err)
	}

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(n.store, n.store, snaps)
		if err != nil {
			return nil, fmt.Errorf("coordinator: inspect raft state: %w", err)
		}
		if !has {
			var conf raft.Configuration
			if len(cfg.Peers) == 0 {
				conf.Servers = []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter}}
			}
			for _, p := range cfg.Peers {
				conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
			}
			if err := raft.BootstrapCluster(rc, n.store, n.store, snaps, n.trans, conf); err != nil {
				return nil, fmt.Errorf("coordinator: bootstrap raft: %w", err)
			}
		}
	}
	if n.startIndex, err = storedIndex(n.store, snaps); err != nil {
		return nil, err
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, n.store, n.store, snaps, n.trans)
	if err != nil {
		return nil, fmt.Errorf("coordinator: start raft: %w", err)
	}
	n.wg.Add(1)
	go n.watchLeadership()
	return n, nil
}

// storedIndex is the last raft index held by logs or snaps.
func storedIndex(logs raft.LogStore, snaps raft.SnapshotStore) (uint64, error) {
	last, err := logs.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("coordinator: read raft log: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return 0, fmt.Errorf("coordinator: list raft snapshots: %w", err)
	}
	for _, m := range metas {
		last = max(last, m.Index)
	}
	return last, nil
}

func validateNodeConfig(cfg *NodeConfig) error {
	if err := validateID(cfg.ID); err != nil {
		return err
	}
	if cfg.Dir == "" {
		return fmt.Errorf("%w: node %q needs a state directory", ErrInvalid, cfg.ID)
	}
	if cfg.Transport == nil && cfg.BindAddr == "" {
		return fmt.Errorf("%w: node %q needs a transport or a bind address", ErrInvalid, cfg.ID)
	}
	if len(cfg.Peers) > 0 {
		self := false
		seen := map[string]bool{}
		for _, p := range cfg.Peers {
			if err := validateID(p.ID); err != nil {
				return err
			}
			if p.RaftAddr == "" {
				return fmt.Errorf("%w: peer %q has no raft address", ErrInvalid, p.ID)
			}
			if seen[p.ID] {
				return fmt.Errorf("%w: peer %q listed twice", ErrInvalid, p.ID)
			}
			seen[p.ID] = true
			self = self || p.ID == cfg.ID
		}
		if !self {
			return fmt.Errorf("%w: peers do not include this node %q", ErrInvalid, cfg.ID)
		}
	}
	if cfg.HeartbeatTimeout < 0 || cfg.ElectionTimeout < 0 || cfg.ApplyTimeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrInvalid)
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = DefaultTimeout
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = DefaultTimeout
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 1024
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	return nil
}

func validateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty node id", ErrInvalid)
	}
	return nil
}

// hcLogger adapts zap to raft's hclog at warn level.
func hcLogger(l *zap.Logger) hclog.Logger {
	if l == nil {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Warn,
		Output: &zapio.Writer{Log: l, Level: zap.WarnLevel},
	})
}

// watchLeadership announces this node's control address whenever it wins
// leadership and forwards the latest leadership value to LeadershipCh.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case isLeader := <-n.notify:
			n.ready.Store(false)
			if isLeader {
				// The announcement is applied after every entry of earlier
				// terms, so once it is, this node's state is complete.
				n.announce()
				isLeader = n.raft.State() == raft.Leader
				n.ready.Store(isLeader)
			}
			select { // keep only the latest value
			case <-n.leaderCh:
			default:
			}
			n.leaderCh <- isLeader
			n.mu.Lock()
			if n.leading != isLeader {
				n.leading = isLeader
				close(n.leadChanged)
				n.leadChanged = make(chan struct{})
			}
			n.mu.Unlock()
		}
	}
}

func (n *Node) announce() {
	for n.raft.State() == raft.Leader && !n.isClosed() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		_, err := n.Apply(ctx, Command{Op: opSetLeader, Leader: &LeaderRef{ID: n.cfg.ID, ControlAddr: n.cfg.ControlAddr}})
		cancel()
		if err == nil || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrClosed) {
			return
		}
		n.log.Warn("announce leadership", zap.Error(err))
		select {
		case <-n.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StartIndex is the last raft index this node had stored when it was
// opened (0 for a new one): entries up to it were written by an earlier
// run, before this process started.
func (n *Node) StartIndex() uint64 { return n.startIndex }

// StaleFailure reports whether st (a state of this node) is failed by an
// earlier run: the failure's entry was stored before this process opened
// the node. Such a job is retried when a replica with a spec leads (see
// ServiceConfig.Spec); a failure of this run is final.
func (n *Node) StaleFailure(st JobState) bool {
	return st.Status == StatusFailed && st.FailedIndex <= n.startIndex
}

// ID returns the node's raft id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr returns the address of the node's raft transport.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// LeadershipCh delivers true when the node becomes leader and false when it
// stops; only the latest value is kept. It has one reader: the Service.
func (n *Node) LeadershipCh() <-chan bool { return n.leaderCh }

// Leadership returns whether this node is the leader, ready (as raft's
// notifications last said, see IsLeader), and a channel closed when that
// changes. Any number of watchers may use it.
func (n *Node) Leadership() (bool, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leading, n.leadChanged
}

// IsLeader reports whether this node is the raft leader and has applied
// every entry committed before its term (so its State is complete). A new
// leader becomes ready once its announcement is applied.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader && n.ready.Load() }

// LeaderInfo names the current leader as this node sees it.
type LeaderInfo struct {
	ID          string // empty while no leader is known
	RaftAddr    string
	ControlAddr string // empty when not known yet
}

// Leader returns the current leader. Its control address comes from the
// leader's announcement in the replicated state, else from Peers.
func (n *Node) Leader() LeaderInfo {
	addr, id := n.raft.LeaderWithID()
	li := LeaderInfo{ID: string(id), RaftAddr: string(addr)}
	if li.ID == "" {
		return li
	}
	if st := n.fsm.State(); st.Leader.ID == li.ID {
		li.ControlAddr = st.Leader.ControlAddr
	}
	if li.ControlAddr == "" {
		for _, p := range n.cfg.Peers {
			if p.ID == li.ID {
				li.ControlAddr = p.ControlAddr
			}
		}
	}
	if li.ID == n.cfg.ID && li.ControlAddr == "" {
		li.ControlAddr = n.cfg.ControlAddr
	}
	return li
}

// WaitLeader waits until some leader is known (this node or another).
func (n *Node) WaitLeader(ctx context.Context) (LeaderInfo, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if li := n.Leader(); li.ID != "" {
			return li, nil
		}
		select {
		case <-ctx.Done():
			return LeaderInfo{}, fmt.Errorf("coordinator: no leader elected: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// State returns a copy of the replicated state as applied on this node
// (a follower may lag the leader slightly).
func (n *Node) State() JobState { return n.fsm.State() }

// Watch returns the state and a channel closed at its next change.
func (n *Node) Watch() (JobState, <-chan struct{}) { return n.fsm.Watch() }

// Apply replicates cmd through the raft log and returns the state after it
// was applied. It fails with ErrNotLeader on a follower, and with the
// command's own error (ErrStaleGeneration, ...) when the state machine
// refused it.
func (n *Node) Apply(ctx context.Context, cmd Command) (JobState, error) {
	if n.isClosed() {
		return JobState{}, ErrClosed
	}
	if n.raft.State() != raft.Leader {
		return JobState{}, ErrNotLeader
	}
	data, err := json.Marshal(cmd)
	if err != nil {
		return JobState{}, fmt.Errorf("coordinator: encode command: %w", err)
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return JobState{}, ctx.Err()
		}
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return JobState{}, fmt.Errorf("%w: %w", ErrNotLeader, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return JobState{}, fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return JobState{}, fmt.Errorf("coordinator: replicate %s: %w", cmd.Op, err)
	}
	res, ok := f.Response().(applyResult)
	if !ok {
		return JobState{}, fmt.Errorf("coordinator: unexpected apply response %T", f.Response())
	}
	return res.state, res.err
}

// Snapshot asks raft to snapshot the state now (normally it does so every
// SnapshotThreshold entries).
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("coordinator: snapshot: %w", err)
	}
	return nil
}

// Voters returns the ids of the cluster's voters.
func (n *Node) Voters() ([]string, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("coordinator: raft configuration: %w", err)
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	return ids, nil
}

// WaitPeersGone waits, after the job's final entry, until every other voter
// has stopped answering this leader: raft reports each failed heartbeat
// (a replica that applied the final state exits, and its transport with
// it; one killed earlier fails at once). It also returns when this node
// stops leading, since then it can help no follower, and when ctx ends. It
// returns the voters still answering (sorted; none on a one-voter
// cluster) and ctx's error if ctx ended first. A voter that answers again
// (raft's resumed-heartbeat observation) counts as present again.
func (n *Node) WaitPeersGone(ctx context.Context) ([]string, error) {
	voters, err := n.Voters()
	if err != nil {
		return nil, err
	}
	present := map[string]bool{}
	for _, id := range voters {
		if id != n.cfg.ID {
			present[id] = true
		}
	}
	if len(present) == 0 {
		return nil, nil
	}
	// Heartbeats repeat every tenth of the heartbeat timeout, and keep
	// failing while a peer is gone, so a dropped observation costs one
	// interval; leadership changes are checked on every observation.
	obs := make(chan raft.Observation, 64)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.RaftState:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(o)
	defer n.raft.DeregisterObserver(o)
	for len(present) > 0 && n.raft.State() == raft.Leader && !n.isClosed() {
		select {
		case <-ctx.Done():
			return sortedKeys(present), ctx.Err()
		case <-n.done:
		case ob := <-obs:
			switch d := ob.Data.(type) {
			case raft.FailedHeartbeatObservation:
				delete(present, string(d.PeerID))
			case raft.ResumedHeartbeatObservation:
				if slices.Contains(voters, string(d.PeerID)) {
					present[string(d.PeerID)] = true
				}
			}
		}
	}
	return sortedKeys(present), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// Close stops the replica: raft shuts down (a leader steps down without
// handing over), the transport it created and the store are closed. It is
// idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	var errs []error
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("coordinator: raft shutdown: %w", err))
	}
	close(n.done)
	n.wg.Wait()
	if n.ownTrans {
		if c, ok := n.trans.(interface{ Close() error }); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("coordinator: close transport: %w", err))
			}
		}
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("coordinator: close raft store: %w", err))
	}
	return errors.Join(errs...)
}

// Term returns this replica's current raft term (0 when unknown).
func (n *Node) Term() uint64 {
	t, err := strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	if err != nil {
		return 0
	}
	return t
}
