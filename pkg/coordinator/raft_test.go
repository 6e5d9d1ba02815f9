package coordinator

import (
	"context"
	"errors"
	"fmt"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testTimeout is the raft heartbeat/election timeout in tests: short, but
// not so short that two busy cores cause needless elections.
const testTimeout = 400 * time.Millisecond

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// runJob applies a spec, a membership of n workers and a commit on node,
// returning the state.
func runJob(t *testing.T, node *Node, step int64) JobState {
	t.Helper()
	ctx := ctxT(t, 5*time.Second)
	if _, err := node.Apply(ctx, Command{Op: opSetSpec, Spec: &SetSpecCommand{Spec: []byte(`{"x":1}`), MinWorkers: 1}}); err != nil {
		t.Fatal(err)
	}
	st, err := node.Apply(ctx, Command{Op: opUpdateMembers, Members: &UpdateMembersCommand{
		Members: []Worker{{ID: "w0", JoinRevision: 5}, {ID: "w1", JoinRevision: 6}}, Revision: 6}})
	if err != nil {
		t.Fatal(err)
	}
	st, err = node.Apply(ctx, Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "w0", Generation: st.Generation, Step: step, Epoch: 2, Cursor: 640}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestOneVoterSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *Node {
		n, err := NewNode(NodeConfig{ID: "solo", Dir: dir, BindAddr: "127.0.0.1:0", Bootstrap: true,
			HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, ControlAddr: "127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "self-election", n.IsLeader)
		return n
	}
	n := open()
	st := runJob(t, n, 42)
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// One more entry after the snapshot: restart must replay log on top of it.
	st, err := n.Apply(ctxT(t, 5*time.Second), Command{Op: opRecordCheckpoint, Checkpoint: &CheckpointCommand{Ref: CheckpointRef{Step: 40, Key: "k40"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.Apply(context.Background(), Command{Op: opSetLeader}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply on closed node: %v", err)
	}

	n2 := open()
	defer n2.Close()
	// Wait until the log is replayed (the new leader's announcement is applied last).
	waitFor(t, 5*time.Second, "log replay", func() bool { return n2.State().Checkpoint != nil })
	got := n2.State()
	if got.Committed.Step != 42 || got.Checkpoint.Key != "k40" || got.Generation != st.Generation || planIDs(got) != "w0,w1" {
		t.Fatalf("after restart: %+v", got)
	}
}

func TestNodeConfigErrors(t *testing.T) {
	for i, cfg := range []NodeConfig{
		{Dir: t.TempDir(), BindAddr: "127.0.0.1:0"},
		{ID: "a", BindAddr: "127.0.0.1:0"},
		{ID: "a", Dir: t.TempDir()},
		{ID: "a", Dir: t.TempDir(), BindAddr: "127.0.0.1:0", Peers: []Peer{{ID: "b", RaftAddr: "x:1"}}},
		{ID: "a", Dir: t.TempDir(), BindAddr: "127.0.0.1:0", Peers: []Peer{{ID: "a"}}},
		{ID: "a", Dir: t.TempDir(), BindAddr: "127.0.0.1:0", ElectionTimeout: -1},
	} {
		if _, err := NewNode(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("config %d: got %v, want ErrInvalid", i, err)
		}
	}
}

// cluster3 starts three voters over the given transports.
func cluster3(t *testing.T, trans []raft.Transport) []*Node {
	t.Helper()
	var peers []Peer
	for i, tr := range trans {
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), RaftAddr: string(tr.LocalAddr())})
	}
	nodes := make([]*Node, len(trans))
	for i, tr := range trans {
		n, err := NewNode(NodeConfig{ID: peers[i].ID, Dir: t.TempDir(), Transport: tr, Peers: peers, Bootstrap: true,
			HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, ControlAddr: "ctl-" + peers[i].ID})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
		t.Cleanup(func() { n.Close() })
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*Node, d time.Duration) *Node {
	t.Helper()
	var l *Node
	waitFor(t, d, "a leader", func() bool {
		for _, n := range nodes {
			if n != nil && !n.isClosed() && n.IsLeader() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// testFailover replicates state on three voters, stops the leader, and
// checks that another takes over within 5 s with the state intact.
func testFailover(t *testing.T, trans []raft.Transport) {
	nodes := cluster3(t, trans)
	l := leaderOf(t, nodes, 10*time.Second)
	st := runJob(t, l, 17)
	for _, n := range nodes {
		waitFor(t, 5*time.Second, "replication to "+n.ID(), func() bool { return n.State().Committed.Step == 17 })
	}
	for _, n := range nodes {
		if n == l {
			continue
		}
		if _, err := n.Apply(context.Background(), Command{Op: opSetLeader, Leader: &LeaderRef{ID: "x"}}); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("apply on follower %s: %v", n.ID(), err)
		}
		if li := n.Leader(); li.ID != l.ID() || li.ControlAddr != "ctl-"+l.ID() {
			t.Fatalf("follower %s sees leader %+v, want %s", n.ID(), li, l.ID())
		}
	}

	stopped := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var rest []*Node
	for _, n := range nodes {
		if n != l {
			rest = append(rest, n)
		}
	}
	l2 := leaderOf(t, rest, 5*time.Second)
	t.Logf("new leader %s elected %s after the old one stopped", l2.ID(), time.Since(stopped).Round(time.Millisecond))
	// Leadership's notifications say the same, without polling.
	for _, n := range rest {
		awaitLeadership(t, n, n == l2)
	}
	if got := l2.State(); got.Committed != st.Committed || planIDs(got) != planIDs(st) || got.ConfigHash != st.ConfigHash {
		t.Fatalf("state after failover %+v, want %+v", got, st)
	}
	// The new leader announces itself and keeps accepting commands.
	waitFor(t, 5*time.Second, "announcement", func() bool { return l2.State().Leader.ID == l2.ID() })
	st2, err := l2.Apply(ctxT(t, 5*time.Second), Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "w0", Generation: st.Generation, Step: 18, Epoch: 2, Cursor: 768}})
	if err != nil || st2.Committed.Step != 18 {
		t.Fatalf("commit on new leader: %v %+v", err, st2.Committed)
	}
	for _, n := range rest {
		waitFor(t, 5*time.Second, "replication after failover", func() bool { return n.State().Committed.Step == 18 })
	}
}

// inmemTransports returns three connected in-memory transports.
func inmemTransports() []raft.Transport {
	var trans []raft.Transport
	var inm []*raft.InmemTransport
	for i := 0; i < 3; i++ {
		_, tr := raft.NewInmemTransport("")
		inm = append(inm, tr)
		trans = append(trans, tr)
	}
	for _, a := range inm {
		for _, b := range inm {
			if a != b {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	return trans
}

func TestThreeVotersFailoverInmem(t *testing.T) {
	testFailover(t, inmemTransports())
}

func TestThreeVotersFailoverTCP(t *testing.T) {
	var trans []raft.Transport
	for i := 0; i < 3; i++ {
		tr, err := NewTCPTransport("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		trans = append(trans, tr)
	}
	testFailover(t, trans)
}

func tlsTransports(t *testing.T, cfgs ...*tlsconf.Config) []raft.Transport {
	t.Helper()
	var trans []raft.Transport
	for _, c := range cfgs {
		tr, err := NewTLSTransport("127.0.0.1:0", c.Server, c.Client, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		trans = append(trans, tr)
	}
	return trans
}

func testPKI(t *testing.T) *tlsconf.Config {
	t.Helper()
	f, err := tlsconf.Generate(t.TempDir(), "", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestThreeVotersFailoverTLS(t *testing.T) {
	c := testPKI(t)
	testFailover(t, tlsTransports(t, c, c, c))
}

// A replica whose certificate another CA signed cannot take part: the
// two of the job's CA elect a leader and replicate, the third never
// receives the state.
func TestRaftTLSRefusesForeignCertificate(t *testing.T) {
	c, other := testPKI(t), testPKI(t)
	nodes := cluster3(t, tlsTransports(t, c, c, other))
	l := leaderOf(t, nodes[:2], 10*time.Second)
	runJob(t, l, 5)
	for _, n := range nodes[:2] {
		waitFor(t, 5*time.Second, "replication to "+n.ID(), func() bool { return n.State().Committed.Step == 5 })
	}
	// The leader has tried to reach the third since: its heartbeats fail
	// (they would not if the third accepted the leader's certificate, and
	// it would then have received the entries).
	awaitFailures(t, heartbeatFailures(t, l), nodes[2].ID(), 3)
	if got := nodes[2].State().Committed.Step; got != 0 {
		t.Fatalf("the replica of another CA received step %d", got)
	}
	if _, err := NewTLSTransport("0.0.0.0:0", c.Server, c.Client, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("wildcard bind: %v, want ErrInvalid", err)
	}
}

// awaitLeadership waits, on Node.Leadership's notifications, until n's
// leadership is want.
func awaitLeadership(t *testing.T, n *Node, want bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		lead, changed := n.Leadership()
		if lead == want {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("node %s: leadership %v, want %v", n.ID(), lead, want)
		}
	}
}

// heartbeatFailures delivers the peer ids of the heartbeats n fails to
// send from now on (raft's observations; some may be dropped, but failures
// repeat while a peer stays unreachable).
func heartbeatFailures(t *testing.T, n *Node) <-chan string {
	t.Helper()
	obs := make(chan raft.Observation, 64)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.FailedHeartbeatObservation)
		return ok
	})
	n.raft.RegisterObserver(o)
	out := make(chan string, 64)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case ob := <-obs:
				select {
				case out <- string(ob.Data.(raft.FailedHeartbeatObservation).PeerID):
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { n.raft.DeregisterObserver(o); close(stop) })
	return out
}

// awaitFailures waits until k heartbeats to peer have failed.
func awaitFailures(t *testing.T, failures <-chan string, peer string, k int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for seen := 0; seen < k; {
		select {
		case id := <-failures:
			if id == peer {
				seen++
			}
		case <-timeout:
			t.Fatalf("%d of %d heartbeats to %s failed within 10 s", seen, k, peer)
		}
	}
}

// WaitPeersGone returns once every other voter is gone, not before: with
// one follower stopped (and the leader's heartbeats to it failing) it is
// still waiting; once the second stops it returns with nobody left.
func TestWaitPeersGone(t *testing.T) {
	var trans []raft.Transport
	var peers []Peer
	for i := 0; i < 3; i++ {
		tr, err := NewTCPTransport("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		trans = append(trans, tr)
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), RaftAddr: string(tr.LocalAddr())})
	}
	// A lease longer than the heartbeat interval: the leader notices the
	// second follower's absence before it steps down for want of a quorum.
	var nodes []*Node
	for i, tr := range trans {
		n, err := NewNode(NodeConfig{ID: peers[i].ID, Dir: t.TempDir(), Transport: tr, Peers: peers, Bootstrap: true,
			HeartbeatTimeout: time.Second, ElectionTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	l := leaderOf(t, nodes, 10*time.Second)
	runJob(t, l, 3)
	var followers []int
	for i, n := range nodes {
		waitFor(t, 5*time.Second, "replication to "+n.ID(), func() bool { return n.State().Committed.Step == 3 })
		if n != l {
			followers = append(followers, i)
		}
	}
	type result struct {
		left []string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		left, err := l.WaitPeersGone(ctxT(t, 30*time.Second))
		res <- result{left, err}
	}()
	failures := heartbeatFailures(t, l)
	stopNode := func(i int) {
		if err := nodes[i].Close(); err != nil {
			t.Fatal(err)
		}
		trans[i].(*raft.NetworkTransport).Close()
	}
	a, b := followers[0], followers[1]
	stopNode(a)
	awaitFailures(t, failures, nodes[a].ID(), 3)
	select {
	case r := <-res:
		t.Fatalf("WaitPeersGone returned (%v, %v) while %s was still running", r.left, r.err, nodes[b].ID())
	default:
	}
	stopped := time.Now()
	stopNode(b)
	select {
	case r := <-res:
		if len(r.left) != 0 || r.err != nil {
			t.Fatalf("WaitPeersGone = (%v, %v), want nobody left", r.left, r.err)
		}
		t.Logf("returned %s after the last follower stopped", time.Since(stopped).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("WaitPeersGone still waiting 10 s after both followers stopped")
	}

	// A one-voter cluster has nobody to wait for; an ended ctx names those
	// still running.
	solo, err := NewNode(NodeConfig{ID: "solo", Dir: t.TempDir(), BindAddr: "127.0.0.1:0", Bootstrap: true,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer solo.Close()
	waitFor(t, 5*time.Second, "self-election", solo.IsLeader)
	if left, err := solo.WaitPeersGone(ctxT(t, 5*time.Second)); len(left) != 0 || err != nil {
		t.Fatalf("one voter: WaitPeersGone = (%v, %v)", left, err)
	}
}

// An ended ctx ends the wait and names the voters still answering.
func TestWaitPeersGoneCancelled(t *testing.T) {
	nodes := cluster3(t, inmemTransports())
	l := leaderOf(t, nodes, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	left, err := l.WaitPeersGone(ctx)
	var want []string
	for _, n := range nodes {
		if n != l {
			want = append(want, n.ID())
		}
	}
	if !errors.Is(err, context.Canceled) || fmt.Sprint(left) != fmt.Sprint(want) {
		t.Fatalf("WaitPeersGone = (%v, %v), want (%v, context.Canceled)", left, err, want)
	}
}
