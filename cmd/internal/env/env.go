// Package env is where the ringtrain binaries read the environment
// variables they share; libraries (pkg/, internal/) read none and take
// options instead (TestLibrariesReadNoEnvironment keeps it so). A binary's
// own variables (e.g. the worker's $RINGTRAIN_HTTP_TOKEN, the default of
// its --http-token) are read beside its flags. docs/architecture.md
// ("Configuration") lists every variable.
//
// It imports no compute package, so the coordinator can use it.
package env

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/ringtrain/ringtrain/internal/cli"
)

// Names of the variables read here.
const (
	LogFormat  = "RINGTRAIN_LOG"          // json | console (default: console on a terminal)
	LogLevel   = "RINGTRAIN_LOG_LEVEL"    // debug | info | warn | error
	CUDALibDir = "RINGTRAIN_CUDA_LIB_DIR" // a directory holding the CUDA libraries
)

// Log returns the logging options of $RINGTRAIN_LOG and
// $RINGTRAIN_LOG_LEVEL.
func Log() cli.LogOptions {
	return cli.LogOptions{Format: os.Getenv(LogFormat), Level: os.Getenv(LogLevel)}
}

// CUDASearch returns where, besides a --cuda-lib-dir flag and the standard
// places, the CUDA libraries are looked for (gpu.Options.LibPath and
// PythonRoots): libPath is $RINGTRAIN_CUDA_LIB_DIR then the entries of
// $LD_LIBRARY_PATH; pythonRoots are $VIRTUAL_ENV and $HOME/.local, whose
// site-packages may hold NVIDIA's Python wheels.
func CUDASearch() (libPath, pythonRoots []string) {
	return cudaSearch(os.Getenv)
}

func cudaSearch(getenv func(string) string) (libPath, pythonRoots []string) {
	if d := getenv(CUDALibDir); d != "" {
		libPath = append(libPath, d)
	}
	for _, d := range strings.Split(getenv("LD_LIBRARY_PATH"), ":") {
		if d != "" {
			libPath = append(libPath, d)
		}
	}
	if v := getenv("VIRTUAL_ENV"); v != "" {
		pythonRoots = append(pythonRoots, v)
	}
	if h := getenv("HOME"); h != "" {
		pythonRoots = append(pythonRoots, filepath.Join(h, ".local"))
	}
	return libPath, pythonRoots
}
