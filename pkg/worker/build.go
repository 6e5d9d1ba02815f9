package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/schedule"
)

// ErrSpec is wrapped by errors about a spec that cannot be built.
var ErrSpec = errors.New("worker: cannot build job")

// OpenDatasets returns the training and test sets a spec names. CIFAR-10 is
// downloaded into spec.Data.Dir when missing (unless offline).
func OpenDatasets(ctx context.Context, spec job.Spec) (train, test data.Dataset, err error) {
	switch spec.Data.Dataset {
	case "synthetic":
		tr, err := data.NewSynthetic(spec.Data.SyntheticSize, uint64(spec.Seed))
		if err != nil {
			return nil, nil, err
		}
		te, err := data.NewSynthetic(max(spec.Data.SyntheticSize/5, 1), uint64(spec.Seed)+0x9e3779b97f4a7c15)
		if err != nil {
			return nil, nil, err
		}
		return tr, te, nil
	case "cifar10":
		o := data.CIFAROptions{Dir: spec.Data.Dir, Offline: spec.Data.Offline}
		if spec.Data.Mirror != "" {
			if filepath.IsAbs(spec.Data.Mirror) || !hasScheme(spec.Data.Mirror) {
				o.Archive, o.ArchiveSum = spec.Data.Mirror, data.Checksum{MD5: spec.Data.MirrorMD5}
			} else {
				o.Mirror, o.MirrorSum = spec.Data.Mirror, data.Checksum{MD5: spec.Data.MirrorMD5}
			}
		}
		dir, err := data.EnsureCIFAR10(ctx, o)
		if err != nil {
			return nil, nil, err
		}
		tr, err := data.LoadCIFAR10(dir, data.Train)
		if err != nil {
			return nil, nil, err
		}
		te, err := data.LoadCIFAR10(dir, data.Test)
		if err != nil {
			return nil, nil, err
		}
		return tr, te, nil
	case "folder":
		size := spec.Data.ImageSize
		if size <= 0 {
			size = 32
		}
		return openFolder(spec.Data.Folder, size)
	}
	return nil, nil, fmt.Errorf("%w: unknown dataset %q", ErrSpec, spec.Data.Dataset)
}

func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return i > 1 && i+2 < len(s) && s[i+1] == '/' && s[i+2] == '/'
		}
	}
	return false
}

// openFolder opens an image folder in one of two layouts:
//
//   - root/train/<class> with root/val/<class> (or root/test/<class>): the
//     split the user made. Evaluation labels follow the train classes by
//     name, so val may lack a class but may not have one train lacks.
//     Without val/ or test/, every tenth training image is held out.
//   - root/<class>: every tenth image is held out for evaluation.
//
// The split layout is recognised by root/train holding a directory; a
// problem in train/, val/ or test/ is an error, never a silent fall-back to
// treating "train" and "val" as two classes.
func openFolder(root string, size int) (data.Dataset, data.Dataset, error) {
	trainDir, testDir, err := folderLayout(root)
	if err != nil {
		return nil, nil, err
	}
	if trainDir == root {
		all, err := data.NewImageFolder(root, size)
		if err != nil {
			return nil, nil, err
		}
		tr, te := holdOut(all)
		return tr, te, nil
	}
	tr, err := data.NewImageFolder(trainDir, size)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: image folder %s has a train/ directory, so it is read as train/<class> and val/<class>: %w", root, err)
	}
	if testDir == "" {
		a, b := holdOut(tr)
		return a, b, nil
	}
	te, err := data.NewImageFolder(testDir, size)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: image folder %s has a train/ directory, so it is read as train/<class> and %s/<class>: %w", root, filepath.Base(testDir), err)
	}
	rl, err := relabelByName(te, tr.Classes(), testDir, trainDir)
	if err != nil {
		return nil, nil, err
	}
	return tr, rl, nil
}

// folderLayout returns the directories openFolder reads: trainDir is root
// itself for the root/<class> layout, root/train for the split layout,
// where testDir is root/val or root/test ("" when neither exists).
func folderLayout(root string) (trainDir, testDir string, err error) {
	trainDir = filepath.Join(root, "train")
	entries, err := os.ReadDir(trainDir)
	split := false
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && isDir(filepath.Join(trainDir, e.Name())) {
			split = true
			break
		}
	}
	if err != nil || !split {
		return root, "", nil
	}
	for _, name := range []string{"val", "test"} {
		if dir := filepath.Join(root, name); isDir(dir) {
			return trainDir, dir, nil
		}
	}
	return trainDir, "", nil
}

// isDir reports whether path is a directory (following symbolic links).
func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// FolderClasses returns the class names a --dataset folder job trains on
// (the class directories of root/train in the split layout, of root
// otherwise) and the directory they were read from.
func FolderClasses(root string) ([]string, string, error) {
	trainDir, _, err := folderLayout(root)
	if err != nil {
		return nil, "", err
	}
	f, err := data.NewImageFolder(trainDir, 1)
	if err != nil {
		return nil, "", err
	}
	return f.Classes(), trainDir, nil
}

// holdOut splits a folder: every tenth image for evaluation (all of them
// when there are fewer than ten), the others for training.
func holdOut(all data.Dataset) (data.Dataset, data.Dataset) {
	var trIdx, teIdx []int
	for i := 0; i < all.Len(); i++ {
		if i%10 == 9 {
			teIdx = append(teIdx, i)
		} else {
			trIdx = append(trIdx, i)
		}
	}
	if len(teIdx) == 0 {
		teIdx = trIdx
	}
	return &subset{all, trIdx}, &subset{all, teIdx}
}

// relabeled is an evaluation folder whose labels are the training
// folder's for the same class names.
type relabeled struct {
	data.Dataset
	classes []string
	label   []int // the folder's label -> the training label
}

func (r *relabeled) Classes() []string { return append([]string(nil), r.classes...) }
func (r *relabeled) Get(i int, dst []float32) (int, error) {
	l, err := r.Dataset.Get(i, dst)
	if err != nil {
		return 0, err
	}
	return r.label[l], nil
}

// relabelByName maps te's labels to those of the classes named trainClasses;
// a class of te that is not among them is an error.
func relabelByName(te data.Dataset, trainClasses []string, testDir, trainDir string) (data.Dataset, error) {
	index := map[string]int{}
	for i, c := range trainClasses {
		index[c] = i
	}
	r := &relabeled{Dataset: te, classes: trainClasses}
	for _, c := range te.Classes() {
		l, ok := index[c]
		if !ok {
			return nil, fmt.Errorf("%w: image folder: class %q of %s is not a class of %s (%s): give both the same class directories",
				data.ErrInvalid, c, testDir, trainDir, strings.Join(trainClasses, ", "))
		}
		r.label = append(r.label, l)
	}
	return r, nil
}

type subset struct {
	data.Dataset
	idx []int
}

func (s *subset) Len() int { return len(s.idx) }
func (s *subset) Get(i int, dst []float32) (int, error) {
	return s.Dataset.Get(s.idx[i], dst)
}

// BuildModel creates the spec's model on b, with initial weights and
// freezing applied (the tutorial's transfer learning: load a backbone,
// replace the head when the class count differs, freeze the rest).
func BuildModel(b nn.Backend, spec job.Spec, classes int) (*nn.Model, error) {
	depth, err := nn.ModelDepth(spec.Model.Arch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	if spec.Model.Classes > 0 {
		classes = spec.Model.Classes
	}
	m, err := nn.NewResNet(b, nn.ResNetConfig{Depth: depth, Stem: spec.Model.Stem, Width: spec.Model.Width,
		Classes: classes, Dropout: spec.Model.Dropout, Seed: spec.Seed})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	if w := spec.Transfer.Weights; w != "" {
		st, err := nn.ReadSafetensorsFile(w)
		if err != nil {
			m.Free()
			return nil, fmt.Errorf("worker: initial weights: %w", err)
		}
		skipHead := false
		if fc, err := st.Get("fc.weight"); err == nil && len(fc.Shape) == 2 && fc.Shape[0] != classes {
			skipHead = true
		}
		if fc, err := st.Get("linear.weight"); err == nil && len(fc.Shape) == 2 && fc.Shape[0] != classes {
			skipHead = true
		}
		if err := nn.ApplyWeights(st, b, m.Params(), m.Buffers(), nn.LoadOptions{SkipHead: skipHead}); err != nil {
			m.Free()
			return nil, fmt.Errorf("worker: initial weights %s: %w", w, err)
		}
	}
	if spec.Transfer.FreezeBackbone {
		m.FreezeBackbone()
	}
	return m, nil
}

// BuildOptimizer creates the spec's optimizer over the model's parameters,
// fused over its flat tensors (one kernel call per step for all of them;
// nn.Fuser).
func BuildOptimizer(b nn.Backend, spec job.Spec, m *nn.Model) (nn.Optimizer, error) {
	opt, err := newOptimizer(b, spec, m.Params())
	if err != nil {
		return nil, err
	}
	if f, ok := opt.(nn.Fuser); ok {
		if _, err := f.Fuse(m.ParamsFlat(), m.GradsFlat()); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	return opt, nil
}

// newOptimizer creates the spec's optimizer over params.
func newOptimizer(b nn.Backend, spec job.Spec, params []*nn.Param) (nn.Optimizer, error) {
	o := spec.Optimizer
	switch o.Name {
	case "sgd":
		return nn.NewSGD(b, params, nn.SGDConfig{LR: o.LR, Momentum: o.Momentum, Dampening: o.Dampening, WeightDecay: o.WeightDecay, Nesterov: o.Nesterov})
	case "adam":
		return nn.NewAdam(b, params, nn.AdamConfig{LR: o.LR, Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay})
	case "adamw":
		return nn.NewAdamW(b, params, nn.AdamConfig{LR: o.LR, Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay})
	case "adagrad":
		return nn.NewAdagrad(b, params, nn.AdagradConfig{LR: o.LR, LRDecay: o.LRDecay, WeightDecay: o.WeightDecay, Eps: adagradEps(o.Eps)})
	case "rmsprop":
		return nn.NewRMSprop(b, params, nn.RMSpropConfig{LR: o.LR, Alpha: o.Alpha, Eps: o.Eps, WeightDecay: o.WeightDecay, Momentum: o.Momentum, Centered: o.Centered})
	}
	return nil, fmt.Errorf("%w: unknown optimizer %q", ErrSpec, o.Name)
}

// adagradEps maps the spec's shared eps default (1e-8, Adam's) to
// Adagrad's own default (1e-10) unless the user set something else.
func adagradEps(eps float64) float64 {
	if eps == 1e-8 {
		return 1e-10
	}
	return eps
}

// BuildSchedule converts the spec's epoch-based schedule into a
// per-step one for stepsPerEpoch steps an epoch (schedule.FromSpec).
func BuildSchedule(spec job.Spec, stepsPerEpoch int) (nn.Schedule, error) {
	sch, err := schedule.FromSpec(spec, stepsPerEpoch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	return sch, nil
}
