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
func Quiet(l *zap.Logger) *zap.Logger {
	if os.Getenv("RINGTRAIN_LOG_LEVEL") == "debug" {
		return l
	}
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return minLevelCore{Core: c, min: zapcore.DPanicLevel}
	}))
}

// minLevelCore drops entries below min. (zap.IncreaseLevel refuses to
// raise the level of some cores; this wrapper always works.)
type minLevelCore struct {
	zapcore.Core
	min zapcore.Level
}

func (c minLevelCore) Enabled(l zapcore.Level) bool { return l >= c.min && c.Core.Enabled(l) }

func (c minLevelCore) With(f []zapcore.Field) zapcore.Core {
	return minLevelCore{Core: c.Core.With(f), min: c.min}
}

func (c minLevelCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.Enabled(e.Level) {
		return ce
	}
	return c.Core.Check(e, ce)
}
