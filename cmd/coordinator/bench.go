package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/cobra"
)

// benchCmd is `coordinator bench`: the scale-out sweep of docs/scale.md.
// The sweep times the real model and starts its own etcd, so it lives in
// its own binary (scalebench, built beside this one by `make build`) and
// the coordinator binary links neither the engine nor etcd's server (see
// deps_test.go); this command replaces itself with that binary, passing
// every argument on.
func benchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "bench [scalebench flags]",
		Short: "Scale-out benchmark: a sweep of real jobs over worker counts, emulated hosts and links, and the model's prediction (runs scalebench; see 'coordinator bench --help')",
		Example: `  coordinator bench                                  # 1,2,4,8 workers on this machine
  coordinator bench --emulate-hosts 8 --link 500mbit  # one network namespace per worker (root)
  coordinator bench --predict --workers 8,64,512 --link 25gbit,100gbit --compute 9.7ms
  coordinator bench --coordinator c0:7070,c1:7070,c2:7070  # a running cluster's registered workers`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := siblingBinary("scalebench", os.Getenv("RINGTRAIN_SCALEBENCH"), "RINGTRAIN_SCALEBENCH=PATH")
			if err != nil {
				return err
			}
			if err := syscall.Exec(bin, append([]string{bin}, args...), os.Environ()); err != nil {
				return fmt.Errorf("bench: run %s: %w", bin, err)
			}
			return nil
		},
	}
}
