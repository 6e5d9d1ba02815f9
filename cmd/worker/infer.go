package main

// What predict, explain and export share: the model flags (as evaluate's),
// a strict weights loader that reads the architecture from the file, class
// names, and the list of images.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/internal/backend"
	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// cifar10Names are CIFAR-10's classes in label order, used when the data
// directory has no batches.meta.txt.
var cifar10Names = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

// inferFlags are the flags of the inference tools.
type inferFlags struct {
	spec        job.Spec
	config      string
	classesFile string
	noClasses   bool // export: class names are not needed
}

// inferShown are the job flags that matter to the inference tools; the
// other job flags are accepted (a job's command line can be reused) but
// hidden from --help.
var inferShown = map[string]bool{
	"weights": true, "model": true, "stem": true, "width": true, "classes": true,
	"dataset": true, "data-dir": true, "folder": true, "image-size": true,
	"device": true, "threads": true, "precision": true,
}

func bindInferFlags(cmd *cobra.Command, f *inferFlags) {
	f.spec = job.Default()
	fs := cmd.Flags()
	job.BindFlags(fs, &f.spec)
	fs.VisitAll(func(fl *pflag.Flag) {
		if !inferShown[fl.Name] {
			_ = fs.MarkHidden(fl.Name)
		}
	})
	fs.Lookup("weights").Usage = "the model's weights (safetensors, torchvision names); its architecture is read from the file"
	for _, name := range []string{"model", "stem", "width", "classes"} {
		fl := fs.Lookup(name)
		fl.Usage += " (default: the weights file's)"
		fl.DefValue = map[string]string{"width": "0", "classes": "0"}[name] // zero: pflag prints no default
	}
	fs.StringVar(&f.config, "config", "", "YAML job file (flags override it)")
	if !f.noClasses {
		fs.StringVar(&f.classesFile, "classes-file", "", "class names, one per line in label order (default: the dataset's)")
	}
}

// archInfo is a model configuration read from a weights file.
type archInfo struct {
	Arch    string
	Depth   int
	Stem    string
	Width   float64
	Classes int
}

func (a archInfo) String() string {
	w := ""
	if a.Width != 1 {
		w = fmt.Sprintf(", width %g", a.Width)
	}
	return fmt.Sprintf("%s (%s stem%s, %d classes)", a.Arch, a.Stem, w, a.Classes)
}

var depthOf = map[[5]int]int{ // blocks per stage + bottleneck flag
	{2, 2, 2, 2, 0}: 18, {3, 4, 6, 3, 0}: 34,
	{3, 4, 6, 3, 1}: 50, {3, 4, 23, 3, 1}: 101, {3, 8, 36, 3, 1}: 152,
}

// readArch works out which ResNet a weights file holds from its tensor
// names and shapes.
func readArch(st *nn.Safetensors) (archInfo, error) {
	shapes := map[string][]int{}
	for _, t := range st.Tensors {
		shapes[nn.CanonicalName(t.Name)] = t.Shape
	}
	var a archInfo
	c1, fc := shapes["conv1.weight"], shapes["fc.weight"]
	if len(c1) != 4 || c1[1] != 3 || len(fc) != 2 {
		return a, errors.New("it has no ResNet stem and head (conv1.weight of shape (K,3,R,S) and fc.weight)")
	}
	switch c1[2] {
	case 7:
		a.Stem = "imagenet"
	case 3:
		a.Stem = "cifar"
	default:
		return a, fmt.Errorf("conv1.weight is %v: neither the imagenet (7x7) nor the cifar (3x3) stem", c1)
	}
	a.Width = float64(c1[0]) / 64
	a.Classes = fc[0]
	var key [5]int
	for s := range 4 {
		for shapes[fmt.Sprintf("layer%d.%d.conv1.weight", s+1, key[s])] != nil {
			key[s]++
		}
	}
	if shapes["layer1.0.conv3.weight"] != nil {
		key[4] = 1
	}
	d, ok := depthOf[key]
	if !ok {
		return a, fmt.Errorf("its stages have %v blocks, which is no ResNet-18/34/50/101/152", key[:4])
	}
	a.Depth, a.Arch = d, "resnet"+strconv.Itoa(d)
	return a, nil
}

// loaded is a model ready for inference, with what the user should know.
type loaded struct {
	model   *nn.Model
	backend nn.Backend
	arch    archInfo
	names   []string // class names (nil for export)
	namesOf string   // where the names came from
	size    int      // input side: images are resized and cropped to it
	spec    job.Spec
}

// open resolves the flags, reads the weights (the architecture from the
// file, unless --model/--stem/--width say otherwise) and builds the model on
// the chosen backend in evaluation mode.
func (f *inferFlags) open(cmd *cobra.Command, tool string) (*loaded, error) {
	s, err := job.Resolve(cmd.Flags(), &f.spec, f.config)
	if err != nil {
		return nil, err
	}
	if s.Transfer.Weights == "" {
		return nil, fmt.Errorf("%s: --weights is required (a model.safetensors written by a job, or torchvision weights)", tool)
	}
	st, err := nn.ReadSafetensorsFile(s.Transfer.Weights)
	if err != nil {
		return nil, fmt.Errorf("%s: --weights %s is not a readable safetensors weights file: %w", tool, s.Transfer.Weights, err)
	}
	arch, err := readArch(st)
	if err != nil {
		return nil, fmt.Errorf("%s: --weights %s does not hold a ResNet: %v", tool, s.Transfer.Weights, err)
	}
	// Flags the user gave win over the file (a mismatch is reported below).
	// A --config file overrides the file only where its model section
	// names the key: an absent key is the job default, not the user's word.
	inConfig, err := configModelKeys(f.config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	yamlKey := map[string]string{"model": "arch", "stem": "stem", "width": "width", "classes": "classes"}
	given := func(name string) bool { return cmd.Flags().Changed(name) || inConfig[yamlKey[name]] }
	want := arch
	if given("model") {
		if want.Depth, err = nn.ModelDepth(s.Model.Arch); err != nil {
			return nil, fmt.Errorf("%s: %w", tool, err)
		}
		want.Arch = "resnet" + strconv.Itoa(want.Depth)
	}
	if given("stem") {
		want.Stem = s.Model.Stem
	}
	if given("width") {
		want.Width = s.Model.Width
	}
	if s.Model.Classes > 0 && given("classes") {
		want.Classes = s.Model.Classes
	}
	b, err := backend.Open(s.Device, s.Threads, gpuOptions(s.Precision), cli.NewLogger(tool, env.Log()))
	if err != nil {
		return nil, err
	}
	m, err := nn.NewResNet(b, nn.ResNetConfig{Depth: want.Depth, Stem: want.Stem, Width: want.Width, Classes: want.Classes, Seed: s.Seed})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	if err := nn.ApplyWeights(st, b, m.Params(), m.Buffers(), nn.LoadOptions{}); err != nil {
		m.Free()
		return nil, weightsMismatch(tool, s.Transfer.Weights, want, arch, f.config, err)
	}
	m.SetTrain(false)
	l := &loaded{model: m, backend: b, arch: want, spec: s, size: 32}
	if s.Data.Dataset == "folder" && s.Data.ImageSize > 0 {
		l.size = s.Data.ImageSize
	}
	if !f.noClasses {
		if l.names, l.namesOf, err = f.classNames(s); err != nil {
			m.Free()
			return nil, fmt.Errorf("%s: %w", tool, err)
		}
		if len(l.names) != want.Classes {
			m.Free()
			return nil, fmt.Errorf("%s: the weights have %d classes but %s lists %d names; give the right ones with --classes-file FILE (one name per line)",
				tool, want.Classes, l.namesOf, len(l.names))
		}
	}
	return l, nil
}

// configModelKeys returns the keys the model section of a YAML job file
// sets (none without a file).
func configModelKeys(path string) (map[string]bool, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc struct {
		Model map[string]any `json:"model"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	keys := map[string]bool{}
	for k := range doc.Model {
		keys[k] = true
	}
	return keys, nil
}

// weightsMismatch turns ApplyWeights' list of problems into one message.
func weightsMismatch(tool, path string, want, have archInfo, config string, err error) error {
	var n int
	first := err.Error()
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		n = len(j.Unwrap())
		if n > 0 {
			first = j.Unwrap()[0].Error()
		}
	}
	hint := ""
	if want != have {
		hint = fmt.Sprintf("; the file holds %s, the flags ask for %s (drop --model/--stem/--width/--classes to use the file's)", have, want)
		if config != "" {
			hint = fmt.Sprintf("; the file holds %s, the flags and --config %s ask for %s (drop --model/--stem/--width/--classes and the config's model keys to use the file's)", have, config, want)
		}
	}
	if n > 1 {
		return fmt.Errorf("%s: --weights %s does not fit the model: %d problems, first: %s%s", tool, path, n, first, hint)
	}
	return fmt.Errorf("%s: --weights %s does not fit the model: %s%s", tool, path, first, hint)
}

// classNames returns the class names and where they came from.
func (f *inferFlags) classNames(s job.Spec) ([]string, string, error) {
	if f.classesFile != "" {
		b, err := os.ReadFile(f.classesFile)
		if err != nil {
			return nil, "", fmt.Errorf("--classes-file: %w", err)
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			if l := strings.TrimSpace(line); l != "" {
				names = append(names, l)
			}
		}
		return names, "--classes-file " + f.classesFile, nil
	}
	switch s.Data.Dataset {
	case "synthetic":
		return data.SyntheticClasses, "the synthetic dataset", nil
	case "folder":
		if s.Data.Folder == "" {
			return nil, "", errors.New("--dataset folder needs --folder (its class directories name the classes) or --classes-file")
		}
		names, dir, err := worker.FolderClasses(s.Data.Folder)
		if err != nil {
			return nil, "", fmt.Errorf("--folder %s names no classes: %w (or give --classes-file)", s.Data.Folder, err)
		}
		return names, "the image folder " + dir, nil
	default:
		meta := filepath.Join(s.Data.Dir, "cifar-10-batches-bin", data.CIFARMetaFile)
		if b, err := os.ReadFile(meta); err == nil {
			names, err := data.ParseClassNames(meta, b)
			return names, meta, err
		}
		return cifar10Names, "CIFAR-10's class list", nil
	}
}

// imageFiles expands the arguments (files, or folders searched
// recursively for .png/.jpg/.jpeg as an image folder is: hidden names
// skipped, symbolic links followed) into a de-duplicated list.
func imageFiles(args []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", a, errors.Unwrap(err))
		}
		if !st.IsDir() {
			add(a)
			continue
		}
		found, err := data.ImageFiles(a) // its errors name the file
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("image folder %s holds no .png, .jpg or .jpeg files", a)
		}
		sort.Strings(found)
		for _, p := range found {
			add(p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no images given")
	}
	return out, nil
}

// input is one image as the model sees it.
type input struct {
	path string
	info data.ImageInfo
	rgb  []float32 // [0,1], (3,size,size)
	x    []float32 // normalised (the evaluation transform)
}

// readInput reads and transforms one image file.
func readInput(path string, size int) (*input, error) {
	rgb, info, err := data.ReadImage(path, size)
	if err != nil {
		return nil, fmt.Errorf("cannot read image %s: %w", path, err)
	}
	x := make([]float32, len(rgb))
	data.EvalTransform().Apply(x, rgb, data.Shape{C: 3, H: size, W: size}, 0, 0, 0)
	return &input{path: path, info: info, rgb: rgb, x: x}, nil
}

// transformNote says what is done to every image.
func transformNote(size int) string {
	return fmt.Sprintf("shorter side resized to %d (antialiased bilinear), centre crop %dx%d, normalised with the CIFAR-10 mean/std (the evaluation transform)", size, size, size)
}

// softmax returns the probabilities of logits, in float64.
func softmax(logits []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	p := make([]float64, len(logits))
	var s float64
	for i, v := range logits {
		p[i] = math.Exp(float64(v) - mx)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
	return p
}
