package job

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// Every number a user can type is bounded, and the error names the flag
// or key (issue 12, "Why" 2, 3 and "Smaller").
func TestBoundsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--batch", "1000000000"}, "global_batch (--batch) 1000000000 must be in [1, 65536]"},
		{[]string{"--classes", "1000000000"}, "model.classes (--classes) 1000000000 must be in [0, 100000]"},
		{[]string{"--synthetic-size", "1000000000000"}, "data.synthetic_size (--synthetic-size) 1000000000000 must be in [1, 10000000]"},
		{[]string{"--image-size", "100000"}, "data.image_size (--image-size) 100000 must be in [1, 1024]"},
		{[]string{"--image-size", "0"}, "data.image_size (--image-size) 0 must be in [1, 1024]"},
		{[]string{"--threads", "-1"}, "threads (--threads) -1 must be in [0, 1024]"},
		{[]string{"--deadline", "1e300"}, "deadline_sec (--deadline) 1e+300 must be in (0, 86400] seconds"},
		{[]string{"--deadline", "NaN"}, "deadline_sec (--deadline) is NaN; it must be a finite number"},
		{[]string{"--lr", "NaN"}, "optimizer.lr (--lr) is NaN"},
		{[]string{"--label-smoothing", "+Inf"}, "label_smoothing (--label-smoothing) is +Inf"},
		{[]string{"--width", "nan"}, "model.width (--width) is NaN"},
		{[]string{"--max-workers", "100000"}, "max_workers (--max-workers, 100000) <= 1024"},
		{[]string{"--epochs", "1000000000"}, "epochs (--epochs) 1000000000 must be in [1, 100000]"},
		{[]string{"--bucket-mb", "1e12"}, "bucket_mb (--bucket-mb) 1e+12 must be in (0, 1024]"},
		{[]string{"--checkpoint-keep", "1000000000"}, "keep (--checkpoint-keep) in [1, 10000]"},
		{[]string{"--job", "a b"}, `name (--job) "a b": no '/', spaces or control characters`},
		{[]string{"--output", ""}, "output_dir (--output) is empty"},
	} {
		s := Default()
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		BindFlags(fs, &s)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		_, err := Resolve(fs, &s, "")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v\nwant %q", tc.args, err, tc.want)
		}
	}
}

func TestHugeValuesAreNotEchoed(t *testing.T) {
	s := Default()
	s.Name = strings.Repeat("n", 4<<20)
	s.Model.Arch = strings.Repeat("a", 4<<20)
	err := s.Validate()
	if err == nil || len(err.Error()) > 1000 {
		t.Fatalf("error of %d bytes: %.200v", len(err.Error()), err)
	}
	if !strings.Contains(err.Error(), "name (--job) is 4194304 bytes long; at most 128") {
		t.Fatalf("got %v", err)
	}
}

func TestNonFiniteYAMLValueNamesItsKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "job.yaml")
	for body, key := range map[string]string{
		"optimizer:\n  lr: .nan\n":            "optimizer.lr",
		"epochs: 3\ndeadline_sec: .inf\n":     "deadline_sec",
		"schedule:\n  max_lr: -.Inf\n":        "schedule.max_lr",
		"model:\n  width: 1\n  dropout: .NaN": "model.dropout",
	} {
		os.WriteFile(p, []byte(body), 0o644)
		s := Default()
		err := s.LoadYAML(p)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), key+" is not a finite number") {
			t.Errorf("%q: got %v, want the key %s named", body, err, key)
		}
	}
}
