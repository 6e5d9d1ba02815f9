package worker

import (
	"errors"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// checkShares refuses exactly the splits that leave a worker one image
// when batch norm sees 1x1 maps; the premise is checked on the model: a
// training forward of one 32x32 image through the imagenet stem fails
// with nn.ErrBatchNorm, two pass.
func TestCheckSharesRefusesSingleImageParts(t *testing.T) {
	shape := data.Shape{C: 3, H: 32, W: 32}
	for _, c := range []struct {
		n, batch, world int
		stem            string
		dropLast        bool
		want            string // "" = accepted
	}{
		{2048, 64, 2, "imagenet", false, ""},
		{2049, 64, 2, "imagenet", false, "the short last step of each epoch (1 of 2049 images)"},
		{2051, 64, 2, "imagenet", false, "the short last step of each epoch (3 of 2051 images)"},
		{2052, 64, 2, "imagenet", false, ""}, // 4: 2 + 2
		{2049, 64, 2, "imagenet", true, ""},
		{2049, 64, 2, "cifar", false, ""}, // 4x4 maps
		{2049, 64, 1, "imagenet", false, "the short last step"},
		{300, 3, 2, "imagenet", false, "every step (3 images)"},
		{300, 5, 4, "imagenet", false, "every step (5 images)"}, // 2, 1, 1, 1
		{300, 3, 4, "imagenet", false, "every step (3 images)"}, // 1, 1, 1, 0
	} {
		spec := job.Default()
		spec.Model.Stem, spec.Model.Width, spec.GlobalBatch, spec.Data.DropLast = c.stem, 0.125, c.batch, c.dropLast
		err := checkShares(spec, c.n, shape, c.world)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: refused: %v", c, err)
		case c.want != "" && (!errors.Is(err, job.ErrInvalid) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--drop-last")):
			t.Errorf("%+v: %v, want a refusal naming %q", c, err, c.want)
		}
	}

	m, err := nn.NewResNet(nn.NewCPU(1), nn.ResNetConfig{Depth: 18, Stem: "imagenet", Width: 0.125, Classes: 10, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.SetTrain(true)
	for _, n := range []int{1, 2} {
		x := nn.NewTensor(n, 3, 32, 32)
		_, err := m.Forward(x)
		if (n == 1) != errors.Is(err, nn.ErrBatchNorm) {
			t.Errorf("a training forward of %d image(s): %v", n, err)
		}
	}
}
