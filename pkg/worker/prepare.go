package worker

import (
	"context"
	"fmt"

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
// download at once and a bad input stops the job with one message.
func Prepare(ctx context.Context, spec job.Spec) (Prepared, error) {
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
