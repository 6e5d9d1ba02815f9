package nn

import "syscall"

// yieldThread offers the core to any other runnable thread (sched_yield):
// on an idle core it returns at once; on a core shared with another busy
// thread (ours or a neighbour's), a waiting goroutine stops taking time
// from it.
func yieldThread() { _, _, _ = syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }
