package worker

import (
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/data"
)

// writeGrey writes a 4x4 PNG of grey level v under root/rel.
func writeGrey(t *testing.T, root, rel string, v uint8) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	for i := range img.Pix {
		img.Pix[i] = v
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

// labelsByGrey reads every sample of ds and returns its label keyed by the
// image's grey level (each test image has its own).
func labelsByGrey(t *testing.T, ds data.Dataset) map[uint8]int {
	t.Helper()
	out := map[uint8]int{}
	buf := make([]float32, ds.Shape().Len())
	for i := range ds.Len() {
		l, err := ds.Get(i, buf)
		if err != nil {
			t.Fatal(err)
		}
		out[uint8(buf[0]*255+0.5)] = l
	}
	return out
}

// TestOpenFolderSplitLayout: root/train + root/val is read as a split
// whose evaluation labels follow the train classes by name; a problem in
// train/ or val/ is an error, never a fall-back to "train" and "val" as
// two classes.
func TestOpenFolderSplitLayout(t *testing.T) {
	t.Run("val lacks a class", func(t *testing.T) {
		root := t.TempDir()
		writeGrey(t, root, "train/ant/0.png", 10)
		writeGrey(t, root, "train/bee/0.png", 20)
		writeGrey(t, root, "train/cat/0.png", 30)
		writeGrey(t, root, "val/ant/0.png", 40)
		writeGrey(t, root, "val/cat/0.png", 50) // label 2 (train's cat), not 1 (val's second class)
		tr, te, err := openFolder(root, 4)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"ant", "bee", "cat"}; !slices.Equal(tr.Classes(), want) || !slices.Equal(te.Classes(), want) {
			t.Fatalf("classes: train %v, val %v, want %v", tr.Classes(), te.Classes(), want)
		}
		if got := labelsByGrey(t, te); got[40] != 0 || got[50] != 2 || len(got) != 2 {
			t.Fatalf("val labels by grey level %v, want 40:0 50:2", got)
		}
		names, dir, err := FolderClasses(root)
		if err != nil || !slices.Equal(names, tr.Classes()) || dir != filepath.Join(root, "train") {
			t.Fatalf("FolderClasses: %v from %s, %v", names, dir, err)
		}
	})
	t.Run("empty class in train", func(t *testing.T) {
		root := t.TempDir()
		writeGrey(t, root, "train/ant/0.png", 10)
		writeGrey(t, root, "val/ant/0.png", 40)
		if err := os.MkdirAll(filepath.Join(root, "train", "bee"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, _, err := openFolder(root, 4)
		if !errors.Is(err, data.ErrInvalid) || !strings.Contains(err.Error(), filepath.Join(root, "train", "bee")) {
			t.Fatalf("openFolder: %v, want an error naming the empty class directory", err)
		}
		if names, _, err := FolderClasses(root); err == nil {
			t.Fatalf("FolderClasses: %v, want the same error", names)
		}
	})
	t.Run("val class unknown to train", func(t *testing.T) {
		root := t.TempDir()
		writeGrey(t, root, "train/ant/0.png", 10)
		writeGrey(t, root, "train/bee/0.png", 20)
		writeGrey(t, root, "val/ant/0.png", 40)
		writeGrey(t, root, "val/wasp/0.png", 50)
		_, _, err := openFolder(root, 4)
		if !errors.Is(err, data.ErrInvalid) || !strings.Contains(err.Error(), `"wasp"`) {
			t.Fatalf("openFolder: %v, want an error naming class wasp", err)
		}
	})
	t.Run("train without val", func(t *testing.T) {
		root := t.TempDir()
		for i := range 10 {
			writeGrey(t, root, filepath.Join("train", "ant", string(rune('a'+i))+".png"), uint8(i))
			writeGrey(t, root, filepath.Join("train", "bee", string(rune('a'+i))+".png"), uint8(100+i))
		}
		tr, te, err := openFolder(root, 4)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tr.Classes(), []string{"ant", "bee"}) || tr.Len() != 18 || te.Len() != 2 {
			t.Fatalf("classes %v, %d train and %d held-out images, want [ant bee], 18 and 2", tr.Classes(), tr.Len(), te.Len())
		}
	})
	t.Run("class directories at the root", func(t *testing.T) {
		root := t.TempDir()
		writeGrey(t, root, "bus/0.png", 10)
		writeGrey(t, root, "train/0.png", 20) // a class named train, without subdirectories
		tr, _, err := openFolder(root, 4)
		if err != nil || !slices.Equal(tr.Classes(), []string{"bus", "train"}) {
			t.Fatalf("classes %v, %v; want [bus train]", tr.Classes(), err)
		}
	})
}
