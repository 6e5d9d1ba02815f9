// Package cli holds what the ringtrain binaries share: logging setup and
// backend selection.
package cli

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// NewLogger returns a zap logger: human-readable with colours on a
// terminal, JSON lines otherwise (files, pipes, log collectors). The
// environment variable RINGTRAIN_LOG=json|console overrides the choice and
// RINGTRAIN_LOG_LEVEL=debug|info|warn|error sets the level.
func NewLogger(name string) *zap.Logger {
	console := term.IsTerminal(int(os.Stderr.Fd()))
	switch os.Getenv("RINGTRAIN_LOG") {
	case "json":
		console = false
	case "console":
		console = true
	}
	level := zapcore.InfoLevel
	if l := os.Getenv("RINGTRAIN_LOG_LEVEL"); l != "" {
		_ = level.Set(l)
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
// RINGTRAIN_LOG_LEVEL=debug everything is kept.
//
// The filter drops entries below DPanic in Check but keeps reporting the
// wrapped core's Enabled, so that a library raising the level itself
// (zap.IncreaseLevel, as etcd does) still works.
func Quiet(l *zap.Logger) *zap.Logger {
	if os.Getenv("RINGTRAIN_LOG_LEVEL") == "debug" {
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
