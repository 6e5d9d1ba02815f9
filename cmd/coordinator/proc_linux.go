package main

import (
	"errors"
	"syscall"
)

// childAttr makes a local worker receive SIGKILL when the coordinator
// dies, so that no orphan keeps training for a job nobody coordinates.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
