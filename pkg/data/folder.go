package data

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // registers the JPEG decoder for image.Decode
	_ "image/png"  // registers the PNG decoder for image.Decode
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// MaxImagePixels bounds the decoded size of one image-folder file, so that
// a small crafted file cannot make the loader allocate gigabytes.
const MaxImagePixels = 64 << 20

// ImageFolder is a dataset of the user's own images laid out as
// root/<class>/<file>.png|.jpg|.jpeg (files may sit in subdirectories of a
// class directory). Classes are the class directories' names in sorted
// order (label k is the k-th); files are sorted by path. Every image is
// converted to RGB, resized so that its shorter side is Size (antialiased
// bilinear, like torchvision's Resize(Size)) and centre-cropped to
// Size x Size (CenterCrop(Size)). Files are decoded on every Get; it is
// safe for concurrent use.
//
// Decoding is bounded by a pixel budget (DefaultDecodeBudget, see
// SetDecodeBudget): concurrent Get calls wait until the pixels their
// images declare fit, so memory does not grow with the number of
// goroutines decoding.
type ImageFolder struct {
	root    string
	size    int
	classes []string
	files   []string
	labels  []int
	budget  *pixelBudget
}

var _ Dataset = (*ImageFolder)(nil)

// IsImageFile reports whether name has an extension ImageFolder reads.
func IsImageFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// NewImageFolder scans root. Hidden files and directories (names starting
// with ".") are ignored, and so are files of other types. Symbolic links
// are followed, to class directories, subdirectories and files alike; a
// broken one (where a class directory or an image would be) is an error. A
// root without class directories, or a class directory without images, is
// an error.
func NewImageFolder(root string, size int) (*ImageFolder, error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: image size %d", ErrInvalid, size)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("data: image folder: %w", err)
	}
	rootInfo, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("data: image folder: %w", err)
	}
	f := &ImageFolder{root: root, size: size, budget: newPixelBudget(DefaultDecodeBudget)}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		info, err := entryInfo(dir, e)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w: image folder: %s is a broken symbolic link: fix or remove it", ErrInvalid, dir)
			}
			return nil, fmt.Errorf("data: image folder: %w", err)
		}
		if !info.IsDir() {
			continue
		}
		label := len(f.classes)
		f.classes = append(f.classes, e.Name())
		before := len(f.files)
		if err := walkImages(dir, []os.FileInfo{rootInfo, info}, &f.files); err != nil {
			return nil, err
		}
		if len(f.files) == before {
			return nil, fmt.Errorf("%w: image folder class %q (%s) has no .png, .jpg or .jpeg files: add its images or remove the directory",
				ErrInvalid, e.Name(), dir)
		}
		for range len(f.files) - before {
			f.labels = append(f.labels, label)
		}
	}
	if len(f.classes) == 0 {
		return nil, fmt.Errorf("%w: image folder %s has no class directories (expected %s/<class>/<image>.jpg)", ErrInvalid, root, root)
	}
	// os.ReadDir returns names in sorted order, so labels and files are
	// deterministic.
	return f, nil
}

// ImageFiles returns the image files (.png, .jpg, .jpeg) under dir, at any
// depth, in the order ImageFolder lists them: hidden files and directories
// are skipped and symbolic links followed (a broken link named like an
// image is an error, and so is a link cycle).
func ImageFiles(dir string) ([]string, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("data: image folder: %w", err)
	}
	var out []string
	if err := walkImages(dir, []os.FileInfo{info}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// entryInfo is the FileInfo of a directory entry, following a symbolic link.
func entryInfo(path string, e fs.DirEntry) (os.FileInfo, error) {
	if e.Type()&fs.ModeSymlink != 0 {
		return os.Stat(path)
	}
	return e.Info()
}

// walkImages appends the image files under dir to out, depth first in
// name order. ancestors are the directories above (dir included), to
// detect a link that leads back into one of them.
func walkImages(dir string, ancestors []os.FileInfo, out *[]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data: image folder: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if e.Type()&fs.ModeSymlink == 0 && !e.IsDir() {
			if e.Type().IsRegular() && IsImageFile(e.Name()) {
				*out = append(*out, p)
			}
			continue
		}
		info, err := entryInfo(p, e)
		if err != nil {
			if e.Type()&fs.ModeSymlink != 0 && errors.Is(err, fs.ErrNotExist) {
				if IsImageFile(e.Name()) {
					return fmt.Errorf("%w: image folder: %s is a broken symbolic link: fix or remove it", ErrInvalid, p)
				}
				continue // a broken link to something that is not an image
			}
			return fmt.Errorf("data: image folder: %w", err)
		}
		switch {
		case info.IsDir():
			for _, a := range ancestors {
				if os.SameFile(a, info) {
					return fmt.Errorf("%w: image folder: %s links back to %s (a cycle): remove the link", ErrInvalid, p, a.Name())
				}
			}
			if err := walkImages(p, append(ancestors[:len(ancestors):len(ancestors)], info), out); err != nil {
				return err
			}
		case info.Mode().IsRegular() && IsImageFile(e.Name()):
			*out = append(*out, p)
		}
	}
	return nil
}

// Len is the number of images.
func (f *ImageFolder) Len() int { return len(f.files) }

// Shape is 3 x Size x Size.
func (f *ImageFolder) Shape() Shape { return Shape{C: 3, H: f.size, W: f.size} }

// Classes returns the class names in label order (a copy).
func (f *ImageFolder) Classes() []string { return append([]string(nil), f.classes...) }

// Path returns the file of sample i.
func (f *ImageFolder) Path(i int) string { return f.files[i] }

// Label returns the label of sample i without decoding it.
func (f *ImageFolder) Label(i int) int { return f.labels[i] }

// Get decodes, resizes and crops sample i into dst (values in [0, 1]).
// Errors name the file.
func (f *ImageFolder) Get(i int, dst []float32) (int, error) {
	if err := checkGet(i, len(f.files), dst, f.Shape()); err != nil {
		return 0, err
	}
	file, pixels, err := openImage(f.files[i])
	if err != nil {
		return 0, err
	}
	defer file.Close()
	held := f.budget.acquire(pixels)
	defer f.budget.release(held)
	img, err := decodeImage(file)
	if err != nil {
		return 0, err
	}
	resizeCrop(dst, img, f.size)
	return f.labels[i], nil
}

// SetDecodeBudget sets how many pixels the folder decodes at once over
// all concurrent Get calls (DefaultDecodeBudget unless set). An image
// larger than the budget is decoded alone. Call it before the first Get.
func (f *ImageFolder) SetDecodeBudget(pixels int64) { f.budget = newPixelBudget(pixels) }

// Check reads the header of every file (a PNG or JPEG signature,
// dimensions within MaxImagePixels) and, when the files hold at most
// decodeBytes in all, decodes every image too (decoded reports whether it
// did). It returns the first problem, naming the file. It is what a
// coordinator checks before starting workers that would fail on the same
// file; a worker meets any remaining problem when it decodes the image.
func (f *ImageFolder) Check(decodeBytes int64) (decoded bool, err error) {
	var total int64
	for _, p := range f.files {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	decoded = total <= decodeBytes
	for i, p := range f.files {
		file, _, err := openImage(p)
		if err != nil {
			return false, fmt.Errorf("%w (image %d of %d)", err, i+1, len(f.files))
		}
		if decoded {
			_, err = decodeImage(file)
		}
		file.Close()
		if err != nil {
			return false, fmt.Errorf("%w (image %d of %d)", err, i+1, len(f.files))
		}
	}
	return decoded, nil
}

// openImage opens a PNG or JPEG file and checks its declared size from
// the header, before anything is decoded; it returns the file positioned
// at its start and its pixel count.
func openImage(path string) (*os.File, int64, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("data: image: %w", err)
	}
	cfg, _, err := image.DecodeConfig(file)
	if err != nil {
		file.Close()
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	pixels := int64(cfg.Width) * int64(cfg.Height)
	if cfg.Width <= 0 || cfg.Height <= 0 || pixels > MaxImagePixels {
		file.Close()
		return nil, 0, fmt.Errorf("%w: %s: the header declares %dx%d pixels (at most %d in all)", ErrCorrupt, path, cfg.Width, cfg.Height, MaxImagePixels)
	}
	if _, err := file.Seek(0, 0); err != nil {
		file.Close()
		return nil, 0, fmt.Errorf("data: image: %w", err)
	}
	return file, pixels, nil
}

// decodeImage decodes an image file opened by openImage.
func decodeImage(file *os.File) (*planes, error) {
	img, _, err := image.Decode(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, file.Name(), err)
	}
	return toPlanes(img), nil
}

// planes is an RGB image as three float32 planes in [0, 1].
type planes struct {
	w, h int
	rgb  [3][]float32
}

// toPlanes converts any decoded image to RGB planes. Alpha is dropped
// (colours are un-premultiplied), as PIL's convert("RGB") does.
func toPlanes(img image.Image) *planes {
	b := img.Bounds()
	p := &planes{w: b.Dx(), h: b.Dy()}
	for c := range p.rgb {
		p.rgb[c] = make([]float32, p.w*p.h)
	}
	set := func(x, y int, r, g, bl uint8) {
		k := y*p.w + x
		p.rgb[0][k], p.rgb[1][k], p.rgb[2][k] = byteToUnit[r], byteToUnit[g], byteToUnit[bl]
	}
	switch m := img.(type) {
	case *image.YCbCr:
		for y := range p.h {
			for x := range p.w {
				yi, ci := m.YOffset(b.Min.X+x, b.Min.Y+y), m.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				set(x, y, r, g, bl)
			}
		}
	case *image.Gray:
		for y := range p.h {
			for x := range p.w {
				v := m.Pix[m.PixOffset(b.Min.X+x, b.Min.Y+y)]
				set(x, y, v, v, v)
			}
		}
	default:
		for y := range p.h {
			for x := range p.w {
				c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				set(x, y, c.R, c.G, c.B)
			}
		}
	}
	return p
}

// resizeCrop resizes src so that its shorter side is size and writes the
// centre size x size crop into dst (3 planes).
func resizeCrop(dst []float32, src *planes, size int) {
	w, h := size, size
	if src.w < src.h {
		h = int(float64(size) * float64(src.h) / float64(src.w))
	} else if src.h < src.w {
		w = int(float64(size) * float64(src.w) / float64(src.h))
	}
	top := int(math.Round(float64(h-size) / 2))
	left := int(math.Round(float64(w-size) / 2))
	// Separable resampling, restricted to the rows and columns kept.
	xs := resampleWeights(src.w, w, left, size)
	ys := resampleWeights(src.h, h, top, size)
	tmp := make([]float32, src.h*size)
	for c := range 3 {
		in := src.rgb[c]
		for y := range src.h {
			row := in[y*src.w : (y+1)*src.w]
			for x, wt := range xs {
				tmp[y*size+x] = wt.apply(row, 1)
			}
		}
		out := dst[c*size*size : (c+1)*size*size]
		for y, wt := range ys {
			for x := range size {
				out[y*size+x] = wt.apply(tmp[x:], size)
			}
		}
	}
}

// taps are the source indices and weights that make one output sample.
type taps struct {
	first int
	w     []float32
}

// apply returns the weighted sum of src[(first+k)*stride].
func (t taps) apply(src []float32, stride int) float32 {
	var s float32
	for k, w := range t.w {
		s += w * src[(t.first+k)*stride]
	}
	return s
}

// resampleWeights computes, for output samples [off, off+n) of a resize
// from in to out samples, triangle-filter (bilinear) taps whose support
// widens when downscaling, so that it averages instead of aliasing (the
// scheme of PIL's antialiased bilinear resize). Pixel centres sit at
// half-integers (align_corners=False).
func resampleWeights(in, out, off, n int) []taps {
	scale := float64(in) / float64(out)
	support := max(scale, 1)
	ts := make([]taps, n)
	for i := range n {
		centre := (float64(off+i) + 0.5) * scale
		lo := max(int(math.Floor(centre-support)), 0)
		hi := min(int(math.Ceil(centre+support)), in)
		var ws []float32
		var sum float64
		wts := make([]float64, 0, hi-lo)
		for j := lo; j < hi; j++ {
			wt := 1 - math.Abs((float64(j)+0.5-centre)/support)
			if wt < 0 {
				wt = 0
			}
			wts = append(wts, wt)
			sum += wt
		}
		for _, wt := range wts {
			ws = append(ws, float32(wt/sum))
		}
		ts[i] = taps{first: lo, w: ws}
	}
	return ts
}
