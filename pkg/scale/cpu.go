package scale

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// cpuSample is the CPU time of some processes and of the machine.
type cpuSample struct {
	at        time.Time
	procTicks map[int]float64 // utime+stime of each process, clock ticks
	busy, all float64         // machine: non-idle and total ticks
}

const clkTck = 100 // USER_HZ on Linux

func sampleCPU(pids []int) cpuSample {
	s := cpuSample{at: time.Now(), procTicks: map[int]float64{}}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) in ")".
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			s.procTicks[pid] = u + st
		}
	}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return s
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, v := range fields[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			s.all += x
			if i != 3 && i != 4 { // idle, iowait
				s.busy += x
			}
		}
	}
	return s
}

// until returns the cores the processes used between s and e (those in
// both samples: one that exited in between took its ticks with it), the
// machine's busy fraction and its core count.
func (s cpuSample) until(e cpuSample) (cores, busy float64, n int) {
	n = runtime.NumCPU()
	d := e.at.Sub(s.at).Seconds()
	if d <= 0 || s.at.IsZero() {
		return 0, 0, n
	}
	var ticks float64
	for pid, t := range e.procTicks {
		if t0, ok := s.procTicks[pid]; ok {
			ticks += t - t0
		}
	}
	cores = ticks / clkTck / d
	if e.all > s.all {
		busy = (e.busy - s.busy) / (e.all - s.all)
	}
	return cores, busy, n
}
