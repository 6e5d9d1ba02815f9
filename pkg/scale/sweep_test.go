package scale

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestSweepRoundsInterleavedMedian checks that the rounds run interleaved
// (1,2,4 then 1,2,4 ...), that each round's efficiency is relative to its
// own one-worker point, and that the reported point is the median round.
func TestSweepRoundsInterleavedMedian(t *testing.T) {
	var order []string
	// images/s per round: n=1 is 10, 20, 10; n=4's efficiency is 0.9, 0.5 (a slow spell), 0.95.
	ips := map[[2]int]float64{{1, 1}: 10, {1, 2}: 20, {1, 3}: 10, {4, 1}: 36, {4, 2}: 40, {4, 3}: 38}
	var progress strings.Builder
	res, err := Sweep(context.Background(), SweepConfig{BatchPerWorker: 8, Workers: []int{1, 4}, Steps: 3, Rounds: 3, Progress: &progress,
		RunPoint: func(_ context.Context, n, r int) (Point, error) {
			order = append(order, fmt.Sprintf("%d/%d", n, r))
			return Point{Workers: n, ImagesPerSec: ips[[2]int{n, r}], StepSeconds: float64(r)}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, " "); got != "1/1 4/1 1/2 4/2 1/3 4/3" {
		t.Fatalf("order %s", got)
	}
	e := res.Efficiency[4]
	if e.Min != 0.5 || e.Max != 0.95 || e.Median != 0.9 {
		t.Fatalf("efficiency over rounds %+v", e)
	}
	if p := res.Points[1]; p.Round != 1 || p.Efficiency != 0.9 || p.Workers != 4 {
		t.Fatalf("median point %+v", p)
	}
	if len(res.Rounds) != 3 || strings.Count(progress.String(), "\n") != 6 || !strings.Contains(progress.String(), "n=4 round 2/3") {
		t.Fatalf("%d rounds, progress:\n%s", len(res.Rounds), progress.String())
	}
}
