package cli

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestQuietKeepsOnlySevereEntries(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	q := Quiet(zap.New(core), LogOptions{}).With(zap.String("k", "v"))
	q.Info("routine")
	q.Warn("election")
	q.Error("shutdown noise")
	q.DPanic("severe")
	if logs.Len() != 1 || logs.All()[0].Message != "severe" {
		t.Fatalf("kept %v", logs.All())
	}
}

func TestQuietKeepsEverythingAtDebug(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	q := Quiet(zap.New(core), LogOptions{Level: "debug"})
	q.Info("routine")
	q.Warn("election")
	if logs.Len() != 2 {
		t.Fatalf("kept %v, want both entries", logs.All())
	}
}

func TestNewLoggerLevel(t *testing.T) {
	for _, tc := range []struct {
		level string
		want  zapcore.Level // the lowest level enabled
	}{{"", zapcore.InfoLevel}, {"debug", zapcore.DebugLevel}, {"warn", zapcore.WarnLevel}, {"error", zapcore.ErrorLevel}, {"loud", zapcore.InfoLevel}} {
		for _, format := range []string{"", "json", "console"} {
			l := NewLogger("t", LogOptions{Format: format, Level: tc.level})
			if !l.Core().Enabled(tc.want) || (tc.want > zapcore.DebugLevel && l.Core().Enabled(tc.want-1)) {
				t.Errorf("format %q level %q: lowest enabled level is not %v", format, tc.level, tc.want)
			}
		}
	}
}
