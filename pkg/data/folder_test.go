package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func saveImage(t *testing.T, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if strings.HasSuffix(path, ".png") {
		err = png.Encode(f, img)
	} else {
		err = jpeg.Encode(f, img, &jpeg.Options{Quality: 95})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func filled(w, h int, c color.Color) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, c)
		}
	}
	return img
}

func TestImageFolderLayoutAndLabels(t *testing.T) {
	root := t.TempDir()
	saveImage(t, filepath.Join(root, "cats", "b.png"), filled(40, 40, color.NRGBA{255, 0, 0, 255}))
	saveImage(t, filepath.Join(root, "cats", "a.JPG"), filled(20, 30, color.NRGBA{0, 0, 255, 255}))
	saveImage(t, filepath.Join(root, "dogs", "deep", "c.jpeg"), filled(64, 48, color.NRGBA{0, 255, 0, 255}))
	writeFile(t, filepath.Join(root, "dogs"), "notes.txt", []byte("ignored"))
	writeFile(t, filepath.Join(root, "dogs"), ".hidden.png", []byte("ignored"))
	if err := os.Mkdir(filepath.Join(root, ".cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "README", []byte("ignored"))

	f, err := NewImageFolder(root, 16)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.Classes(), []string{"cats", "dogs"}) || f.Len() != 3 {
		t.Fatalf("classes %v, %d images", f.Classes(), f.Len())
	}
	if f.Shape() != (Shape{C: 3, H: 16, W: 16}) {
		t.Fatalf("shape %v", f.Shape())
	}
	want := []struct {
		file    string
		label   int
		r, g, b float32
	}{{"a.JPG", 0, 0, 0, 1}, {"b.png", 0, 1, 0, 0}, {"c.jpeg", 1, 0, 1, 0}}
	dst := make([]float32, f.Shape().Len())
	for i, w := range want {
		if filepath.Base(f.Path(i)) != w.file {
			t.Fatalf("image %d is %s, want %s", i, f.Path(i), w.file)
		}
		label, err := f.Get(i, dst)
		if err != nil || label != w.label || f.Label(i) != w.label {
			t.Fatalf("%s: label %d, %v", w.file, label, err)
		}
		for c, v := range []float32{w.r, w.g, w.b} {
			for _, got := range dst[c*256 : (c+1)*256] {
				if math.Abs(float64(got-v)) > 0.02 { // JPEG is lossy
					t.Fatalf("%s channel %d: %v, want %v", w.file, c, got, v)
				}
			}
		}
	}
}

func TestImageFolderResizeAndCentreCrop(t *testing.T) {
	root := t.TempDir()
	// 64x32: left quarter red, middle half green, right quarter blue.
	// Resize(32) keeps it; CenterCrop(32) keeps the middle half: all green.
	img := image.NewNRGBA(image.Rect(0, 0, 64, 32))
	for y := range 32 {
		for x := range 64 {
			c := color.NRGBA{0, 255, 0, 255}
			if x < 16 {
				c = color.NRGBA{255, 0, 0, 255}
			} else if x >= 48 {
				c = color.NRGBA{0, 0, 255, 255}
			}
			img.Set(x, y, c)
		}
	}
	saveImage(t, filepath.Join(root, "a", "wide.png"), img)
	// 64x64 vertical stripes two pixels wide, downscaled by 2: a plain
	// bilinear resize would keep pure 0/1 columns, the antialiased one
	// averages neighbours (0.25/0.75).
	stripes := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			stripes.SetGray(x, y, color.Gray{Y: uint8(255 * ((x / 2) % 2))})
		}
	}
	saveImage(t, filepath.Join(root, "b", "stripes.png"), stripes)
	f, err := NewImageFolder(root, 32)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, f.Shape().Len())
	if _, err := f.Get(0, dst); err != nil {
		t.Fatal(err)
	}
	for k, v := range dst {
		want := float32(0)
		if k/1024 == 1 {
			want = 1
		}
		if math.Abs(float64(v-want)) > 1e-6 {
			t.Fatalf("centre crop value %d (channel %d) = %v, want %v", k, k/1024, v, want)
		}
	}
	if _, err := f.Get(1, dst); err != nil {
		t.Fatal(err)
	}
	for x := 1; x < 31; x++ {
		want := float32(0.25)
		if x%2 == 1 {
			want = 0.75
		}
		if got := dst[5*32+x]; math.Abs(float64(got-want)) > 1e-5 {
			t.Fatalf("stripes column %d = %v, want %v", x, got, want)
		}
	}
}

// pngHeader returns the signature and IHDR chunk of a PNG declaring the
// given size (the file is otherwise incomplete).
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestImageFolderErrors(t *testing.T) {
	if _, err := NewImageFolder(t.TempDir(), 32); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no classes: %v", err)
	}
	if _, err := NewImageFolder(filepath.Join(t.TempDir(), "missing"), 32); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing root: %v", err)
	}
	root := t.TempDir()
	saveImage(t, filepath.Join(root, "a", "ok.png"), filled(8, 8, color.White))
	if err := os.Mkdir(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := NewImageFolder(root, 32); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty class: %v", err)
	}
	if _, err := NewImageFolder(root, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("size 0: %v", err)
	}
	os.Remove(filepath.Join(root, "empty"))
	writeFile(t, filepath.Join(root, "a"), "broken.jpg", []byte("\xff\xd8\xff garbage"))
	writeFile(t, filepath.Join(root, "a"), "huge.png", pngHeader(100000, 100000))
	f, err := NewImageFolder(root, 32)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, f.Shape().Len())
	for i := range f.Len() {
		_, err := f.Get(i, dst)
		switch filepath.Base(f.Path(i)) {
		case "ok.png":
			if err != nil {
				t.Fatal(err)
			}
		default:
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), f.Path(i)) {
				t.Fatalf("%s: %v, want ErrCorrupt naming the file", f.Path(i), err)
			}
		}
	}
}

// TestImageFolderFollowsSymlinks: a class directory, a subdirectory or an
// image that is a symbolic link is read like the real thing (it was
// silently left out: a linked class vanished from the model); a broken
// link where an image or a class would be, and a link cycle, are errors
// naming it.
func TestImageFolderFollowsSymlinks(t *testing.T) {
	store := t.TempDir() // the real files, outside the folder
	saveImage(t, filepath.Join(store, "bees", "b1.png"), filled(8, 8, color.White))
	saveImage(t, filepath.Join(store, "more", "b2.png"), filled(8, 8, color.White))
	saveImage(t, filepath.Join(store, "a2.png"), filled(8, 8, color.Black))
	root := t.TempDir()
	saveImage(t, filepath.Join(root, "ants", "a1.png"), filled(8, 8, color.Black))
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, name); err != nil {
			t.Skipf("no symbolic links here: %v", err)
		}
	}
	link(filepath.Join(store, "a2.png"), filepath.Join(root, "ants", "a2.png"))
	link(filepath.Join(store, "bees"), filepath.Join(root, "bees"))
	link(filepath.Join(store, "more"), filepath.Join(store, "bees", "more"))
	link(filepath.Join(store, "missing.txt"), filepath.Join(root, "ants", "notes.txt")) // broken, not an image: ignored

	f, err := NewImageFolder(root, 8)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range f.Len() {
		rel, _ := filepath.Rel(root, f.Path(i))
		got = append(got, fmt.Sprintf("%s:%d", rel, f.Label(i)))
	}
	want := []string{"ants/a1.png:0", "ants/a2.png:0", "bees/b1.png:1", "bees/more/b2.png:1"}
	if !slices.Equal(f.Classes(), []string{"ants", "bees"}) || !slices.Equal(got, want) {
		t.Fatalf("classes %v, files %v; want [ants bees], %v", f.Classes(), got, want)
	}
	files, err := ImageFiles(filepath.Join(root, "bees"))
	if err != nil || len(files) != 2 {
		t.Fatalf("ImageFiles: %v, %v; want the 2 images behind the links", files, err)
	}

	broken := filepath.Join(root, "ants", "gone.jpg")
	link(filepath.Join(store, "gone.jpg"), broken)
	if _, err := NewImageFolder(root, 8); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), broken+" is a broken symbolic link") {
		t.Fatalf("broken image link: %v", err)
	}
	os.Remove(broken)
	brokenClass := filepath.Join(root, "cats")
	link(filepath.Join(store, "cats"), brokenClass)
	if _, err := NewImageFolder(root, 8); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), brokenClass+" is a broken symbolic link") {
		t.Fatalf("broken class link: %v", err)
	}
	os.Remove(brokenClass)
	cycle := filepath.Join(store, "more", "again")
	link(filepath.Join(store, "bees"), cycle)
	if _, err := NewImageFolder(root, 8); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("link cycle: %v", err)
	}
}
