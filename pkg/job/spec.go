// Package job defines a training job's specification: what the coordinator
// reads from flags and an optional YAML file, replicates through raft and
// hands to every worker. Every field has a YAML key (its json tag: the YAML
// decoder is sigs.k8s.io/yaml, which goes through JSON tags).
package job

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"sort"
	"strings"
	"unicode"

	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("job: invalid spec")

// Model selects the network.
type Model struct {
	Arch    string  `json:"arch"`    // resnet18, resnet34, resnet50, resnet101, resnet152
	Stem    string  `json:"stem"`    // imagenet (7x7/2 + max-pool) or cifar (3x3/1)
	Width   float64 `json:"width"`   // channel multiplier; 1 = the standard model
	Classes int     `json:"classes"` // 0 = the dataset's class count
	Dropout float32 `json:"dropout"` // dropout before the classifier; 0 = none
}

// Data selects the dataset and its pipeline.
type Data struct {
	Dataset       string `json:"dataset"`   // cifar10, synthetic, folder
	Dir           string `json:"dir"`       // data directory (cifar10: downloaded here when missing)
	Folder        string `json:"folder"`    // image folder root (dataset folder): root/<class>/*.png|jpg
	Augment       bool   `json:"augment"`   // random crop + flip (train only)
	Shuffle       bool   `json:"shuffle"`   // per-epoch permutation; false = the dataset's order
	DropLast      bool   `json:"drop_last"` // drop the epoch's last partial batch
	Mirror        string `json:"mirror"`    // alternative CIFAR-10 archive URL or local path
	MirrorMD5     string `json:"mirror_md5"`
	SyntheticSize int    `json:"synthetic_size"` // training samples of the synthetic set
	ImageSize     int    `json:"image_size"`     // folder: images are resized and centre-cropped to this size
	Offline       bool   `json:"offline"`        // never download (cifar10)
}

// Optimizer holds the optimizer and its settings (torch.optim names).
type Optimizer struct {
	Name        string  `json:"name"` // sgd, adam, adamw, adagrad, rmsprop
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	Dampening   float64 `json:"dampening"`
	Nesterov    bool    `json:"nesterov"`
	WeightDecay float64 `json:"weight_decay"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	Alpha       float64 `json:"alpha"` // RMSprop smoothing
	Centered    bool    `json:"centered"`
	LRDecay     float64 `json:"lr_decay"` // Adagrad
}

// Schedule is the learning-rate schedule.
type Schedule struct {
	Name         string  `json:"name"`       // none, step, multistep, cosine, onecycle
	StepSize     int     `json:"step_size"`  // step: epochs between decays
	Gamma        float64 `json:"gamma"`      // step, multistep
	Milestones   []int   `json:"milestones"` // multistep: epochs
	WarmupEpochs float64 `json:"warmup_epochs"`
	WarmupStart  float64 `json:"warmup_start_factor"`
	MaxLR        float64 `json:"max_lr"` // onecycle
}

// Transfer describes initial weights and freezing (the tutorial's transfer learning).
type Transfer struct {
	Weights        string `json:"weights"`         // safetensors file with torchvision names
	FreezeBackbone bool   `json:"freeze_backbone"` // train only the (new) head
}

// Checkpoint controls checkpointing.
type Checkpoint struct {
	EverySteps int  `json:"every_steps"` // also written at every epoch end
	Keep       int  `json:"keep"`        // last K kept, plus the best
	Resume     bool `json:"resume"`      // resume from the newest verified checkpoint when one exists
}

// Spec is a whole job.
type Spec struct {
	Name           string     `json:"name"`
	Model          Model      `json:"model"`
	Data           Data       `json:"data"`
	Epochs         int        `json:"epochs"`
	MaxSteps       int        `json:"max_steps"` // stop after this many steps in all (0 = no limit); for demos and tests
	GlobalBatch    int        `json:"global_batch"`
	Optimizer      Optimizer  `json:"optimizer"`
	Schedule       Schedule   `json:"schedule"`
	LabelSmoothing float64    `json:"label_smoothing"`
	Seed           int64      `json:"seed"`
	BatchNorm      string     `json:"batch_norm"` // average (running stats averaged with the last bucket) or sync (SyncBatchNorm)
	MinWorkers     int        `json:"min_workers"`
	MaxWorkers     int        `json:"max_workers"`
	OutputDir      string     `json:"output_dir"`
	Transfer       Transfer   `json:"transfer"`
	Checkpoint     Checkpoint `json:"checkpoint"`
	Device         string     `json:"device"` // cpu, cuda, auto
	// Precision of a GPU backend: fp32 (default), tf32, or bf16 (mixed
	// precision with fp32 master weights). The CPU backend is fp32.
	Precision   string  `json:"precision,omitempty"`
	Threads     int     `json:"threads"` // compute threads per worker; 0 = all cores / workers
	BucketMB    float64 `json:"bucket_mb"`
	Compression string  `json:"compression"`  // none, bf16
	DeadlineSec float64 `json:"deadline_sec"` // all-reduce deadline
	// EmulateCompute, when set, replaces forward and backward by a wait
	// (scalebench --compute); nil trains the model.
	EmulateCompute *EmulateCompute `json:"emulate_compute,omitempty"`
}

// EmulateCompute replaces a step's forward and backward with a wait of
// Seconds during which every parameter's gradient becomes ready in the
// order and at the fraction of backward measured on the real model
// (worker.MeasureCompute). The gradients are the real tensors (zero), so
// the all-reduce moves the real sizes; everything after is the real code.
type EmulateCompute struct {
	Seconds float64 `json:"seconds"` // forward + backward
	// Forward is the fraction of Seconds before backward starts.
	Forward float64 `json:"forward"`
	// Ready[i] is the fraction of backward after which parameter i (model
	// order) is ready; parameters with equal fractions become ready in
	// backward's order (descending index).
	Ready []float64 `json:"ready"`
}

// Validate checks the emulation's fields.
func (e *EmulateCompute) Validate() error {
	if e.Seconds <= 0 || e.Forward < 0 || e.Forward >= 1 {
		return fmt.Errorf("%w: emulate_compute: seconds %g must be positive and forward %g in [0, 1)", ErrInvalid, e.Seconds, e.Forward)
	}
	for i, r := range e.Ready {
		if !(r >= 0 && r <= 1) {
			return fmt.Errorf("%w: emulate_compute: ready[%d] = %g is not in [0, 1]", ErrInvalid, i, r)
		}
	}
	return nil
}

// Default returns the tutorial's recipe (2 epochs: minutes on a laptop CPU; the
// full schedule is --epochs 30): ResNet-18 (imagenet stem) on
// CIFAR-10, batch 128, SGD lr 0.1 momentum 0.9 weight decay 5e-4, crop +
// flip augmentation, shuffled.
func Default() Spec {
	return Spec{
		Name:        "ringtrain",
		Model:       Model{Arch: "resnet18", Stem: "imagenet", Width: 1},
		Data:        Data{Dataset: "cifar10", Dir: "data", Augment: true, Shuffle: true, SyntheticSize: 10000, ImageSize: 32},
		Epochs:      2,
		GlobalBatch: 128,
		Optimizer: Optimizer{Name: "sgd", LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4,
			Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Alpha: 0.99},
		Schedule:    Schedule{Name: "none", Gamma: 0.1, WarmupStart: 0.1},
		Seed:        1,
		BatchNorm:   "average",
		MinWorkers:  1,
		MaxWorkers:  64,
		OutputDir:   "runs/ringtrain",
		Checkpoint:  Checkpoint{EverySteps: 200, Keep: 3, Resume: true},
		Device:      "auto",
		BucketMB:    25,
		Compression: "none",
		DeadlineSec: 10,
	}
}

// LoadYAML overlays the YAML (or JSON) file at path onto s. Unknown keys
// are an error, so a typo never silently falls back to a default.
func (s *Spec) LoadYAML(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("job: read spec: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, s); err != nil {
		if key := nonFiniteKey(b); key != "" {
			return fmt.Errorf("%w: %s: %s is not a finite number", ErrInvalid, path, key)
		}
		if msg := typeMismatch(b); msg != "" {
			return fmt.Errorf("%w: %s: %s", ErrInvalid, path, msg)
		}
		return fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	return nil
}

// typeMismatch says which key of the YAML document b holds a value of the
// wrong kind, in YAML's words ("epochs must be a whole number, not a
// list"), or "" (the YAML library reports it as a JSON decoding error of
// a Go struct field).
func typeMismatch(b []byte) string {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return ""
	}
	var te *json.UnmarshalTypeError
	if !errors.As(json.Unmarshal(j, &Spec{}), &te) || te.Field == "" {
		return ""
	}
	want := "a " + te.Type.Kind().String()
	switch te.Type.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		want = "a whole number"
	case reflect.Float64, reflect.Float32:
		want = "a number"
	case reflect.Bool:
		want = "true or false"
	case reflect.Slice:
		want = "a list"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		want = "a mapping (key: value lines)"
	}
	got, num, _ := strings.Cut(te.Value, " ")
	switch got {
	case "array":
		got = "a list"
	case "object":
		got = "a mapping"
	case "bool":
		got = "true/false"
	case "number":
		got = "a number"
		if num != "" {
			got = "the number " + num
		}
	default:
		got = "a " + got
	}
	return fmt.Sprintf("%s must be %s, not %s", te.Field, want, strings.TrimSpace(got))
}

// nonFiniteKey returns the dotted key of the first NaN or infinite number
// in the YAML document b, or "" (the YAML-to-JSON conversion refuses them
// without saying where).
func nonFiniteKey(b []byte) string {
	var doc any
	if yamlv2.Unmarshal(b, &doc) != nil {
		return ""
	}
	var walk func(prefix string, v any) string
	walk = func(prefix string, v any) string {
		switch v := v.(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return prefix
			}
		case map[any]any:
			keys := make([]string, 0, len(v))
			byKey := make(map[string]any, len(v))
			for k, x := range v {
				ks := fmt.Sprint(k)
				keys = append(keys, ks)
				byKey[ks] = x
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				if r := walk(p, byKey[k]); r != "" {
					return r
				}
			}
		case []any:
			for i, x := range v {
				if r := walk(fmt.Sprintf("%s[%d]", prefix, i), x); r != "" {
					return r
				}
			}
		}
		return ""
	}
	return walk("", doc)
}

func oneOf(field, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("%w: %s %q is not one of %s", ErrInvalid, field, clip(v), strings.Join(allowed, ", "))
}

// clip shortens a user's value quoted in an error to 64 bytes.
func clip(v string) string {
	const n = 64
	if len(v) <= n {
		return v
	}
	return fmt.Sprintf("%s... (%d bytes)", strings.ToValidUTF8(v[:n], ""), len(v))
}

// Bounds on the numbers a user can type: far above any sensible job, far
// below what would exhaust a machine's memory or overflow a duration.
const (
	MaxNameLen        = 128
	MaxWidth          = 8 // model.width, the channel multiplier
	MaxClasses        = 100_000
	MaxImageSize      = 1024         // data.image_size (pixels per side)
	MaxSyntheticSize  = 10_000_000   // data.synthetic_size
	MaxGlobalBatch    = 65_536       // global_batch
	MaxEpochs         = 100_000      // epochs
	MaxWorkers        = 1024         // max_workers
	MaxThreads        = 1024         // threads
	MaxBucketMB       = 1024         // bucket_mb
	MaxDeadlineSec    = 24 * 60 * 60 // deadline_sec: one day
	MaxCheckpointKeep = 10_000       // checkpoint.keep
)

// Validate checks every field and says which one is wrong (by its YAML
// key and, where it has one, its flag).
func (s *Spec) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
	}
	// Every float first: a NaN passes every comparison below.
	for _, f := range []struct {
		key string
		v   float64
	}{
		{"model.width (--width)", s.Model.Width}, {"model.dropout (--dropout)", float64(s.Model.Dropout)},
		{"optimizer.lr (--lr)", s.Optimizer.LR}, {"optimizer.momentum (--momentum)", s.Optimizer.Momentum},
		{"optimizer.dampening (--dampening)", s.Optimizer.Dampening}, {"optimizer.weight_decay (--weight-decay)", s.Optimizer.WeightDecay},
		{"optimizer.beta1 (--beta1)", s.Optimizer.Beta1}, {"optimizer.beta2 (--beta2)", s.Optimizer.Beta2},
		{"optimizer.eps (--eps)", s.Optimizer.Eps}, {"optimizer.alpha (--alpha)", s.Optimizer.Alpha},
		{"optimizer.lr_decay (--lr-decay)", s.Optimizer.LRDecay}, {"schedule.gamma (--gamma)", s.Schedule.Gamma},
		{"schedule.warmup_epochs (--warmup-epochs)", s.Schedule.WarmupEpochs},
		{"schedule.warmup_start_factor (--warmup-start-factor)", s.Schedule.WarmupStart},
		{"schedule.max_lr (--max-lr)", s.Schedule.MaxLR}, {"label_smoothing (--label-smoothing)", s.LabelSmoothing},
		{"bucket_mb (--bucket-mb)", s.BucketMB}, {"deadline_sec (--deadline)", s.DeadlineSec},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			bad("%s is %v; it must be a finite number", f.key, f.v)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if s.Name == "" {
		bad("name (--job) is empty")
	} else if len(s.Name) > MaxNameLen {
		bad("name (--job) is %d bytes long; at most %d", len(s.Name), MaxNameLen)
	} else if i := strings.IndexFunc(s.Name, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) }); i >= 0 {
		bad("name (--job) %q: no '/', spaces or control characters", s.Name)
	}
	add(oneOf("model.arch", s.Model.Arch, "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"))
	add(oneOf("model.stem", s.Model.Stem, "imagenet", "cifar"))
	if !(s.Model.Width > 0 && s.Model.Width <= MaxWidth) {
		bad("model.width (--width) %g must be in (0, %d]", s.Model.Width, MaxWidth)
	}
	if s.Model.Classes < 0 || s.Model.Classes > MaxClasses {
		bad("model.classes (--classes) %d must be in [0, %d] (0: the dataset's)", s.Model.Classes, MaxClasses)
	}
	if s.Model.Dropout < 0 || s.Model.Dropout >= 1 {
		bad("model.dropout (--dropout) %g must be in [0, 1)", s.Model.Dropout)
	}
	add(oneOf("data.dataset", s.Data.Dataset, "cifar10", "synthetic", "folder"))
	if s.Data.Dataset == "folder" && s.Data.Folder == "" {
		bad("data.folder (--folder) is required with dataset folder")
	}
	if s.Data.SyntheticSize <= 0 || s.Data.SyntheticSize > MaxSyntheticSize {
		bad("data.synthetic_size (--synthetic-size) %d must be in [1, %d]", s.Data.SyntheticSize, MaxSyntheticSize)
	}
	if s.Data.ImageSize < 1 || s.Data.ImageSize > MaxImageSize {
		bad("data.image_size (--image-size) %d must be in [1, %d]", s.Data.ImageSize, MaxImageSize)
	}
	if s.Epochs <= 0 || s.Epochs > MaxEpochs {
		bad("epochs (--epochs) %d must be in [1, %d]", s.Epochs, MaxEpochs)
	}
	if s.MaxSteps < 0 {
		bad("max_steps (--max-steps) %d is negative", s.MaxSteps)
	}
	if s.GlobalBatch <= 0 || s.GlobalBatch > MaxGlobalBatch {
		bad("global_batch (--batch) %d must be in [1, %d]", s.GlobalBatch, MaxGlobalBatch)
	}
	add(oneOf("optimizer.name", s.Optimizer.Name, "sgd", "adam", "adamw", "adagrad", "rmsprop"))
	if s.Optimizer.LR <= 0 {
		bad("optimizer.lr (--lr) %g must be positive", s.Optimizer.LR)
	}
	if s.Optimizer.Nesterov && (s.Optimizer.Momentum <= 0 || s.Optimizer.Dampening != 0) {
		bad("optimizer.nesterov needs momentum > 0 and dampening 0 (as torch.optim.SGD)")
	}
	add(oneOf("schedule.name", s.Schedule.Name, "none", "step", "multistep", "cosine", "onecycle"))
	if s.Schedule.Name == "step" && s.Schedule.StepSize <= 0 {
		bad("schedule.step_size (--step-size) must be positive for the step schedule")
	}
	for _, m := range s.Schedule.Milestones {
		if m < 0 || m > MaxEpochs {
			bad("schedule.milestones (--milestones): %d must be in [0, %d]", m, MaxEpochs)
			break
		}
	}
	if s.Schedule.WarmupEpochs < 0 || s.Schedule.WarmupEpochs > MaxEpochs {
		bad("schedule.warmup_epochs (--warmup-epochs) %g must be in [0, %d]", s.Schedule.WarmupEpochs, MaxEpochs)
	}
	if s.LabelSmoothing < 0 || s.LabelSmoothing > 1 {
		bad("label_smoothing (--label-smoothing) %g must be in [0, 1]", s.LabelSmoothing)
	}
	add(oneOf("batch_norm", s.BatchNorm, "average", "sync"))
	if s.MinWorkers < 1 || s.MaxWorkers < s.MinWorkers || s.MaxWorkers > MaxWorkers {
		bad("workers: need 1 <= min_workers (--min-workers, %d) <= max_workers (--max-workers, %d) <= %d", s.MinWorkers, s.MaxWorkers, MaxWorkers)
	}
	if s.GlobalBatch < s.MinWorkers {
		bad("global_batch (--batch) %d is smaller than min_workers (--min-workers) %d", s.GlobalBatch, s.MinWorkers)
	}
	if s.OutputDir == "" {
		bad("output_dir (--output) is empty")
	}
	add(oneOf("device", s.Device, "cpu", "cuda", "auto"))
	add(oneOf("precision", s.Precision, "", "fp32", "tf32", "bf16"))
	if s.Device == "cpu" && s.Precision != "" && s.Precision != "fp32" {
		add(fmt.Errorf("%w: precision %s needs a GPU (the CPU backend is fp32)", ErrInvalid, s.Precision))
	}
	if s.Threads < 0 || s.Threads > MaxThreads {
		bad("threads (--threads) %d must be in [0, %d] (0: cores / local workers)", s.Threads, MaxThreads)
	}
	add(oneOf("compression", s.Compression, "none", "bf16"))
	if s.BucketMB <= 0 || s.BucketMB > MaxBucketMB {
		bad("bucket_mb (--bucket-mb) %g must be in (0, %d]", s.BucketMB, MaxBucketMB)
	}
	if s.DeadlineSec <= 0 || s.DeadlineSec > MaxDeadlineSec {
		bad("deadline_sec (--deadline) %g must be in (0, %d] seconds", s.DeadlineSec, MaxDeadlineSec)
	}
	if s.Checkpoint.EverySteps < 0 || s.Checkpoint.Keep < 1 || s.Checkpoint.Keep > MaxCheckpointKeep {
		bad("checkpoint: every_steps (--checkpoint-every) must be >= 0 and keep (--checkpoint-keep) in [1, %d]", MaxCheckpointKeep)
	}
	if s.EmulateCompute != nil {
		add(s.EmulateCompute.Validate())
	}
	return errors.Join(errs...)
}

// Hash is a SHA-256 over the fields that change the computation (not
// worker counts, output paths or deadlines): a checkpoint is resumed only
// into a job with the same hash.
func (s *Spec) Hash() string {
	h := sha256.Sum256(s.hashed())
	return hex.EncodeToString(h[:])
}

// hashed is the JSON that Hash digests: s without the fields that do not
// change the computation.
func (s *Spec) hashed() []byte {
	c := *s
	c.Name, c.OutputDir, c.MinWorkers, c.MaxWorkers = "", "", 0, 0
	c.Device, c.Precision, c.Threads, c.DeadlineSec, c.BucketMB = "", "", 0, 0, 0
	c.Checkpoint = Checkpoint{}
	c.Data.Dir, c.Data.Mirror, c.Data.MirrorMD5 = "", "", ""
	b, _ := json.Marshal(c) // a struct of plain fields always marshals
	return b
}

// HashDiff lists the settings that make was's Hash differ from s's, one
// "key was -> now" line each, keys as in a YAML job file (e.g.
// "optimizer.lr 0.1 -> 0.01"), sorted. It is empty when the hashes are
// equal.
func (s *Spec) HashDiff(was *Spec) []string {
	var a, b map[string]any
	// Both decode: they are the JSON of a struct of plain fields.
	_ = json.Unmarshal(was.hashed(), &a)
	_ = json.Unmarshal(s.hashed(), &b)
	var out []string
	diffJSON("", a, b, &out)
	sort.Strings(out)
	return out
}

// diffJSON appends a line for every leaf of the decoded JSON values a and
// b that differs, under the dotted key prefix.
func diffJSON(prefix string, a, b any, out *[]string) {
	ma, okA := a.(map[string]any)
	mb, okB := b.(map[string]any)
	if okA && okB {
		keys := map[string]bool{}
		for k := range ma {
			keys[k] = true
		}
		for k := range mb {
			keys[k] = true
		}
		for k := range keys {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			diffJSON(key, ma[k], mb[k], out)
		}
		return
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		*out = append(*out, fmt.Sprintf("%s %s -> %s", prefix, ja, jb))
	}
}

// Marshal encodes the spec as JSON (the form replicated through raft).
func (s *Spec) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal decodes a spec produced by Marshal.
func Unmarshal(b []byte) (Spec, error) {
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return s, nil
}
