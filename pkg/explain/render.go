package explain

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// displaySide is the side in pixels at which images are drawn in figures
// (inputs are scaled up by pixel replication, maps by bilinear resizing).
const displaySide = 224

// Figure is what a PNG of an explanation shows besides the map.
type Figure struct {
	RGB   []float32 // the input as the model saw it, before normalisation: (3,H,W) in [0,1]
	H, W  int
	Title string // above the input, e.g. "cat.png: cat (0.93)"
}

// toImage scales a (3,h,w) [0,1] image to side x side by pixel replication.
func toImage(rgb []float32, h, w, side int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	px := func(v float32) uint8 { return uint8(math.Round(255 * math.Min(math.Max(float64(v), 0), 1))) }
	for y := range side {
		sy := y * h / side
		for x := range side {
			sx := x * w / side
			i := sy*w + sx
			img.SetRGBA(x, y, color.RGBA{px(rgb[i]), px(rgb[h*w+i]), px(rgb[2*h*w+i]), 255})
		}
	}
	return img
}

// blend mixes the colours of cm at the values of m (side x side) into img
// with opacity alpha.
func blend(img *image.RGBA, m []float32, cm palette.ColorMap, alpha float64) {
	side := img.Bounds().Dx()
	for y := range side {
		for x := range side {
			c, err := cm.At(float64(m[y*side+x]))
			if err != nil { // outside the range: clamp
				if float64(m[y*side+x]) < cm.Min() {
					c, _ = cm.At(cm.Min())
				} else {
					c, _ = cm.At(cm.Max())
				}
			}
			r, g, b, _ := c.RGBA()
			o := img.RGBAAt(x, y)
			mix := func(a uint8, b uint32) uint8 {
				return uint8(math.Round((1-alpha)*float64(a) + alpha*float64(b>>8)))
			}
			img.SetRGBA(x, y, color.RGBA{mix(o.R, r), mix(o.G, g), mix(o.B, b), 255})
		}
	}
}

// imagePanel draws img filling a square plot with a title and no axes.
func imagePanel(c draw.Canvas, img image.Image, title string) {
	p := plot.New()
	p.Title.Text = title
	p.HideAxes()
	p.Add(plotter.NewImage(img, 0, 0, 1, 1))
	p.Draw(c)
}

// colourBar draws a vertical colour bar of cm labelled label.
func colourBar(c draw.Canvas, cm palette.ColorMap, label string) {
	p := plot.New()
	p.HideX()
	p.Y.Label.Text = label
	p.Add(&plotter.ColorBar{ColorMap: cm, Vertical: true})
	p.Draw(c)
}

// threePanels lays out input | overlay | colour bar on one PNG canvas.
func threePanels(path string, f Figure, overlay image.Image, overlayTitle string, cm palette.ColorMap, label string) error {
	const wIn, hIn = 8.0, 3.8
	cv := vgimg.PngCanvas{Canvas: vgimg.New(wIn*vg.Inch, hIn*vg.Inch)}
	dc := draw.New(cv)
	panel := vg.Length(3.4) * vg.Inch
	imagePanel(draw.Crop(dc, 0, -(dc.Max.X-panel), 0, 0), toImage(f.RGB, f.H, f.W, displaySide), f.Title)
	imagePanel(draw.Crop(dc, panel, -(dc.Max.X-2*panel), 0, 0), overlay, overlayTitle)
	colourBar(draw.Crop(dc, 2*panel+0.2*vg.Inch, 0, 0.35*vg.Inch, -0.35*vg.Inch), cm, label)
	var buf bytes.Buffer
	if _, err := cv.WriteTo(&buf); err != nil {
		return fmt.Errorf("explain: render %s: %w", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	return nil
}

// WriteGradCAMPNG writes the input and the Grad-CAM map overlaid on it
// (a black-body colour scale from 0 to the map's maximum) with a colour
// bar, as a PNG.
func WriteGradCAMPNG(path string, f Figure, g *GradCAM, className string) error {
	if len(f.RGB) != 3*f.H*f.W || f.H != g.H || f.W != g.W {
		return fmt.Errorf("%w: figure image %dx%d does not match the map's input %dx%d", ErrInput, f.H, f.W, g.H, g.W)
	}
	var peak float64
	for _, v := range g.Map {
		peak = math.Max(peak, float64(v))
	}
	cm := moreland.ExtendedBlackBody()
	cm.SetMin(0)
	cm.SetMax(math.Max(peak, 1e-12))
	img := toImage(f.RGB, f.H, f.W, displaySide)
	blend(img, Bilinear(g.Map, g.P, g.Q, displaySide, displaySide), cm, 0.5)
	title := fmt.Sprintf("Grad-CAM %s, class %s", g.Layer, className)
	return threePanels(path, f, img, title, cm, fmt.Sprintf("Grad-CAM (%dx%d map)", g.P, g.Q))
}

// WriteShapleyPNG writes the input and the patches' Shapley values over a
// grey copy of it (blue negative, red positive, symmetric around 0) with a
// colour bar, as a PNG.
func WriteShapleyPNG(path string, f Figure, s *Shapley, className string) error {
	if len(f.RGB) != 3*f.H*f.W {
		return fmt.Errorf("%w: figure image of %d values for 3x%dx%d", ErrInput, len(f.RGB), f.H, f.W)
	}
	var peak float64
	for _, v := range s.Values {
		peak = math.Max(peak, math.Abs(v))
	}
	peak = math.Max(peak, 1e-12)
	cm := moreland.SmoothBlueRed()
	cm.SetMin(-peak)
	cm.SetMax(peak)
	grey := make([]float32, len(f.RGB))
	n := f.H * f.W
	for i := range n {
		l := 0.299*f.RGB[i] + 0.587*f.RGB[n+i] + 0.114*f.RGB[2*n+i]
		grey[i], grey[n+i], grey[2*n+i] = l, l, l
	}
	img := toImage(grey, f.H, f.W, displaySide)
	m := make([]float32, displaySide*displaySide)
	for y := range displaySide {
		for x := range displaySide {
			m[y*displaySide+x] = float32(s.Values[(y*s.Grid/displaySide)*s.Grid+x*s.Grid/displaySide])
		}
	}
	blend(img, m, cm, 0.75)
	how := fmt.Sprintf("%d permutations", s.Samples)
	if s.Samples == 0 {
		how = "exact"
	}
	title := fmt.Sprintf("Shapley %dx%d, class %s (%s)", s.Grid, s.Grid, className, how)
	return threePanels(path, f, img, title, cm, "Shapley value (logit)")
}
