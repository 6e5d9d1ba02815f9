// Package cli holds what the ringtrain binaries share: logging setup and
// backend selection.
package cli

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// LogOptions configure NewLogger and Quiet. The zero value logs at info
// level, as console text on a terminal and JSON lines otherwise. The
// binaries fill it from $RINGTRAIN_LOG and $RINGTRAIN_LOG_LEVEL
// (cmd/internal/env); this package reads no environment.
type LogOptions struct {
	// Format is "json", "console" or "" (console on a terminal, JSON
	// lines otherwise: files, pipes, log collectors). Any other value is
	// treated as "".
	Format string
	// Level is "debug", "info", "warn" or "error"; "" or an unknown value
	// means info. At debug, Quiet keeps everything.
	Level string
}

// NewLogger returns a zap logger named name, formatted and filtered as o
// says.
func NewLogger(name string, o LogOptions) *zap.Logger {
	console := term.IsTerminal(int(os.Stderr.Fd()))
	switch o.Format {
	case "json":
		console = false
	case "console":
		console = true
	}
	level := zapcore.InfoLevel
	if o.Level != "" {
		_ = level.Set(o.Level)
	}
	var enc zapcore.Encoder
	if console {
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), level)
	return zap.New(core).Named(name)
}

// Quiet returns l restricted to errors that matter: libraries (etcd, raft)
// log routine events (elections, shutdown) at warn and error levels. With
// o.Level "debug" everything is kept.
//
// The filter drops entries below DPanic in Check but keeps reporting the
// wrapped core's Enabled, so that a library raising the level itself
// (zap.IncreaseLevel, as etcd does) still works.
func Quiet(l *zap.Logger, o LogOptions) *zap.Logger {
	if o.Level == "debug" {
		return l
	}
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return quietCore{c} }))
}

// quietCore drops entries below DPanic.
type quietCore struct{ zapcore.Core }

func (q quietCore) With(f []zapcore.Field) zapcore.Core { return quietCore{q.Core.With(f)} }

func (q quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Level < zapcore.DPanicLevel {
		return ce
	}
	return q.Core.Check(e, ce)
}
