// Command mkfolder writes an image folder (root/train/<class>/*.png and
// root/val/<class>/*.png) from CIFAR-10 or the synthetic shapes, for the
// transfer-learning walkthrough of docs/tutorial.md: a stand-in for "your
// own images".
//
//	go run ./scripts/tutorial/mkfolder -cifar ../shared/data/cifar-10-binary.tar.gz -classes cat,dog -train 500 -val 100 -out data/catdog
//	go run ./scripts/tutorial/mkfolder -classes disc,square,ring -out data/shapes
package main

import (
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"

	"github.com/ringtrain/ringtrain/pkg/data"
)

func main() {
	archive := flag.String("cifar", "", "CIFAR-10 binary archive (.tar.gz); empty: the synthetic shapes")
	classes := flag.String("classes", "", "comma-separated class names to keep (default: all)")
	nTrain := flag.Int("train", 200, "training images per class (from the training split)")
	nVal := flag.Int("val", 50, "validation images per class (from the test split)")
	out := flag.String("out", "", "output folder (required)")
	flag.Parse()
	if err := run(*archive, *classes, *nTrain, *nVal, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkfolder:", err)
		os.Exit(1)
	}
}

func run(archive, classes string, nTrain, nVal int, out string) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	var train, test data.Dataset
	if archive != "" {
		tr, te, err := data.LoadCIFAR10ArchiveAll(archive)
		if err != nil {
			return err
		}
		train, test = tr, te
	} else {
		tr, err := data.SyntheticSplit(data.Train, 1)
		if err != nil {
			return err
		}
		te, err := data.SyntheticSplit(data.Test, 1)
		if err != nil {
			return err
		}
		train, test = tr, te
	}
	names := train.Classes()
	keep := map[int]bool{}
	if classes == "" {
		for i := range names {
			keep[i] = true
		}
	} else {
		for _, c := range strings.Split(classes, ",") {
			found := false
			for i, n := range names {
				if n == strings.TrimSpace(c) {
					keep[i], found = true, true
				}
			}
			if !found {
				return fmt.Errorf("-classes: no class %q (have %s)", c, strings.Join(names, ", "))
			}
		}
	}
	for _, s := range []struct {
		ds    data.Dataset
		split string
		n     int
	}{{train, "train", nTrain}, {test, "val", nVal}} {
		count := map[int]int{}
		shape := s.ds.Shape()
		buf := make([]float32, shape.Len())
		for i := 0; i < s.ds.Len(); i++ {
			lab, err := s.ds.Get(i, buf)
			if err != nil {
				return err
			}
			if !keep[lab] || count[lab] >= s.n {
				continue
			}
			p := filepath.Join(out, s.split, names[lab], fmt.Sprintf("%04d.png", count[lab]))
			if err := writePNG(p, buf, shape.H, shape.W); err != nil {
				return err
			}
			count[lab]++
		}
		total := 0
		for _, c := range count {
			total += c
		}
		fmt.Printf("mkfolder: %s: %d images in %d classes -> %s\n", s.split, total, len(count), filepath.Join(out, s.split))
	}
	return nil
}

func writePNG(path string, px []float32, h, w int) error {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			v := func(c int) uint8 { return uint8(px[c*h*w+y*w+x]*255 + 0.5) }
			img.Set(x, y, color.RGBA{v(0), v(1), v(2), 255})
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
