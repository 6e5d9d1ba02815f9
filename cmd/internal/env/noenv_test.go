package env

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// envFuncs are the functions that read (or change) the process
// environment, by import path. os.UserCacheDir, os.UserHomeDir and
// os.TempDir are not listed: they are the platform's directory conventions
// (XDG_CACHE_HOME, HOME, TMPDIR), not ringtrain's configuration. A child
// process inherits the environment through exec.Cmd.Environ, which is no
// read of configuration either.
var envFuncs = map[string]map[string]bool{
	"os":      {"Getenv": true, "LookupEnv": true, "Environ": true, "ExpandEnv": true, "Setenv": true, "Unsetenv": true, "Clearenv": true},
	"syscall": {"Getenv": true, "Environ": true, "Setenv": true, "Unsetenv": true, "Clearenv": true},
}

// envUses returns "file:line: pkg.Func" for every reference (call or
// value) to an envFuncs function in the parsed file f, however os or
// syscall is imported.
func envUses(fset *token.FileSet, f *ast.File) []string {
	names := map[string]string{} // local name -> import path
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		if envFuncs[p] == nil {
			continue
		}
		name := filepath.Base(p)
		if im.Name != nil {
			name = im.Name.Name
		}
		names[name] = p
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok || id.Obj != nil { // id.Obj != nil: a local variable, not the package
			return true
		}
		if p, ok := names[id.Name]; ok && envFuncs[p][sel.Sel.Name] {
			out = append(out, fset.Position(sel.Pos()).String()+": "+p+"."+sel.Sel.Name)
		}
		return true
	})
	return out
}

// TestLibrariesReadNoEnvironment: outside cmd/, no Go file but tests
// reads the environment (issue 13): libraries take options, and the
// binaries read the variables in cmd/ (this package for the shared ones).
// Generated, example and tool main packages outside cmd/ are held to the
// same rule; there is no allow-list.
func TestLibrariesReadNoEnvironment(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			base := d.Name()
			if rel == "cmd" || base == "testdata" || base == "vendor" || base == "node_modules" ||
				(strings.HasPrefix(base, ".") && rel != ".") {
				return filepath.SkipDir
			}
			if rel != "." {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0) // objects resolved: locals named os are told apart
		if err != nil {
			return err
		}
		files++
		for _, u := range envUses(fset, f) {
			t.Errorf("%s: libraries read no environment; take an option and read the variable in cmd/", strings.TrimPrefix(u, root+string(filepath.Separator)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("checked only %d files under %s: the walk is broken", files, root)
	}
	t.Logf("%d non-test Go files outside cmd/ read no environment", files)
}

// TestEnvUsesFindsReads: the checker sees calls, values and renamed
// imports, and leaves locals named os alone.
func TestEnvUsesFindsReads(t *testing.T) {
	src := `package p
import (
	"os"
	sc "syscall"
)
var getenv = os.Getenv
func a() string { v, _ := os.LookupEnv("X"); return v + os.Getenv("Y") }
func b() []string { return append(os.Environ(), sc.Environ()...) }
func c() { x, _ := sc.Getenv("Z"); _ = x; _ = os.ExpandEnv("$HOME") }
func d(os struct{ Getenv int }) int { return os.Getenv }
func e() string { return os.TempDir() }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := envUses(fset, f)
	want := []string{"os.Getenv", "os.LookupEnv", "os.Getenv", "os.Environ", "syscall.Environ", "syscall.Getenv", "os.ExpandEnv"}
	if len(got) != len(want) {
		t.Fatalf("found %d uses %q, want %d (%q)", len(got), got, len(want), want)
	}
	for i, w := range want {
		if !strings.HasSuffix(got[i], ": "+w) {
			t.Errorf("use %d = %q, want %s", i, got[i], w)
		}
	}
}
