package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/cluster/embedded"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// etcd is the one embedded etcd of this test binary.
var etcd *embedded.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coordinator-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	etcd, err = embedded.Start(context.Background(), embedded.Config{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd:", err)
		os.Exit(2)
	}
	code := m.Run()
	etcd.Close()
	os.RemoveAll(dir)
	if code == 0 {
		// Every node, service, server and client of the tests is closed:
		// nothing of ours may still run.
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
			// raft's NetworkTransport.Close stops its listener but leaves
			// accepted connections to end when the peer drops them.
			goleak.IgnoreAnyFunction("github.com/hashicorp/raft.(*NetworkTransport).handleConn"),
			goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func etcdJob(t *testing.T, name string) (*cluster.Client, *cluster.Job) {
	t.Helper()
	c, err := cluster.Connect(ctxT(t, 10*time.Second), cluster.Options{Endpoints: etcd.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	j, err := c.Job(name)
	if err != nil {
		t.Fatal(err)
	}
	return c, j
}

// nextPlan waits for the next plan from a WatchPlan goroutine.
func nextPlan(t *testing.T, ch <-chan *controlpb.Plan, d time.Duration) *controlpb.Plan {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(d):
		t.Fatalf("no plan within %s", d)
	}
	return nil
}

func planMembers(p *controlpb.Plan) string {
	s := ""
	for i, m := range p.GetMembers() {
		if i > 0 {
			s += ","
		}
		s += m.GetId()
	}
	return s
}

func TestControlServiceOverGRPCWithEtcdMembership(t *testing.T) {
	_, job := etcdJob(t, "svc")
	co, err := Start(Config{
		ListenAddr: "127.0.0.1:0",
		Node:       NodeConfig{ID: "c0", Dir: t.TempDir(), BindAddr: "127.0.0.1:0", Bootstrap: true, HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout},
		Service: ServiceConfig{Job: "svc", EtcdEndpoints: etcd.Endpoints(), MemberTTL: time.Second, Members: job,
			Spec: &SpecInput{Spec: []byte(`{"model":"resnet18"}`), MinWorkers: 2, MaxWorkers: 3}, SettleDelay: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	cl, err := NewClient([]string{co.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxT(t, 30*time.Second)

	jr, err := cl.Join(ctx, &controlpb.WorkerInfo{Id: "w0", Address: "127.0.0.1:5000", HostId: "h", Device: "cpu", Pid: 1})
	if err != nil {
		t.Fatal(err)
	}
	if jr.GetJob() != "svc" || len(jr.GetEtcdEndpoints()) != 1 || jr.GetMemberTtlMs() != 1000 || string(jr.GetSpec()) != `{"model":"resnet18"}` ||
		jr.GetPlan().GetYourRank() != -1 || jr.GetConfigHash() != ConfigHash([]byte(`{"model":"resnet18"}`)) {
		t.Fatalf("join response %v", jr)
	}
	if _, err := cl.Join(ctx, &controlpb.WorkerInfo{Id: "bad/id"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad worker id: %v", err)
	}

	plans := make(chan *controlpb.Plan, 16)
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- cl.WatchPlan(wctx, "w0", jr.GetPlan().GetGeneration(), func(p *controlpb.Plan) error { plans <- p; return nil })
	}()

	// Two workers register in etcd, each with its own client (process).
	reg := func(id string) (*cluster.Client, *cluster.Registration) {
		c, j := etcdJob(t, jr.GetJob())
		r, err := j.Register(ctx, cluster.Member{ID: id, Address: "127.0.0.1:500" + id[1:], HostID: "h", Device: "cpu"}, time.Duration(jr.GetMemberTtlMs())*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return c, r
	}
	_, r0 := reg("w0")
	c1, _ := reg("w1")
	var p *controlpb.Plan
	for planMembers(p) != "w0,w1" || p.GetState() != controlpb.JobState_JOB_STATE_RUNNING {
		p = nextPlan(t, plans, 5*time.Second)
	}
	if p.GetYourRank() != 0 || p.GetMembers()[1].GetAddress() != "127.0.0.1:5001" || p.GetMinWorkers() != 2 {
		t.Fatalf("plan %v", p)
	}
	gen := p.GetGeneration()

	// Commits: rank 0 only, current generation only; sentinels survive gRPC.
	if _, err := cl.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: "w1", Generation: gen, Step: 1}); !errors.Is(err, ErrNotRankZero) {
		t.Fatalf("commit from rank 1: %v", err)
	}
	if _, err := cl.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: "w0", Generation: gen - 1, Step: 1}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("stale commit: %v", err)
	}
	cr, err := cl.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: "w0", Generation: gen, Step: 3, Epoch: 0, Cursor: 384})
	if err != nil || cr.GetCommitted().GetStep() != 3 {
		t.Fatalf("commit: %v %v", cr, err)
	}
	if err := cl.ReportMetrics(ctx, &controlpb.MetricsReport{WorkerId: "w0", Generation: gen, Step: 3, Loss: 2.1, ImagesPerSec: 100, Phase: "train",
		Phases:            &controlpb.StepPhases{StepSeconds: 0.25, ExposedAllreduceSeconds: 0.05, AllreduceBytes: 1 << 20, World: 2},
		DeviceMemoryBytes: 3 << 30, DeviceMemoryTotalBytes: 80 << 30}); err != nil {
		t.Fatal(err)
	}
	if err := cl.ReportMetrics(ctx, &controlpb.MetricsReport{WorkerId: "w1", Generation: gen, Rank: 1, Step: 3, Loss: 2.2, ImagesPerSec: 50, Phase: "train"}); err != nil {
		t.Fatal(err)
	}
	if rr, err := cl.RecordCheckpoint(ctx, &controlpb.RecordCheckpointRequest{WorkerId: "w0", Checkpoint: &controlpb.CheckpointRef{Step: 3, Key: cluster.CheckpointKey("svc", 3)}}); err != nil || rr.GetLatest().GetStep() != 3 {
		t.Fatalf("record checkpoint: %v %v", rr, err)
	}
	js, err := cl.GetJob(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if js.GetImagesPerSec() != 150 || len(js.GetMetrics()) != 2 || js.GetMetrics()[0].GetUnixNano() == 0 || len(js.GetLive()) != 2 ||
		!js.GetLeader().GetIsLeader() || js.GetPlan().GetLatestCheckpoint().GetStep() != 3 || js.GetPlan().GetCommitted().GetCursor() != 384 {
		t.Fatalf("job status %v", js)
	}
	for _, m := range js.GetMetrics() {
		if ph := m.GetPhases(); m.GetWorkerId() == "w0" && (ph.GetStepSeconds() != 0.25 || ph.GetExposedAllreduceSeconds() != 0.05 ||
			ph.GetAllreduceBytes() != 1<<20 || ph.GetWorld() != 2) {
			t.Fatalf("step phases not kept: %v", m)
		}
		if m.GetWorkerId() == "w0" && (m.GetDeviceMemoryBytes() != 3<<30 || m.GetDeviceMemoryTotalBytes() != 80<<30) {
			t.Fatalf("device memory not kept: %v", m)
		}
	}

	// w1 dies (its client closes without revoking): below min 2, paused.
	killed := time.Now()
	c1.Close()
	for planMembers(p) != "w0" {
		p = nextPlan(t, plans, 6*time.Second)
	}
	if p.GetState() != controlpb.JobState_JOB_STATE_PAUSED || p.GetGeneration() <= gen {
		t.Fatalf("after w1 died: %v", p)
	}
	t.Logf("plan without the killed worker %s after its death (TTL 1s)", time.Since(killed).Round(time.Millisecond))
	gen = p.GetGeneration()

	// A replacement joins: running again, w0 keeps rank 0.
	reg("w2")
	for planMembers(p) != "w0,w2" {
		p = nextPlan(t, plans, 5*time.Second)
	}
	if p.GetState() != controlpb.JobState_JOB_STATE_RUNNING || p.GetGeneration() <= gen || p.GetYourRank() != 0 {
		t.Fatalf("after replacement: %v", p)
	}
	// A failure report for the current generation excludes the suspect.
	fp, err := cl.ReportFailure(ctx, &controlpb.FailureReport{WorkerId: "w0", Generation: p.GetGeneration(), Reason: "ring deadline", SuspectId: "w2"})
	if err != nil || planMembers(fp) != "w0" || fp.GetGeneration() != p.GetGeneration()+1 {
		t.Fatalf("failure report: %v %v", fp, err)
	}
	// The job finishes.
	if _, err := cl.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: "w0", Generation: fp.GetGeneration(), Step: 9, Done: true}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("commit while paused: %v", err)
	}
	r0.Close()
	stopWatch()
	if err := <-watchDone; err != nil {
		t.Fatalf("WatchPlan: %v", err)
	}
}

func TestClientUnreachableFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cl, err := NewClient([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	_, err = cl.Join(ctxT(t, 2*time.Second), &controlpb.WorkerInfo{Id: "w"})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("took %s", d)
	}
	if _, err := NewClient(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no addresses: %v", err)
	}
}

// TestThreeReplicasRedirectAndFailover runs three full replicas (raft over
// TCP, Control over gRPC): a client pointed at a follower is redirected to
// the leader, and after the leader stops it finds the new one with the
// state intact.
func TestThreeReplicasRedirectAndFailover(t *testing.T) {
	var peers []Peer
	type rep struct {
		co  *Coordinator
		cfg Config
	}
	reps := make([]*rep, 3)
	for i := range reps {
		tr, err := NewTCPTransport("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("r%d", i)
		peers = append(peers, Peer{ID: id, RaftAddr: string(tr.LocalAddr())})
		reps[i] = &rep{cfg: Config{ListenAddr: "127.0.0.1:0",
			Node:    NodeConfig{ID: id, Dir: t.TempDir(), Transport: tr, Bootstrap: true, HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout},
			Service: ServiceConfig{Job: "ha", Spec: &SpecInput{Spec: []byte(`{}`), MinWorkers: 1}}}}
		t.Cleanup(func() { tr.Close() })
	}
	var addrs []string
	for _, r := range reps {
		r.cfg.Node.Peers = peers
		co, err := Start(r.cfg)
		if err != nil {
			t.Fatal(err)
		}
		r.co = co
		t.Cleanup(func() { co.Close() })
		addrs = append(addrs, co.Addr())
	}
	var leader *rep
	waitFor(t, 10*time.Second, "leader announced", func() bool {
		for _, r := range reps {
			if r.co.Node().IsLeader() && r.co.Node().State().Leader.ID == r.co.Node().ID() {
				leader = r
				return true
			}
		}
		return false
	})
	// Seed a membership and a commit through raft.
	st, err := leader.co.Node().Apply(ctxT(t, 5*time.Second), Command{Op: opUpdateMembers, Members: &UpdateMembersCommand{Members: []Worker{{ID: "w0", JoinRevision: 1}}, Revision: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var follower *rep
	for _, r := range reps {
		if r != leader {
			follower = r
		}
	}
	waitFor(t, 5*time.Second, "follower catch-up", func() bool { return follower.co.Node().State().Leader.ID == leader.co.Node().ID() })

	// A raw call to the follower is refused with the leader's address.
	raw, err := grpc.NewClient(follower.co.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cc := controlpb.NewControlClient(raw)
	_, rawErr := cc.GetJob(ctxT(t, 5*time.Second), &controlpb.GetJobRequest{})
	nl, conv := fromStatus(rawErr)
	if !errors.Is(conv, ErrNotLeader) || nl.GetLeaderAddress() != leader.co.Addr() {
		t.Fatalf("follower answered %v (detail %v), want a redirect to %s", rawErr, nl, leader.co.Addr())
	}
	li, err := cc.Leader(ctxT(t, 5*time.Second), &controlpb.LeaderRequest{})
	if err != nil || li.GetIsLeader() || li.GetLeaderAddress() != leader.co.Addr() {
		t.Fatalf("Leader on follower: %v %v", li, err)
	}
	// The redirecting client reaches the leader through the follower.
	direct, err := NewClient([]string{follower.co.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	cr, err := direct.CommitStep(ctxT(t, 5*time.Second), &controlpb.CommitStepRequest{WorkerId: "w0", Generation: st.Generation, Step: 11, Cursor: 7})
	if err != nil || cr.GetCommitted().GetStep() != 11 {
		t.Fatalf("commit via follower: %v %v", cr, err)
	}
	if direct.Leader() != leader.co.Addr() {
		t.Fatalf("client settled on %s, want the leader %s", direct.Leader(), leader.co.Addr())
	}

	// The leader dies; a client knowing all replicas finds the new one.
	all, err := NewClient(addrs)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	stopped := time.Now()
	leader.co.Close()
	js, err := all.GetJob(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control service answered from the new leader %s %s after the old one stopped",
		js.GetLeader().GetNodeId(), time.Since(stopped).Round(time.Millisecond))
	if js.GetLeader().GetNodeId() == leader.co.Node().ID() || js.GetPlan().GetCommitted().GetStep() != 11 || planMembers(js.GetPlan()) != "w0" {
		t.Fatalf("after failover: %v", js)
	}
	if d := time.Since(stopped); d > 5*time.Second {
		t.Fatalf("failover took %s", d)
	}
}

// Shutdown lets an open plan stream end on its own: it refuses new
// connections at once, keeps the stream while the worker watches, and
// returns once the worker hangs up. With ctx ended first it cuts the
// stream and says so.
func TestShutdownWaitsForOpenCalls(t *testing.T) {
	_, job := etcdJob(t, "shutdown")
	start := func() *Coordinator {
		co, err := Start(Config{
			ListenAddr: "127.0.0.1:0",
			Node:       NodeConfig{ID: "c0", Dir: t.TempDir(), BindAddr: "127.0.0.1:0", Bootstrap: true, HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout},
			Service:    ServiceConfig{Job: "shutdown", EtcdEndpoints: etcd.Endpoints(), MemberTTL: time.Second, Members: job},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { co.Close() })
		waitFor(t, 5*time.Second, "self-election", co.Node().IsLeader)
		return co
	}
	// watch opens a plan stream and reads one plan from it (so that its
	// call runs on the server); errs delivers the stream's end.
	watch := func(co *Coordinator) (cancel context.CancelFunc, errs <-chan error) {
		conn, err := grpc.NewClient(co.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := co.Node().Apply(ctxT(t, 5*time.Second), Command{Op: opUpdateMembers, Members: &UpdateMembersCommand{
			Members: []Worker{{ID: "w0", JoinRevision: 1}}, Revision: 1}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := controlpb.NewControlClient(conn).WatchPlan(ctx, &controlpb.WatchPlanRequest{WorkerId: "w0"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					ch <- err
					return
				}
			}
		}()
		return cancel, ch
	}

	co := start()
	hangUp, streamErr := watch(co)
	res := make(chan error, 1)
	go func() { res <- co.Shutdown(ctxT(t, 30*time.Second)) }()
	// The listener closes first: a new connection is refused.
	waitFor(t, 5*time.Second, "new connections refused", func() bool {
		c, err := net.DialTimeout("tcp", co.Addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-res:
		t.Fatalf("Shutdown returned (%v) while a plan stream was open", err)
	case err := <-streamErr:
		t.Fatalf("the open plan stream was cut: %v", err)
	default:
	}
	hangUp()
	if err := <-streamErr; status.Code(err) != codes.Canceled {
		t.Fatalf("the stream ended with %v, want the worker's own cancellation", err)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still waiting 10 s after the worker hung up")
	}

	co = start()
	_, streamErr = watch(co)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := co.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an ended ctx: %v, want context.Canceled", err)
	}
	if err := <-streamErr; status.Code(err) != codes.Unavailable {
		t.Fatalf("the cut stream ended with %v, want Unavailable", err)
	}
}

// feedMembers is a MembershipSource whose snapshots the test sends.
type feedMembers chan cluster.MemberSnapshot

var _ MembershipSource = feedMembers(nil)

func (f feedMembers) WatchMembers(ctx context.Context) (<-chan cluster.MemberSnapshot, error) {
	out := make(chan cluster.MemberSnapshot)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-f:
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// openSolo opens a one-voter node on the raft state in dir and its
// service; the caller closes both.
func openSolo(t *testing.T, dir string, cfg ServiceConfig) (*Node, *Service) {
	t.Helper()
	n, err := NewNode(NodeConfig{ID: "solo", Dir: dir, BindAddr: "127.0.0.1:0", Bootstrap: true,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, ControlAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewService(n, cfg)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	return n, s
}

// A service with a start quorum (the coordinator's --workers N) holds the
// job until that many workers are live, each time it starts: a
// coordinator started again on the same raft state does not count the
// members its earlier run recorded, nor run on the first to come back.
func TestServiceImposesStartQuorumOnEachStart(t *testing.T) {
	dir := t.TempDir()
	feed := make(feedMembers)
	open := func() (*Node, *Service) {
		return openSolo(t, dir, ServiceConfig{Job: "quorum", Members: feed, SettleDelay: 10 * time.Millisecond,
			Spec: &SpecInput{Spec: []byte(`{"model":"resnet18"}`), MinWorkers: 1, MaxWorkers: 2, StartWorkers: 2}})
	}
	send := func(rev int64, ids ...string) {
		t.Helper()
		snap := cluster.MemberSnapshot{Revision: rev}
		for i, id := range ids {
			snap.Members = append(snap.Members, cluster.Member{ID: id, Address: "127.0.0.1:1", JoinRevision: rev + int64(i)})
		}
		select {
		case feed <- snap:
		case <-time.After(10 * time.Second):
			t.Fatal("the service does not follow membership")
		}
	}
	live := func(n *Node, k int) func() bool { return func() bool { return len(n.State().Live) == k } }

	n, s := open()
	send(10, "w1")
	waitFor(t, 5*time.Second, "w1 live", live(n, 1))
	if st := n.State(); st.Status != StatusWaiting {
		t.Fatalf("one of two workers live: status %s, want waiting", st.Status)
	}
	send(11, "w1", "w0")
	waitFor(t, 5*time.Second, "running on two", func() bool { st := n.State(); return st.Status == StatusRunning && len(st.Plan) == 2 })
	s.Close()
	n.Close()

	n, s = open()
	defer n.Close()
	defer s.Close()
	waitFor(t, 5*time.Second, "the quorum imposed again", func() bool {
		st := n.State()
		return st.Status == StatusPaused && st.StartWorkers == 2 && len(st.Live) == 0
	})
	send(20, "w0")
	waitFor(t, 5*time.Second, "w0 live", live(n, 1))
	if st := n.State(); st.Status != StatusPaused {
		t.Fatalf("started again, one of two workers back: status %s, want paused", st.Status)
	}
	send(21, "w0", "w1")
	waitFor(t, 5*time.Second, "running on two again", func() bool { st := n.State(); return st.Status == StatusRunning && len(st.Plan) == 2 })
}

// A replica started again on the raft state of an earlier run: that run's
// failure is stale (the spec it imposes retries the job), a failure of
// this run is not; and a spec the job cannot take (steps committed under
// another) is refused through SpecImposed, leaving the job as it was.
func TestServiceRestartOverFailedOrOtherJob(t *testing.T) {
	dir := t.TempDir()
	open := func(spec string) (*Node, *Service) {
		t.Helper()
		return openSolo(t, dir, ServiceConfig{Job: "again", Spec: &SpecInput{Spec: []byte(spec), MinWorkers: 1}})
	}
	imposed := func(s *Service) error {
		t.Helper()
		select {
		case err := <-s.SpecImposed():
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("the spec's outcome was never delivered")
			return nil
		}
	}
	ctx := ctxT(t, 30*time.Second)

	n, s := open(`{"a":1}`)
	if err := imposed(s); err != nil {
		t.Fatalf("a new job refused its spec: %v", err)
	}
	st, err := n.Apply(ctx, Command{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "w0", Reason: "bad input", Fatal: true}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusFailed || st.FailedIndex == 0 || n.StaleFailure(st) {
		t.Fatalf("this run's failure: status %s, index %d, stale %v", st.Status, st.FailedIndex, n.StaleFailure(st))
	}
	failed := st
	s.Close()
	n.Close()

	n, s = open(`{"a":1}`)
	if !n.StaleFailure(failed) || n.StartIndex() < failed.FailedIndex {
		t.Fatalf("the earlier run's failure (index %d) is not stale after a restart at index %d", failed.FailedIndex, n.StartIndex())
	}
	if err := imposed(s); err != nil {
		t.Fatalf("the same spec over a failed job: %v", err)
	}
	if st := n.State(); st.Status == StatusFailed {
		t.Fatalf("the failed job was not retried: %+v", st)
	}
	// Steps committed under this spec: another one is refused.
	if _, err := n.Apply(ctx, Command{Op: opUpdateMembers, Members: &UpdateMembersCommand{Members: []Worker{{ID: "w0", JoinRevision: 5}}, Revision: 5}}); err != nil {
		t.Fatal(err)
	}
	gen := n.State().Generation
	if _, err := n.Apply(ctx, Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "w0", Generation: gen, Step: 7}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	n.Close()

	n, s = open(`{"a":2}`)
	defer n.Close()
	defer s.Close()
	if err := imposed(s); !errors.Is(err, ErrSpecMismatch) {
		t.Fatalf("another spec over committed steps: %v, want ErrSpecMismatch", err)
	}
	if st := n.State(); string(st.Spec) != `{"a":1}` || st.Committed.Step != 7 {
		t.Fatalf("the refused spec changed the job: spec %s, step %d", st.Spec, st.Committed.Step)
	}
}

// A replica that stopped imposing its spec (coordinator --linger, after
// the job ended) does not retry a failed job when it leads; the same
// replica started again does.
func TestServiceStopImposingKeepsFailure(t *testing.T) {
	dir := t.TempDir()
	open := func(retired bool) (*Node, *Service) {
		t.Helper()
		n, s := openSolo(t, dir, ServiceConfig{Job: "linger", Spec: &SpecInput{Spec: []byte(`{"a":1}`), MinWorkers: 1}})
		if retired {
			// Before the first election: a restarted one-voter raft waits
			// out its election timeout first.
			s.StopImposing()
		}
		return n, s
	}
	ctx := ctxT(t, 30*time.Second)
	n, s := open(false)
	waitFor(t, 10*time.Second, "the spec imposed", func() bool { return len(n.State().Spec) > 0 })
	if _, err := n.Apply(ctx, Command{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "w0", Reason: "bad input", Fatal: true}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	n.Close()

	n, s = open(true)
	waitFor(t, 10*time.Second, "leadership", n.IsLeader)
	// Imposing would follow the election at once; give it a moment.
	time.Sleep(500 * time.Millisecond)
	if st := n.State(); st.Status != StatusFailed {
		t.Fatalf("a replica that stopped imposing retried the failed job: status %s", st.Status)
	}
	s.Close()
	n.Close()

	n, s = open(false)
	defer n.Close()
	defer s.Close()
	waitFor(t, 10*time.Second, "the failed job retried", func() bool { return n.State().Status != StatusFailed })
}
