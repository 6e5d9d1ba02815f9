package checkpoint

import (
	"slices"
	"testing"
)

// store is what Store and MemStore share.
type store interface {
	Write(*Snapshot) (Manifest, error)
	Steps() ([]int64, error)
	Protect(int64)
	Discard(int64, uint64) (bool, error)
	LoadAtMost(string, int64) (*Loaded, []Skipped, error)
}

var _, _ store = (*Store)(nil), (*MemStore)(nil)

// bothStores is a directory Store and a MemStore, each keeping keep.
func bothStores(t *testing.T, keep int) []struct {
	name  string
	store store
} {
	t.Helper()
	dir, err := NewStore(t.TempDir(), keep)
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name  string
		store store
	}{{"Store", dir}, {"MemStore", NewMemStore(keep)}}
}

// A checkpoint of a step is replaced by a later write of the same step,
// whatever the generations. Discard removes only the given generation's
// checkpoint, and never the protected step's.
func TestGenerationsAndDiscard(t *testing.T) {
	m, opt := trained(t, 1)
	for _, tc := range bothStores(t, 5) {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store
			write := func(step int64, gen uint64) error {
				t.Helper()
				s := capture(t, m, opt, step, 0.5)
				s.Meta.Generation = gen
				_, err := st.Write(s)
				return err
			}
			genAt := func(step int64) uint64 {
				t.Helper()
				l, _, err := st.LoadAtMost("abc", step)
				if err != nil || l.Meta.Step != step {
					t.Fatalf("step %d: %v", step, err)
				}
				return l.Meta.Generation
			}
			// A checkpoint of a step is replaced whatever the generations
			// (they count from 1 again on a new state directory).
			for _, g := range []uint64{7, 6, 0, 8} {
				if err := write(5, g); err != nil {
					t.Fatalf("generation %d over step 5: %v", g, err)
				}
				if got := genAt(5); got != g {
					t.Fatalf("step 5 holds generation %d, want %d", got, g)
				}
			}

			// Discard: another generation's checkpoint stays.
			if gone, err := st.Discard(5, 7); err != nil || gone {
				t.Fatalf("discard step 5 of generation 7 (it holds 8): %v, %v", gone, err)
			}
			if err := write(10, 8); err != nil {
				t.Fatal(err)
			}
			st.Protect(10)
			if gone, err := st.Discard(10, 8); err != nil || gone {
				t.Fatalf("discard of the protected step: %v, %v", gone, err)
			}
			if gone, err := st.Discard(5, 8); err != nil || !gone {
				t.Fatalf("discard step 5 of generation 8: %v, %v", gone, err)
			}
			if gone, err := st.Discard(99, 8); err != nil || gone {
				t.Fatalf("discard of a missing step: %v, %v", gone, err)
			}
			if steps, _ := st.Steps(); !slices.Equal(steps, []int64{10}) {
				t.Fatalf("steps %v after the discards, want [10]", steps)
			}
		})
	}
}
