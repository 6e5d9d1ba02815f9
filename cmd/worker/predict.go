package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// predictBatch is the number of images per forward pass.
const predictBatch = 32

// prediction is one image's result (the --json record).
type prediction struct {
	File      string   `json:"file"`
	Width     int      `json:"width"`  // the file's size
	Height    int      `json:"height"` //
	Transform string   `json:"transform"`
	Top       []ranked `json:"top"`
}

type ranked struct {
	Class int     `json:"class"`
	Name  string  `json:"name"`
	Prob  float64 `json:"probability"`
	Logit float32 `json:"logit"`
}

func predictCmd() *cobra.Command {
	f := &inferFlags{}
	var topK int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "predict --weights MODEL.safetensors [flags] IMAGE|FOLDER...",
		Short: "Classify images (PNG/JPEG files or folders) with saved weights: top-k classes with probabilities",
		Long: `Classify images with saved weights. The architecture is read from the weights
file (--model/--stem/--width override it); class names come from the dataset
(--dataset, --data-dir, --folder) or --classes-file. Every image is resized and
centre-cropped the way the model was trained (its shorter side to the input size,
32 for CIFAR-10, --image-size for an image folder) and normalised with the
evaluation transform. An image that cannot be read is reported and skipped;
the command then fails (exit status 65) after classifying the others.`,
		Example: `  worker predict --weights runs/ringtrain/model.safetensors cat.png dog.jpg
  worker predict --weights model.safetensors --dataset folder --folder flowers --image-size 64 --top 3 photos/
  worker predict --weights model.safetensors --json test-images/ > predictions.json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if topK < 1 {
				return fmt.Errorf("predict: --top %d: want at least 1", topK)
			}
			files, err := imageFiles(args)
			if err != nil {
				return fmt.Errorf("predict: %w", err)
			}
			l, err := f.open(cmd, "predict")
			if err != nil {
				return err
			}
			defer l.model.Free()
			out := cmd.OutOrStdout()
			if !asJSON {
				fmt.Fprintf(out, "predict: %s from %s; class names from %s\n", l.arch, l.spec.Transfer.Weights, l.namesOf)
				fmt.Fprintf(out, "predict: each image: %s\n", transformNote(l.size))
			}
			// Results are written as they come, and an unreadable image is
			// reported and skipped: one bad file among thousands neither
			// withholds the others' results nor goes unnoticed (the exit
			// status says it).
			w := &predictWriter{out: out, json: asJSON}
			var bad []error
			skip := func(err error) {
				bad = append(bad, err)
				fmt.Fprintf(cmd.ErrOrStderr(), "predict: skipped: %v\n", err)
			}
			err = predictFiles(l, files, min(topK, len(l.names)), w.write, skip)
			if werr := w.close(); err == nil {
				err = werr
			}
			if err != nil {
				return err
			}
			if len(bad) == 1 && len(files) == 1 {
				return fmt.Errorf("predict: %w", bad[0])
			}
			if len(bad) > 0 {
				return fmt.Errorf("predict: %d of %d images could not be read (their results are missing above); first: %w", len(bad), len(files), bad[0])
			}
			return nil
		},
	}
	bindInferFlags(cmd, f)
	cmd.Flags().IntVar(&topK, "top", 5, "classes shown per image")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON records instead of a table")
	return cmd
}

// predictFiles runs the model on files in batches and hands each result to
// emit, in order; a file that cannot be read goes to skip instead.
func predictFiles(l *loaded, files []string, k int, emit func(prediction) error, skip func(error)) error {
	n := 3 * l.size * l.size
	for lo := 0; lo < len(files); lo += predictBatch {
		batch := files[lo:min(lo+predictBatch, len(files))]
		xs := make([]float32, 0, len(batch)*n)
		var ins []*input
		for _, p := range batch {
			in, err := readInput(p, l.size)
			if err != nil {
				skip(err)
				continue
			}
			ins = append(ins, in)
			xs = append(xs, in.x...)
		}
		if len(ins) == 0 {
			continue
		}
		logits, err := runLogits(l.model, xs, len(ins), l.size)
		if err != nil {
			return fmt.Errorf("predict: %w", err)
		}
		classes := len(logits) / len(ins)
		for i, in := range ins {
			row := logits[i*classes : (i+1)*classes]
			prob := softmax(row)
			order := make([]int, classes)
			for c := range order {
				order[c] = c
			}
			sort.SliceStable(order, func(a, b int) bool { return row[order[a]] > row[order[b]] })
			p := prediction{File: in.path, Width: in.info.Width, Height: in.info.Height, Transform: in.info.String()}
			for _, c := range order[:k] {
				p.Top = append(p.Top, ranked{Class: c, Name: l.names[c], Prob: prob[c], Logit: row[c]})
			}
			if err := emit(p); err != nil {
				return fmt.Errorf("predict: %w", err)
			}
		}
	}
	return nil
}

// predictWriter prints predictions as they come: table blocks, or the
// elements of one JSON array (indented as encoding/json would the whole).
type predictWriter struct {
	out  io.Writer
	json bool
	n    int
}

func (w *predictWriter) write(p prediction) error {
	if !w.json {
		printPredictions(w.out, []prediction{p})
		return nil
	}
	b, err := json.MarshalIndent(p, "  ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n  "
	if w.n == 0 {
		sep = "[\n  "
	}
	w.n++
	_, err = fmt.Fprintf(w.out, "%s%s", sep, b)
	return err
}

// close ends the JSON array (an empty one when nothing was written).
func (w *predictWriter) close() error {
	if !w.json {
		return nil
	}
	end := "\n]\n"
	if w.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(w.out, end)
	return err
}

// runLogits returns the logits of n images of side size (host, n x classes).
func runLogits(m *nn.Model, xs []float32, n, size int) ([]float32, error) {
	b := m.Backend()
	x := b.New(n, 3, size, size)
	defer b.Free(x)
	b.FromHost(x, xs)
	y, err := m.Forward(x)
	if err != nil {
		return nil, err
	}
	out := make([]float32, y.Numel())
	b.ToHost(out, y)
	return out, b.Sync()
}

func printPredictions(out io.Writer, preds []prediction) {
	for _, p := range preds {
		fmt.Fprintf(out, "\n%s  (%s)\n", p.File, p.Transform)
		for i, r := range p.Top {
			fmt.Fprintf(out, "  %d. %-16s %6.2f%%   logit %+.3f\n", i+1, r.Name, 100*r.Prob, r.Logit)
		}
	}
}
