package allreduce

import (
	"errors"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if runChild() { // a child process of a multi-process test
		return
	}
	goleak.VerifyTestMain(m)
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
