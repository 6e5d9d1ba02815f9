package doccheck

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/ringtrain/ringtrain/pkg/job"
)

// root is the repository root, relative to this package's directory.
const root = "../.."

// docs returns the documentation files, relative to root.
func docs(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "BENCHMARKS.md"}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range more {
		rel, err := filepath.Rel(root, m)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v: is root (%s) the repository?", files, root)
	}
	return files
}

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// block is a fenced code block: its info string (```yaml → "yaml"), its
// text and the line it starts on.
type block struct {
	info string
	text string
	line int
}

// split separates a Markdown document into its prose (fenced code blocks
// replaced by empty lines, so line numbers stay) and its fenced blocks.
func split(doc string) (prose string, blocks []block) {
	var out strings.Builder
	var cur *block
	var fence string
	for i, line := range strings.Split(doc, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case cur == nil && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
			cur = &block{info: strings.TrimSpace(trimmed[3:]), line: i + 1}
		case cur != nil && strings.HasPrefix(trimmed, fence):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		default:
			out.WriteString(line)
		}
		out.WriteString("\n")
	}
	return out.String(), blocks
}

var (
	codeSpan = regexp.MustCompile("`[^`]*`")
	// [text](target) and ![alt](target); text may span lines.
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	heading    = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$`)
	htmlAnchor = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	linkText   = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// slug is GitHub's anchor for a heading: the rendered text lowercased,
// every character other than a letter, digit, space, '-' or '_' dropped,
// spaces turned into '-'.
func slug(h string) string {
	h = linkText.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// anchors returns the anchors of a Markdown document's headings (with
// GitHub's -1, -2 suffixes for repeated ones) and explicit <a name>s.
func anchors(doc string) map[string]bool {
	prose, _ := split(doc)
	set := map[string]bool{}
	seen := map[string]int{}
	for _, m := range heading.FindAllStringSubmatch(prose, -1) {
		s := slug(m[1])
		if n := seen[s]; n > 0 {
			set[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			set[s] = true
		}
		seen[s]++
	}
	for _, m := range htmlAnchor.FindAllStringSubmatch(prose, -1) {
		set[m[1]] = true
	}
	return set
}

func lineOf(text string, offset int) int { return strings.Count(text[:offset], "\n") + 1 }

// TestDocLinks checks every relative link of the documentation: the file
// or directory exists, and an #anchor into a Markdown file names one of
// its headings.
func TestDocLinks(t *testing.T) {
	var broken []string
	cache := map[string]map[string]bool{}
	for _, rel := range docs(t) {
		prose, _ := split(read(t, rel))
		// Code spans are no links; keep their length so offsets hold.
		prose = codeSpan.ReplaceAllStringFunc(prose, func(s string) string {
			return strings.Map(func(r rune) rune {
				if r == '\n' {
					return r
				}
				return ' '
			}, s)
		})
		for _, m := range inlineLink.FindAllStringSubmatchIndex(prose, -1) {
			target := prose[m[2]:m[3]]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			where := fmt.Sprintf("%s:%d: %s", rel, lineOf(prose, m[0]), target)
			file, anchor, _ := strings.Cut(target, "#")
			dest := rel
			if file != "" {
				dest = filepath.Join(filepath.Dir(rel), file)
				if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
					broken = append(broken, where+" (no such file)")
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			set, ok := cache[dest]
			if !ok {
				set = anchors(read(t, dest))
				cache[dest] = set
			}
			if !set[anchor] {
				broken = append(broken, where+" (no such heading)")
			}
		}
	}
	if len(broken) > 0 {
		t.Errorf("broken links in the documentation:\n  %s", strings.Join(broken, "\n  "))
	}
}

var (
	makeCall   = regexp.MustCompile(`(?:^|[^\w-])make\s+((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)([a-z][a-z0-9_.-]*)`)
	makeTarget = regexp.MustCompile(`(?m)^([A-Za-z0-9_.-][A-Za-z0-9_. -]*?)\s*::?(?:[^=]|$)`)
)

// targets returns the targets the Makefile and mk/*.mk define.
func targets(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "mk", "*.mk"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, f := range append([]string{filepath.Join(root, "Makefile")}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range makeTarget.FindAllStringSubmatch(string(b), -1) {
			for _, name := range strings.Fields(m[1]) {
				set[name] = true
			}
		}
	}
	if !set["build"] || !set["test"] {
		t.Fatalf("make targets not understood: %v", set)
	}
	return set
}

// TestDocMakeTargets checks that every `make TARGET` the documentation
// shows, in code spans and code blocks, is a target of the Makefile or
// mk/*.mk.
func TestDocMakeTargets(t *testing.T) {
	defined := targets(t)
	missing := map[string][]string{}
	for _, rel := range docs(t) {
		prose, blocks := split(read(t, rel))
		var code []string
		for _, m := range codeSpan.FindAllStringIndex(prose, -1) {
			code = append(code, fmt.Sprintf("%d\x00%s", lineOf(prose, m[0]), prose[m[0]+1:m[1]-1]))
		}
		for _, b := range blocks {
			for i, line := range strings.Split(b.text, "\n") {
				code = append(code, fmt.Sprintf("%d\x00%s", b.line+1+i, line))
			}
		}
		for _, c := range code {
			line, text, _ := strings.Cut(c, "\x00")
			for _, m := range makeCall.FindAllStringSubmatch(text, -1) {
				if !defined[m[2]] {
					missing[m[2]] = append(missing[m[2]], rel+":"+line)
				}
			}
		}
	}
	if len(missing) > 0 {
		var lines []string
		for name, where := range missing {
			lines = append(lines, fmt.Sprintf("make %s (%s)", name, strings.Join(where, ", ")))
		}
		sort.Strings(lines)
		t.Errorf("the documentation shows make targets that do not exist:\n  %s", strings.Join(lines, "\n  "))
	}
}

// TestDocJobFiles loads every ```yaml block of the documentation that is
// a job file and every examples/*.yaml as coordinator --config does:
// unknown keys and bad values are errors.
func TestDocJobFiles(t *testing.T) {
	dir := t.TempDir()
	type jobFile struct{ where, path string }
	var files []jobFile
	examples, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range examples {
		files = append(files, jobFile{strings.TrimPrefix(e, root+"/"), e})
	}
	for _, rel := range docs(t) {
		_, blocks := split(read(t, rel))
		for _, b := range blocks {
			if b.info != "yaml" {
				continue
			}
			p := filepath.Join(dir, fmt.Sprintf("%d.yaml", len(files)))
			if err := os.WriteFile(p, []byte(b.text), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, jobFile{fmt.Sprintf("%s:%d", rel, b.line), p})
		}
	}
	if len(examples) == 0 || len(files) == len(examples) {
		t.Fatalf("no examples/*.yaml or no yaml blocks in the documentation (%d files)", len(files))
	}
	for _, f := range files {
		s := job.Default()
		if err := s.LoadYAML(f.path); err != nil {
			t.Errorf("%s: %v", f.where, err)
			continue
		}
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", f.where, err)
		}
	}
}

// helmSet matches the argument of a `--set` of helm (quoted or not).
var helmSet = regexp.MustCompile(`--set[ =]'?([^\s']+)`)

// setKeys returns the value paths a `--set A=1,B.C=2` argument names.
func setKeys(arg string) []string {
	var keys []string
	depth, start := 0, 0
	for i := 0; i <= len(arg); i++ {
		if i < len(arg) {
			switch arg[i] {
			case '{', '[':
				depth++
				continue
			case '}', ']':
				depth--
				continue
			}
			if arg[i] != ',' || depth > 0 {
				continue
			}
		}
		if k, _, ok := strings.Cut(arg[start:i], "="); ok && k != "" {
			keys = append(keys, k)
		}
		start = i + 1
	}
	return keys
}

// TestDocHelmSetKeys checks that every `--set KEY=VALUE` of the chart the
// documentation shows names a key of deploy/helm/ringtrain/values.yaml
// (helm accepts unknown keys silently, so a misspelt one is ignored).
func TestDocHelmSetKeys(t *testing.T) {
	has, err := HelmValues(filepath.Join(root, "deploy", "helm", "ringtrain", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	n := 0
	for _, rel := range docs(t) {
		doc := read(t, rel)
		for _, m := range helmSet.FindAllStringSubmatchIndex(doc, -1) {
			for _, k := range setKeys(doc[m[2]:m[3]]) {
				n++
				if !has(k) {
					bad = append(bad, fmt.Sprintf("%s:%d: --set %s", rel, lineOf(doc, m[0]), k))
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no --set in the documentation: is the pattern right?")
	}
	if len(bad) > 0 {
		t.Errorf("--set keys that deploy/helm/ringtrain/values.yaml does not have:\n  %s", strings.Join(bad, "\n  "))
	}
}

// repoPath matches a code span that is a path in the repository (the top
// directories that hold sources, scripts and documentation), with an
// optional Go symbol (`pkg/worker.Run`) or test (`e2e/TestChaos`).
var repoPath = regexp.MustCompile(`^(?:\./)?((?:cmd|pkg|internal|scripts|deploy|docs|examples|mk|e2e|proto)/[A-Za-z0-9_./-]*?)(?:\.([A-Z]\w*))?/?$`)

// TestDocRepoPaths checks that every repository path the documentation
// names in a code span (`pkg/gpu/graph.go`, `scripts/gpu-check.sh`) exists;
// a span ending in an exported name (`pkg/worker.Run`, `e2e/TestChaos`)
// needs its package directory.
func TestDocRepoPaths(t *testing.T) {
	var missing []string
	n := 0
	for _, rel := range docs(t) {
		prose, _ := split(read(t, rel))
		for _, m := range codeSpan.FindAllStringIndex(prose, -1) {
			span := prose[m[0]+1 : m[1]-1]
			if strings.Contains(span, "...") {
				continue
			}
			p := repoPath.FindStringSubmatch(span)
			if p == nil {
				continue
			}
			n++
			path := p[1]
			if _, err := os.Stat(filepath.Join(root, path)); err == nil {
				continue
			}
			// e2e/TestChaos: a test or symbol in the package directory.
			if dir, base := filepath.Split(path); base != "" && unicode.IsUpper([]rune(base)[0]) {
				if _, err := os.Stat(filepath.Join(root, dir)); err == nil {
					continue
				}
			}
			missing = append(missing, fmt.Sprintf("%s:%d: %s", rel, lineOf(prose, m[0]), span))
		}
	}
	if n < 20 {
		t.Fatalf("only %d repository paths found in the documentation: is the pattern right?", n)
	}
	if len(missing) > 0 {
		t.Errorf("the documentation names paths the repository does not have:\n  %s", strings.Join(missing, "\n  "))
	}
}
