package data

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// epochCoverage runs one epoch of steps, with the world size of each step
// chosen by worldAt(step), restarting from a fresh Sampler (a "resume")
// before the steps listed in resumeAt. It returns how often each sample was
// seen, and checks the ranks' slices tile each step in order.
func epochCoverage(t *testing.T, n, b int, cfg SamplerConfig, epoch int, worldAt func(step int) int, resumeAt map[int]bool) []int {
	t.Helper()
	s, err := NewSampler(n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]int, n)
	pos := Position{Epoch: epoch}
	order := s.Order(epoch)
	for step := 0; pos.Epoch == epoch; step++ {
		if resumeAt[step] {
			if s, err = NewSampler(n, cfg); err != nil {
				t.Fatal(err)
			}
		}
		world := worldAt(step)
		var step0 []int
		var next Position
		for r := range world {
			sh, err := s.Step(pos, b, r, world)
			if err != nil {
				t.Fatalf("step %d rank %d/%d at %v: %v", step, r, world, pos, err)
			}
			if r > 0 && sh.Next != next {
				t.Fatalf("ranks disagree on the next position: %v vs %v", sh.Next, next)
			}
			next = sh.Next
			step0 = append(step0, sh.Indices...)
		}
		want := order[pos.Cursor : pos.Cursor+len(step0)]
		if !slices.Equal(step0, want) {
			t.Fatalf("step %d: ranks' slices %v do not tile the step %v", step, step0, want)
		}
		for _, i := range step0 {
			seen[i]++
		}
		pos = next
	}
	if pos != (Position{Epoch: epoch + 1}) {
		t.Fatalf("epoch ended at %v", pos)
	}
	return seen
}

func TestSamplerEveryWorldSizeCoversEpochOnce(t *testing.T) {
	for _, n := range []int{1000, 1003} {
		for _, b := range []int{1, 7, 64, 100, 250} {
			for world := 1; world <= 16; world++ {
				for _, drop := range []bool{false, true} {
					cfg := SamplerConfig{Seed: 42, Shuffle: true, DropLast: drop}
					seen := epochCoverage(t, n, b, cfg, 3, func(int) int { return world }, nil)
					kept := n
					if drop {
						kept = n / b * b
					}
					ones := 0
					for i, c := range seen {
						if c > 1 {
							t.Fatalf("n=%d b=%d N=%d drop=%v: sample %d seen %d times", n, b, world, drop, i, c)
						}
						ones += c
					}
					if ones != kept {
						t.Fatalf("n=%d b=%d N=%d drop=%v: %d samples seen, want %d", n, b, world, drop, ones, kept)
					}
				}
			}
		}
	}
}

func TestSamplerWorldSizeChangesMidEpochWithResume(t *testing.T) {
	// 4 workers, then 3 after a failure, a resume from a new process, then 5.
	worlds := func(step int) int {
		switch {
		case step < 5:
			return 4
		case step < 11:
			return 3
		}
		return 5
	}
	for _, n := range []int{50000, 1001} {
		seen := epochCoverage(t, n, 128, SamplerConfig{Seed: 7, Shuffle: true}, 0, worlds, map[int]bool{5: true, 8: true, 11: true})
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d: sample %d seen %d times", n, i, c)
			}
		}
	}
}

func TestSamplerRandomWorldSchedules(t *testing.T) {
	r := NewRand(99)
	for trial := range 50 {
		n := 1 + r.Intn(3000)
		b := 1 + r.Intn(300)
		sched := make([]int, 1+n/b)
		for i := range sched {
			sched[i] = 1 + r.Intn(16)
		}
		resumes := map[int]bool{r.Intn(len(sched)): true}
		seen := epochCoverage(t, n, b, SamplerConfig{Seed: uint64(trial), Shuffle: true}, trial, func(s int) int { return sched[s] }, resumes)
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("trial %d (n=%d b=%d): sample %d seen %d times", trial, n, b, i, c)
			}
		}
	}
}

func TestShardRangeTilesAndBalances(t *testing.T) {
	for size := 0; size <= 40; size++ {
		for world := 1; world <= 16; world++ {
			next := 0
			for r := range world {
				lo, hi := ShardRange(size, r, world)
				if lo != next || hi < lo {
					t.Fatalf("size %d world %d rank %d: [%d,%d) after %d", size, world, r, lo, hi, next)
				}
				want := size / world
				if r < size%world {
					want++
				}
				if hi-lo != want {
					t.Fatalf("size %d world %d rank %d: %d samples, want %d", size, world, r, hi-lo, want)
				}
				next = hi
			}
			if next != size {
				t.Fatalf("size %d world %d: covers %d", size, world, next)
			}
		}
	}
	if lo, hi := ShardRange(10, 1, 4); lo != 3 || hi != 6 {
		t.Fatalf("ShardRange(10,1,4) = [%d,%d), want [3,6)", lo, hi)
	}
}

func TestSamplerResumeAtAnyCursorIsIdentical(t *testing.T) {
	const n, b, world = 997, 32, 3
	cfg := SamplerConfig{Seed: 5, Shuffle: true}
	a, _ := NewSampler(n, cfg)
	// The uninterrupted run.
	var steps []Shard
	for pos := (Position{Epoch: 2}); pos.Epoch == 2; {
		sh, err := a.Step(pos, b, 1, world)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, sh)
		pos = sh.Next
	}
	// Resuming at every committed cursor gives the same remaining steps.
	for k, want := range steps {
		fresh, _ := NewSampler(n, cfg)
		pos := want.Pos
		for _, w := range steps[k:] {
			got, err := fresh.Step(pos, b, 1, world)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Indices, w.Indices) || got.Next != w.Next || got.GlobalSize != w.GlobalSize {
				t.Fatalf("resume at %v: step at %v differs", want.Pos, pos)
			}
			pos = got.Next
		}
	}
	// An arbitrary cursor (not a multiple of the batch) is a valid start.
	sh, err := a.Step(Position{Epoch: 2, Cursor: 5}, b, 0, 1)
	if err != nil || !slices.Equal(sh.Indices, a.Order(2)[5:5+b]) {
		t.Fatalf("step at cursor 5: %v %v", sh.Indices, err)
	}
}

func TestSamplerOrderReproducible(t *testing.T) {
	a, _ := NewSampler(5000, SamplerConfig{Seed: 1, Shuffle: true})
	b, _ := NewSampler(5000, SamplerConfig{Seed: 1, Shuffle: true})
	c, _ := NewSampler(5000, SamplerConfig{Seed: 2, Shuffle: true})
	o0 := a.Order(0)
	if !slices.Equal(o0, b.Order(0)) {
		t.Fatal("same seed and epoch gave different orders")
	}
	if slices.Equal(o0, a.Order(1)) || slices.Equal(o0, c.Order(0)) {
		t.Fatal("a different epoch or seed gave the same order")
	}
	sorted := slices.Clone(o0)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatalf("order is not a permutation: sorted[%d] = %d", i, v)
		}
	}
	fixed := 0
	for i, v := range o0 {
		if i == v {
			fixed++
		}
	}
	if fixed > 20 { // a random permutation has about 1 fixed point
		t.Fatalf("%d fixed points: not shuffled", fixed)
	}
	id, _ := NewSampler(10, SamplerConfig{Seed: 1})
	if got := id.Order(4); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("unshuffled order %v", got)
	}
}

func TestSamplerEpochEndAndErrors(t *testing.T) {
	s, _ := NewSampler(10, SamplerConfig{DropLast: true})
	if got := s.StepsPerEpoch(4); got != 2 {
		t.Fatalf("drop-last steps = %d, want 2", got)
	}
	sh, err := s.Step(Position{Cursor: 4}, 4, 0, 1)
	if err != nil || sh.Next != (Position{Epoch: 1}) {
		t.Fatalf("last full step: next %v, err %v", sh.Next, err)
	}
	if _, err := s.Step(Position{Cursor: 8}, 4, 0, 1); !errors.Is(err, ErrEndOfEpoch) {
		t.Fatalf("step past the last full batch: %v", err)
	}
	if p := s.Normalize(Position{Cursor: 8}, 4); p != (Position{Epoch: 1}) {
		t.Fatalf("Normalize = %v", p)
	}
	k, _ := NewSampler(10, SamplerConfig{})
	if got := k.StepsPerEpoch(4); got != 3 {
		t.Fatalf("keep-last steps = %d, want 3", got)
	}
	sh, err = k.Step(Position{Cursor: 8}, 4, 2, 3)
	if err != nil || sh.GlobalSize != 2 || len(sh.Indices) != 0 {
		t.Fatalf("short last step for rank 2 of 3: %+v %v", sh, err)
	}
	for _, c := range []struct {
		pos            Position
		b, rank, world int
	}{
		{Position{}, 0, 0, 1}, {Position{}, 4, 0, 0}, {Position{}, 4, 3, 3}, {Position{}, 4, -1, 3},
		{Position{Epoch: -1}, 4, 0, 1}, {Position{Cursor: -1}, 4, 0, 1}, {Position{Cursor: 11}, 4, 0, 1},
	} {
		if _, err := k.Step(c.pos, c.b, c.rank, c.world); !errors.Is(err, ErrInvalid) {
			t.Errorf("Step(%v, %d, %d, %d) = %v, want ErrInvalid", c.pos, c.b, c.rank, c.world, err)
		}
	}
	if _, err := NewSampler(0, SamplerConfig{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty sampler: %v", err)
	}
}

func ExampleSampler_Step() {
	s, _ := NewSampler(10, SamplerConfig{}) // no shuffle: order 0..9
	pos := Position{}
	for pos.Epoch == 0 {
		for rank := range 3 {
			sh, _ := s.Step(pos, 4, rank, 3)
			fmt.Print(sh.Indices, " ")
		}
		sh, _ := s.Step(pos, 4, 0, 3)
		fmt.Println("->", sh.Next)
		pos = sh.Next
	}
	// Output:
	// [0 1] [2] [3] -> epoch 0 cursor 4
	// [4 5] [6] [7] -> epoch 0 cursor 8
	// [8] [9] [] -> epoch 1 cursor 0
}
