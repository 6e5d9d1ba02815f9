package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Prepared is what Prepare learned about a job's input.
type Prepared struct {
	TrainSamples int        `json:"train_samples"`
	Classes      int        `json:"classes"`
	Shape        data.Shape `json:"shape"` // one input image's
}

// folderDecodeBytes: an image folder of at most this many bytes is fully
// decoded by Prepare; a larger one has every file's header checked.
const folderDecodeBytes = 64 << 20

// Prepare fetches the spec's data when it is missing (CIFAR-10's
// download) and checks what can be checked before any worker starts: the
// model's classes against the data's, the batch against the data's size,
// every image of a folder, and the initial weights (applied to the model
// on the CPU, exactly as every worker will). The coordinator's --workers N
// runs it once, through 'worker prepare', so that N workers do not
// download at once and a bad input stops the job with one message. With
// world > 0 (the number of workers that will train), it also checks that
// the batches split among them can be trained (checkShares).
func Prepare(ctx context.Context, spec job.Spec, world int) (Prepared, error) {
	train, _, err := OpenDatasets(ctx, spec)
	if err != nil {
		return Prepared{}, err
	}
	nc := len(train.Classes())
	p := Prepared{TrainSamples: train.Len(), Classes: nc, Shape: train.Shape()}
	if c := spec.Model.Classes; c > 0 && c < nc {
		return p, fmt.Errorf("%w: model.classes (--classes) %d is fewer than the %d classes of the %s dataset: labels %d..%d would be out of range (0 uses the dataset's count)",
			job.ErrInvalid, c, nc, spec.Data.Dataset, c, nc-1)
	}
	if n := train.Len(); spec.GlobalBatch > n {
		return p, fmt.Errorf("%w: global_batch (--batch) %d is larger than the training set (%d samples)", job.ErrInvalid, spec.GlobalBatch, n)
	}
	if world > 0 {
		if err := checkShares(spec, train.Len(), p.Shape, world); err != nil {
			return p, err
		}
	}
	if spec.Data.Dataset == "folder" {
		// Every image file under the folder (train/, val/ or classes):
		// headers always, full decodes when the folder is small.
		all, err := data.NewImageFolder(spec.Data.Folder, spec.Data.ImageSize)
		if err != nil {
			return p, err
		}
		if _, err := all.Check(folderDecodeBytes); err != nil {
			return p, err
		}
	}
	if spec.Transfer.Weights != "" {
		m, err := BuildModel(nn.NewCPU(1), spec, nc)
		if err != nil {
			return p, err
		}
		m.Free()
	}
	return p, nil
}

// checkShares refuses a job in which a worker's part of a step would be a
// single image while the model's batch norm sees 1x1 feature maps (a
// ResNet's imagenet stem on 32x32 images): batch norm cannot train on one
// value per channel (nor can PyTorch's), and the job would stop at that
// step, at the end of the first epoch for a short last step. n images,
// the global batch split among world workers as the sampler splits it
// (data.ShardRange), the short last step unless drop_last.
func checkShares(spec job.Spec, n int, shape data.Shape, world int) error {
	depth, err := nn.ModelDepth(spec.Model.Arch)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSpec, err)
	}
	info, err := nn.SummarizeConfig(nn.ResNetConfig{Depth: depth, Stem: spec.Model.Stem, Width: spec.Model.Width, Classes: 10},
		shape.C, shape.H, shape.W)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSpec, err)
	}
	if !slices.ContainsFunc(info.Rows, func(r nn.SummaryRow) bool {
		return strings.HasPrefix(r.Layer, "BatchNorm2d") && len(r.Output) == 4 && r.Output[2]*r.Output[3] == 1
	}) {
		return nil
	}
	b := spec.GlobalBatch
	type step struct {
		size int
		what string
	}
	steps := []step{{b, fmt.Sprintf("every step (%d images)", b)}}
	if last := n % b; last > 0 && !spec.Data.DropLast {
		steps = append(steps, step{last, fmt.Sprintf("the short last step of each epoch (%d of %d images)", last, n)})
	}
	for _, st := range steps {
		for r := range world {
			if lo, hi := data.ShardRange(st.size, r, world); hi-lo == 1 {
				return fmt.Errorf("%w: split among %d workers, %s leaves one of them a single image, "+
					"and batch norm cannot train on one value per channel (the model's deepest feature maps are 1x1 at %dx%d); "+
					"use data.drop_last (--drop-last), a global batch that leaves every worker 0 or at least 2 images, "+
					"or the cifar stem (--stem cifar)", job.ErrInvalid, world, st.what, shape.H, shape.W)
			}
		}
	}
	return nil
}
