package nn

import (
	"errors"
	"strings"
	"testing"
)

func TestSummaryTorchvisionCounts(t *testing.T) {
	for _, tc := range []struct {
		depth, classes int
		want           int
	}{
		{18, 1000, 11689512}, {18, 10, 11181642}, {34, 1000, 21797672},
		{50, 1000, 25557032}, {101, 1000, 44549160}, {152, 1000, 60192808},
	} {
		info, err := SummarizeConfig(ResNetConfig{Depth: tc.depth, Classes: tc.classes}, 3, 224, 224)
		if err != nil {
			t.Fatalf("resnet%d: %v", tc.depth, err)
		}
		if info.Total != tc.want || info.Trainable != tc.want {
			t.Errorf("resnet%d/%d classes: total %d trainable %d, want %d", tc.depth, tc.classes, info.Total, info.Trainable, tc.want)
		}
	}
}

func TestSummaryResNet18Table(t *testing.T) {
	m, err := NewResNet(NewCPU(1), ResNetConfig{Depth: 18})
	if err != nil {
		t.Fatal(err)
	}
	total, _ := m.NumParams()
	if total != 11689512 {
		t.Fatalf("NumParams %d", total)
	}
	s, err := Summary(m, 3, 224, 224)
	if err != nil {
		t.Fatal(err)
	}
	// Lines as torchsummary prints them for torchvision's resnet18.
	for _, want := range []string{
		"            Conv2d-1         [-1, 64, 112, 112]           9,408",
		"         MaxPool2d-4           [-1, 64, 56, 56]               0",
		"       BasicBlock-11           [-1, 64, 56, 56]               0",
		"           Conv2d-24          [-1, 128, 28, 28]           8,192",
		"AdaptiveAvgPool2d-67            [-1, 512, 1, 1]               0",
		"           Linear-68                 [-1, 1000]         513,000",
		"Total params: 11,689,512",
		"Trainable params: 11,689,512",
		"Non-trainable params: 0",
		"Input size (MB): 0.57",
		"Forward/backward pass size (MB): 62.79",
		"Params size (MB): 44.59",
		"Estimated Total Size (MB): 107.96",
	} {
		if !strings.Contains(s, want+"\n") {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	m.FreezeBackbone()
	info, err := Summarize(m, 3, 224, 224)
	if err != nil {
		t.Fatal(err)
	}
	if info.Trainable != 513000 || info.Total != 11689512 {
		t.Errorf("frozen backbone: trainable %d total %d", info.Trainable, info.Total)
	}
	// CIFAR input through the imagenet stem still works; a tiny input does not.
	if _, err := Summarize(m, 3, 32, 32); err != nil {
		t.Errorf("3x32x32: %v", err)
	}
	if _, err := Summarize(m, 3, 0, 5); !errors.Is(err, ErrShape) {
		t.Errorf("3x0x5: got %v, want ErrShape", err)
	}
	// The cifar stem's 3x3 convs need at least a 1x1 input; 2x2 is fine.
	if _, err := SummarizeConfig(ResNetConfig{Depth: 18, Stem: "cifar"}, 3, 2, 2); err != nil {
		t.Errorf("cifar 3x2x2: %v", err)
	}
	if _, err := Summarize(m, 1, 32, 32); !errors.Is(err, ErrShape) {
		t.Errorf("1 channel: got %v, want ErrShape", err)
	}
}
