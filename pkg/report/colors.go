package report

import "image/color"

var plotColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // train: blue
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // validation: orange
}
