package gpu

// openEmuGraph is openEmu with the emulator's graph twin (filled in with
// the graph capture).
func openEmuGraph(prec string) (*Backend, error) { return openEmu(prec) }
