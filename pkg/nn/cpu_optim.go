package nn

// Optimizer kernels of the CPU backend. (Placeholders until implemented.)

func (c *CPU) SGDStep(p, g, buf *Tensor, o SGDParams, first bool) { panic("nn: SGDStep not implemented") }
func (c *CPU) AdamStep(p, g, m, v, vMax *Tensor, o AdamParams)     { panic("nn: AdamStep not implemented") }
func (c *CPU) AdagradStep(p, g, sum *Tensor, o AdagradParams)      { panic("nn: AdagradStep not implemented") }
func (c *CPU) RMSpropStep(p, g, sq, buf, gAvg *Tensor, o RMSpropParams) {
	panic("nn: RMSpropStep not implemented")
}
