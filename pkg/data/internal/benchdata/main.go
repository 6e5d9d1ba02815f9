// Command benchdata measures the data loader's throughput: augmented
// CIFAR-10 images per second (or synthetic images when the archive is
// absent or -synthetic is set), with the tutorial's training transform,
// ending with the line "data: N images/s". `make bench-data` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/ringtrain/ringtrain/pkg/data"
)

func main() {
	archive := flag.String("archive", "", "CIFAR-10 binary tar.gz (default: ../shared/data next to the repository; make bench-data passes CIFAR_ARCHIVE)")
	synthetic := flag.Bool("synthetic", false, "use the synthetic dataset instead of CIFAR-10")
	batch := flag.Int("batch", 128, "global batch size")
	workers := flag.Int("workers", 0, "decoding goroutines (0: GOMAXPROCS)")
	seconds := flag.Float64("seconds", 5, "how long to measure")
	flag.Parse()
	if err := run(*archive, *synthetic, *batch, *workers, time.Duration(*seconds*float64(time.Second))); err != nil {
		fmt.Fprintln(os.Stderr, "benchdata:", err)
		os.Exit(1)
	}
}

func run(archive string, synthetic bool, batch, workers int, dur time.Duration) error {
	var ds data.Dataset
	name := "synthetic"
	if !synthetic {
		if archive == "" {
			archive = findArchive()
		}
		if archive == "" {
			fmt.Fprintln(os.Stderr, "benchdata: no CIFAR-10 archive found (pass -archive); using the synthetic dataset")
		} else {
			start := time.Now()
			train, err := data.LoadCIFAR10Archive(archive, data.Train)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "benchdata: read %d CIFAR-10 training images from %s in %v\n", train.Len(), archive, time.Since(start).Round(time.Millisecond))
			ds, name = train, "CIFAR-10"
		}
	}
	if ds == nil {
		syn, err := data.SyntheticSplit(data.Train, 1)
		if err != nil {
			return err
		}
		ds = syn
	}
	sampler, err := data.NewSampler(ds.Len(), data.SamplerConfig{Seed: 1, Shuffle: true})
	if err != nil {
		return err
	}
	l, err := data.NewLoader(context.Background(), data.LoaderConfig{
		Dataset: ds, Sampler: sampler, Transform: data.TrainTransform(), Seed: 1,
		GlobalBatch: batch, World: 1, Workers: workers,
	})
	if err != nil {
		return err
	}
	defer l.Close()
	// Warm up (first buffers, page faults), then measure.
	for range 3 {
		if _, err := l.Next(context.Background()); err != nil {
			return err
		}
	}
	images := 0
	start := time.Now()
	for time.Since(start) < dur {
		b, err := l.Next(context.Background())
		if err != nil {
			return err
		}
		images += b.N
	}
	el := time.Since(start)
	fmt.Fprintf(os.Stderr, "benchdata: %s, random crop + flip + normalise, batch %d, %d CPUs: %d images in %v\n",
		name, batch, runtime.GOMAXPROCS(0), images, el.Round(time.Millisecond))
	fmt.Printf("data: %.0f images/s\n", float64(images)/el.Seconds())
	return nil
}

// findArchive looks for ../shared/data/cifar-10-binary.tar.gz beside the
// repository root (the nearest directory above the working directory
// holding go.mod). Like every package outside cmd/, the tool reads no
// environment: -archive names another archive.
func findArchive() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "data", data.CIFAR10ArchiveName)
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				return ""
			}
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
