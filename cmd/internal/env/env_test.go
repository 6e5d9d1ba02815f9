package env

import (
	"reflect"
	"testing"
)

func TestCUDASearch(t *testing.T) {
	vars := map[string]string{
		CUDALibDir:        "/opt/cuda-libs",
		"LD_LIBRARY_PATH": "/a::/b",
		"VIRTUAL_ENV":     "/venv",
		"HOME":            "/home/u",
	}
	lib, py := cudaSearch(func(k string) string { return vars[k] })
	if want := []string{"/opt/cuda-libs", "/a", "/b"}; !reflect.DeepEqual(lib, want) {
		t.Errorf("libPath = %q, want %q", lib, want)
	}
	if want := []string{"/venv", "/home/u/.local"}; !reflect.DeepEqual(py, want) {
		t.Errorf("pythonRoots = %q, want %q", py, want)
	}
	lib, py = cudaSearch(func(string) string { return "" })
	if lib != nil || py != nil {
		t.Errorf("empty environment: %q, %q; want nothing", lib, py)
	}
}

func TestLog(t *testing.T) {
	t.Setenv(LogFormat, "json")
	t.Setenv(LogLevel, "debug")
	if o := Log(); o.Format != "json" || o.Level != "debug" {
		t.Fatalf("Log() = %+v", o)
	}
}
