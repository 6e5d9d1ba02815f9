package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
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
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) { // a zombie until Wait below
		if time.Now().After(deadline) {
			t.Fatal("a killed, unreaped child still counts as alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Wait()
	if processAlive(pid) {
		t.Fatal("a reaped child is alive")
	}
}
