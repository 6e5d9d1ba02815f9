//go:build race

package data

// raceEnabled: the race detector's shadow memory multiplies a process's
// RSS, so RSS bounds are meaningless.
const raceEnabled = true
