package cli

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestQuietKeepsOnlySevereEntries(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	q := Quiet(zap.New(core)).With(zap.String("k", "v"))
	q.Info("routine")
	q.Warn("election")
	q.Error("shutdown noise")
	q.DPanic("severe")
	if logs.Len() != 1 || logs.All()[0].Message != "severe" {
		t.Fatalf("kept %v", logs.All())
	}
}
