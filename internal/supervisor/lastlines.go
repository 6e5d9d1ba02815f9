package supervisor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// tailBytes is how much of the end of a log LastErrorLines reads.
const tailBytes = 64 << 10

// maxLine bounds one line LastErrorLines returns (an error may quote
// user input of any length).
const maxLine = 400

// LastErrorLines returns up to n of the last lines of the log at path that
// say what went wrong: plain lines (a worker's final error, a Go panic)
// and JSON log lines of level warn or above (shown as "level msg: error");
// JSON lines of lower levels are skipped. Lines are cut at 400 bytes. A
// log that cannot be read gives one line saying so.
func LastErrorLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return []string{fmt.Sprintf("(log not readable: %v)", err)}
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > tailBytes {
		_, _ = f.Seek(fi.Size()-tailBytes, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tailBytes))
	lines := bytes.Split(b, []byte("\n"))
	var out []string
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		l := strings.TrimSpace(string(lines[i]))
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "{") {
			var rec struct {
				Level string `json:"level"`
				Msg   string `json:"msg"`
				Error string `json:"error"`
			}
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Level != "" {
				switch rec.Level {
				case "debug", "info":
					continue
				}
				l = rec.Level + " " + rec.Msg
				if rec.Error != "" {
					l += ": " + rec.Error
				}
			}
		}
		if len(l) > maxLine {
			l = l[:maxLine] + fmt.Sprintf("... (%d bytes more)", len(l)-maxLine)
		}
		out = append(out, l)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if len(out) == 0 {
		return []string{"(nothing in the log)"}
	}
	return out
}

func indent(lines []string) string {
	return "  " + strings.Join(lines, "\n  ")
}
