package data

import "fmt"

// ImageInfo describes how ReadImage turned a file into a model input.
type ImageInfo struct {
	Width, Height int // the decoded file's size in pixels
	ResizedW      int // the size after resizing the shorter side to Size
	ResizedH      int
	Size          int // the centre crop's side (the model input is 3 x Size x Size)
}

// String says what was done, e.g. "640x480 -> resized to 42x32 -> centre crop 32x32".
func (i ImageInfo) String() string {
	s := fmt.Sprintf("%dx%d", i.Width, i.Height)
	if i.ResizedW != i.Width || i.ResizedH != i.Height {
		s += fmt.Sprintf(" -> resized to %dx%d", i.ResizedW, i.ResizedH)
	}
	if i.ResizedW != i.Size || i.ResizedH != i.Size {
		s += fmt.Sprintf(" -> centre crop %dx%d", i.Size, i.Size)
	}
	return s
}

// ReadImage decodes one PNG or JPEG file the way [ImageFolder] reads its
// samples: converted to RGB, the shorter side resized to size (antialiased
// bilinear), centre-cropped to size x size, values in [0, 1], channel-major
// (3, size, size). Apply [EvalTransform] to it for a model input. Errors
// name the file; an undecodable file wraps ErrCorrupt.
func ReadImage(path string, size int) ([]float32, ImageInfo, error) {
	if size <= 0 {
		return nil, ImageInfo{}, fmt.Errorf("%w: image size %d", ErrInvalid, size)
	}
	file, _, err := openImage(path)
	if err != nil {
		return nil, ImageInfo{}, err
	}
	defer file.Close()
	img, err := decodeImage(file)
	if err != nil {
		return nil, ImageInfo{}, err
	}
	info := ImageInfo{Width: img.w, Height: img.h, ResizedW: size, ResizedH: size, Size: size}
	if img.w < img.h {
		info.ResizedH = int(float64(size) * float64(img.h) / float64(img.w))
	} else if img.h < img.w {
		info.ResizedW = int(float64(size) * float64(img.w) / float64(img.h))
	}
	dst := make([]float32, 3*size*size)
	resizeCrop(dst, img, size)
	return dst, info, nil
}
