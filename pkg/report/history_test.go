package report

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteHistoryFilesAndPlots(t *testing.T) {
	h := &History{Job: "j"}
	h.Add(Epoch{Epoch: 1, Steps: 10, TrainLoss: 2.0, TrainAcc: 0.3, ValLoss: 1.8, ValAcc: 0.35})
	h.Add(Epoch{Epoch: 2, Steps: 20, TrainLoss: 1.5, TrainAcc: 0.45, ValLoss: 1.4, ValAcc: 0.5})
	h.Add(Epoch{Epoch: 2, Steps: 20, TrainLoss: 1.4, TrainAcc: 0.46, ValLoss: 1.3, ValAcc: 0.52}) // replaces
	dir := t.TempDir()
	if err := h.Write(dir); err != nil {
		t.Fatal(err)
	}
	back, err := ReadHistory(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Epochs) != 2 || back.Epochs[1].ValAcc != 0.52 {
		t.Fatalf("history round trip: %+v", back)
	}
	c, _ := os.ReadFile(filepath.Join(dir, CSVFile))
	lines := strings.Split(strings.TrimSpace(string(c)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "epoch,steps,train_loss") || !strings.HasPrefix(lines[2], "2,20,1.4,0.46,1.3,0.52") {
		t.Fatalf("csv:\n%s", c)
	}
	for _, f := range []string{LossPlotFile, AccPlotFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if img.Bounds().Dx() < 300 || img.Bounds().Dy() < 200 {
			t.Fatalf("%s: tiny image %v", f, img.Bounds())
		}
	}
}
