package main

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// A killed child that nobody has reaped yet (a zombie) is not alive: its
// stale registration may be deleted at once.
func TestProcessAliveSeesZombiesAsDead(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	pid := cmd.Process.Pid
	if !processAlive(pid) {
		t.Fatal("a running child is not alive")
	}
	cmd.Process.Kill()
	// Wait for the child's death without reaping it (WNOWAIT): from then
	// on it is a zombie until cmd.Wait below.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Fatal("a killed, unreaped child still counts as alive")
	}
	cmd.Wait()
	if processAlive(pid) {
		t.Fatal("a reaped child is alive")
	}
}
