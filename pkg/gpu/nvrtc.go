package gpu

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// nvrtc holds the NVRTC entry points. Every function returns an
// nvrtcResult (0 = NVRTC_SUCCESS).
type nvrtc struct {
	lib *library

	nvrtcVersion           func(major, minor *int32) int32
	nvrtcGetErrorString    func(code int32) string
	nvrtcCreateProgram     func(prog *uintptr, src string, name string, nHeaders int32, headers, includeNames uintptr) int32
	nvrtcDestroyProgram    func(prog *uintptr) int32
	nvrtcCompileProgram    func(prog uintptr, nOpts int32, opts unsafe.Pointer) int32
	nvrtcGetProgramLogSize func(prog uintptr, n *uint64) int32
	nvrtcGetProgramLog     func(prog uintptr, log *byte) int32
	nvrtcGetCUBINSize      func(prog uintptr, n *uint64) int32
	nvrtcGetCUBIN          func(prog uintptr, out *byte) int32
	nvrtcGetPTXSize        func(prog uintptr, n *uint64) int32
	nvrtcGetPTX            func(prog uintptr, out *byte) int32
}

// nvrtcNames are the sonames tried, newest first.
var nvrtcNames = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}

func loadNVRTC(dirs []string) (*nvrtc, error) {
	lib, err := openLibrary("NVRTC", nvrtcNames, dirs, nil)
	if err != nil {
		return nil, err
	}
	n := &nvrtc{lib: lib}
	for _, s := range []struct {
		f    any
		name string
	}{
		{&n.nvrtcVersion, "nvrtcVersion"},
		{&n.nvrtcGetErrorString, "nvrtcGetErrorString"},
		{&n.nvrtcCreateProgram, "nvrtcCreateProgram"},
		{&n.nvrtcDestroyProgram, "nvrtcDestroyProgram"},
		{&n.nvrtcCompileProgram, "nvrtcCompileProgram"},
		{&n.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize"},
		{&n.nvrtcGetProgramLog, "nvrtcGetProgramLog"},
		{&n.nvrtcGetCUBINSize, "nvrtcGetCUBINSize"},
		{&n.nvrtcGetCUBIN, "nvrtcGetCUBIN"},
		{&n.nvrtcGetPTXSize, "nvrtcGetPTXSize"},
		{&n.nvrtcGetPTX, "nvrtcGetPTX"},
	} {
		if err := lib.sym(s.f, s.name); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// version returns NVRTC's "major.minor".
func (n *nvrtc) version() (string, error) {
	var ma, mi int32
	if r := n.nvrtcVersion(&ma, &mi); r != 0 {
		return "", n.err("nvrtcVersion", r, "")
	}
	return fmt.Sprintf("%d.%d", ma, mi), nil
}

func (n *nvrtc) err(call string, code int32, log string) error {
	msg := fmt.Sprintf("%s: %s failed with nvrtcResult %d (%s)", ErrNVRTC, call, code, n.nvrtcGetErrorString(code))
	if log != "" {
		msg += "\n" + log
	}
	return &wrapped{msg: msg, base: ErrNVRTC}
}

// wrapped is an error with a formatted message that unwraps to a sentinel.
type wrapped struct {
	msg  string
	base error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.base }

// compile compiles src for arch ("sm_90" gives a CUBIN; "compute_90" gives
// PTX) and returns the image for cuModuleLoadData (NUL-terminated for PTX).
func (n *nvrtc) compile(src, name, arch string, extra []string) ([]byte, error) {
	var prog uintptr
	if r := n.nvrtcCreateProgram(&prog, src, name, 0, 0, 0); r != 0 {
		return nil, n.err("nvrtcCreateProgram", r, "")
	}
	defer n.nvrtcDestroyProgram(&prog)

	opts := append([]string{"--gpu-architecture=" + arch, "--std=c++17"}, extra...)
	// A C array of C strings: NUL-terminated byte slices kept alive and
	// pinned for the duration of the call.
	cstrs := make([][]byte, len(opts))
	ptrs := make([]uintptr, len(opts))
	var pin runtime.Pinner
	defer pin.Unpin()
	for i, o := range opts {
		cstrs[i] = append([]byte(o), 0)
		pin.Pin(&cstrs[i][0])
		ptrs[i] = uintptr(unsafe.Pointer(&cstrs[i][0]))
	}
	pin.Pin(&ptrs[0])
	r := n.nvrtcCompileProgram(prog, int32(len(opts)), unsafe.Pointer(&ptrs[0]))
	runtime.KeepAlive(cstrs)
	log := n.log(prog)
	if r != 0 {
		return nil, n.err("nvrtcCompileProgram("+strings.Join(opts, " ")+")", r, log)
	}
	var size uint64
	var img []byte
	if strings.HasPrefix(arch, "sm_") {
		if r := n.nvrtcGetCUBINSize(prog, &size); r != 0 {
			return nil, n.err("nvrtcGetCUBINSize", r, log)
		}
		if size == 0 {
			return nil, n.err("nvrtcGetCUBINSize (empty)", 0, log)
		}
		img = make([]byte, size)
		if r := n.nvrtcGetCUBIN(prog, &img[0]); r != 0 {
			return nil, n.err("nvrtcGetCUBIN", r, log)
		}
		return img, nil
	}
	if r := n.nvrtcGetPTXSize(prog, &size); r != 0 {
		return nil, n.err("nvrtcGetPTXSize", r, log)
	}
	img = make([]byte, size+1)
	if r := n.nvrtcGetPTX(prog, &img[0]); r != 0 {
		return nil, n.err("nvrtcGetPTX", r, log)
	}
	return img, nil
}

func (n *nvrtc) log(prog uintptr) string {
	var size uint64
	if n.nvrtcGetProgramLogSize(prog, &size) != 0 || size <= 1 {
		return ""
	}
	b := make([]byte, size)
	if n.nvrtcGetProgramLog(prog, &b[0]) != 0 {
		return ""
	}
	return strings.TrimRight(string(b), "\x00\n ")
}
