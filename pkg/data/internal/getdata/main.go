// Command getdata makes sure CIFAR-10 is ready in a data directory:
// downloads it (progress bar, retries, resume, checksum) or takes a local
// archive, extracts it safely, and prints the path of
// cifar-10-batches-bin/. `make data` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/ringtrain/ringtrain/pkg/data"
)

func main() {
	var o data.CIFAROptions
	flag.StringVar(&o.Dir, "dir", "data", "data directory (gets cifar-10-batches-bin/)")
	flag.StringVar(&o.Mirror, "mirror", "", "download from this URL instead of "+data.CIFAR10URL)
	flag.StringVar(&o.MirrorSum.MD5, "mirror-md5", "", "MD5 of the mirror's file (default: the official one)")
	flag.StringVar(&o.MirrorSum.SHA256, "mirror-sha256", "", "SHA-256 of the mirror's file")
	flag.Int64Var(&o.MirrorSum.Size, "mirror-size", 0, "size in bytes of the mirror's file (optional)")
	flag.StringVar(&o.Archive, "archive", "", "use this local cifar-10-binary.tar.gz instead of downloading")
	flag.StringVar(&o.ArchiveSum.MD5, "archive-md5", "", "MD5 the local archive must have (optional)")
	flag.StringVar(&o.ArchiveSum.SHA256, "archive-sha256", "", "SHA-256 the local archive must have (optional)")
	flag.BoolVar(&o.Offline, "offline", false, "never use the network")
	flag.Parse()
	o.Downloader.Progress = os.Stderr
	o.Downloader.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := data.EnsureCIFAR10(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(dir)
}
