package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// childAttr makes a local worker receive SIGKILL when the coordinator
// dies, so that no orphan keeps training for a job nobody coordinates.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// processAlive reports whether a process with this pid exists and is not
// a zombie (a killed worker whose parent died waits as one until init
// reaps it, which may take a while in a container).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // cannot tell: alive
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		switch b[i+2] {
		case 'Z', 'X':
			return false
		}
	}
	return true
}
