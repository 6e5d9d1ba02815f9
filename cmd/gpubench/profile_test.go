package main

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// The profiler counts each memory-bound pass's activation bytes (at the
// activation element size it was given) and reports them as GB/s beside
// the calls; rows of compute-bound ops carry no bandwidth.
func TestProfilerRowsAndBandwidth(t *testing.T) {
	b := nn.NewCPU(1)
	p := newProfiler(b, 2)
	const n, c, hw = 4, 8, 64
	x, y := b.New(n, c, hw, 1), b.New(n, c, hw, 1)
	sum, sq := b.New(c), b.New(c)
	b.Fill(x, 1)
	p.BatchNormStats(sum, sq, x) // off: not counted
	p.on = true
	for range 3 {
		p.BatchNormStats(sum, sq, x)
	}
	p.ReLU(y, x)
	p.time("opaque", func() {})
	if r := p.rows["bn stats"]; r == nil || r.calls != 3 || r.bytes != 3*n*c*hw*2 {
		t.Fatalf("bn stats row %+v, want 3 calls of %d bytes", r, n*c*hw*2)
	}
	if r := p.rows["relu"]; r == nil || r.bytes != 2*n*c*hw*2 {
		t.Fatalf("relu row %+v, want one read and one write of %d bytes", r, n*c*hw*2)
	}
	var out bytes.Buffer
	p.report(&out, 1)
	p.reference(&out, 1<<16)
	for _, want := range []string{
		`(?m)^PROFILE bn stats +[0-9.]+ ms/step +[0-9.]+% +3 calls/step +[0-9.]+ us/call +[0-9]+ GB/s$`,
		`(?m)^PROFILE opaque +[0-9.]+ ms/step +[0-9.]+% +1 calls/step +[0-9.]+ us/call$`,
		`(?m)^# profile reference: empty synchronised call [0-9.]+ us; copy of 0.25 MiB [0-9.]+ us, [0-9]+ GB/s \(read \+ write\)$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("no line matching %s in\n%s", want, out.String())
		}
	}
	// The copy reference really copied.
	got := regexp.MustCompile(`copy of 0.25 MiB ([0-9.]+) us`).FindStringSubmatch(out.String())
	if got == nil {
		t.Fatal("no copy time")
	}
	if v, err := strconv.ParseFloat(got[1], 64); err != nil || v <= 0 {
		t.Errorf("copy time %q", got[1])
	}
}
