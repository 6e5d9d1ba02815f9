package data

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrUnavailable is wrapped when CIFAR-10 is neither on disk nor could be
// downloaded. The error's text says what to download and where to put it.
var ErrUnavailable = errors.New("data: dataset not available")

// CIFAR10ArchiveName is the archive's file name inside the data directory.
const CIFAR10ArchiveName = "cifar-10-binary.tar.gz"

// CIFAROptions says where CIFAR-10 lives and how to get it.
type CIFAROptions struct {
	// Dir is the data directory: it ends up holding cifar-10-batches-bin/
	// (and the downloaded archive). Required.
	Dir string
	// Mirror, if set, replaces the official URL. MirrorSum identifies the
	// file it serves; if MirrorSum has no digest the official checksum
	// applies (a true mirror serves the same bytes).
	Mirror    string
	MirrorSum Checksum
	// Archive, if set, is a local copy of the archive to use instead of
	// downloading. It is checked against ArchiveSum when that names a
	// digest; otherwise only its structure is checked (exact member list
	// and sizes, then every record when loaded).
	Archive    string
	ArchiveSum Checksum
	// Offline forbids any network access.
	Offline bool
	// Downloader fetches the archive (retries, resume, progress bar).
	Downloader Downloader
}

func (o CIFAROptions) source() (string, Checksum) {
	if o.Mirror == "" {
		return CIFAR10URL, CIFAR10Sum
	}
	if o.MirrorSum.IsZero() {
		return o.Mirror, CIFAR10Sum
	}
	return o.Mirror, o.MirrorSum
}

// EnsureCIFAR10 makes sure Dir/cifar-10-batches-bin/ holds a complete
// CIFAR-10 and returns its path. In order it uses: an existing complete
// directory; the local Archive option; Dir/cifar-10-binary.tar.gz if it
// verifies; a download from Mirror or the official URL (unless Offline).
// Extraction is atomic (see [ExtractArchive]). When nothing works the error
// wraps [ErrUnavailable] and tells the user what to download and where to
// put it.
func EnsureCIFAR10(ctx context.Context, o CIFAROptions) (string, error) {
	if o.Dir == "" {
		return "", fmt.Errorf("%w: no data directory given", ErrInvalid)
	}
	if err := o.MirrorSum.validate(); err != nil {
		return "", err
	}
	if err := o.ArchiveSum.validate(); err != nil {
		return "", err
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return "", fmt.Errorf("%w: data directory %q: %w", ErrInvalid, o.Dir, err)
	}
	batches := filepath.Join(dir, CIFARBatchesDir)
	if _, err := os.Stat(batches); err == nil {
		if err := CheckCIFARDir(batches); err != nil {
			return "", fmt.Errorf("%w; remove %s and run again to re-extract it", err, batches)
		}
		return batches, nil
	}
	archive := o.Archive
	switch {
	case archive != "":
		if !o.ArchiveSum.IsZero() {
			if err := VerifyFile(archive, o.ArchiveSum); err != nil {
				return "", err
			}
		}
	default:
		url, sum := o.source()
		archive = filepath.Join(dir, CIFAR10ArchiveName)
		if _, err := os.Stat(archive); err == nil {
			if err := VerifyFile(archive, sum); err != nil {
				return "", fmt.Errorf("%w; remove %s to download it again, or pass it as the local archive with its own checksum", err, archive)
			}
			break
		}
		if o.Offline {
			return "", unavailable(dir, url, sum, errors.New("offline mode"))
		}
		if err := o.Downloader.Download(ctx, url, archive, sum); err != nil {
			if errors.Is(err, ErrChecksum) || ctx.Err() != nil {
				return "", err
			}
			return "", unavailable(dir, url, sum, err)
		}
	}
	out, err := ExtractArchive(archive, dir, CIFARArchiveRules)
	if err != nil {
		return "", err
	}
	if err := CheckCIFARDir(out); err != nil {
		return "", err
	}
	return out, nil
}

// UnavailableError reports that CIFAR-10 is neither on disk nor could be
// downloaded. Its text tells the user what to download and where to put it.
// It wraps both [ErrUnavailable] and the cause.
type UnavailableError struct {
	Dir   string   // absolute data directory
	URL   string   // what should have been downloaded
	Sum   Checksum // how to recognise it
	Cause error    // why it could not be (offline mode, network error)
}

func unavailable(dir, url string, sum Checksum, cause error) error {
	return &UnavailableError{Dir: dir, URL: url, Sum: sum, Cause: cause}
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "data: CIFAR-10 is not in %s and could not be downloaded (%v).\n", e.Dir, e.Cause)
	fmt.Fprintf(&b, "On a machine with internet access download\n  %s\n  (%s)\n", e.URL, e.Sum)
	fmt.Fprintf(&b, "and save it as\n  %s\n", filepath.Join(e.Dir, CIFAR10ArchiveName))
	fmt.Fprintf(&b, "then run again; or pass its path as the local archive; or extract it so that\n  %s\nholds data_batch_1.bin ... data_batch_5.bin, test_batch.bin and batches.meta.txt.",
		filepath.Join(e.Dir, CIFARBatchesDir)+string(filepath.Separator))
	return b.String()
}

// Unwrap returns [ErrUnavailable] and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Cause} }

// CheckCIFARDir checks that dir (a cifar-10-batches-bin directory) holds
// every batch file with the official size and a readable class list. It
// does not read the records; [LoadCIFAR10] checks those.
func CheckCIFARDir(dir string) error {
	for _, name := range CIFARArchiveRules.Required {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%w: CIFAR-10 directory %s is incomplete: %w", ErrCorrupt, dir, err)
		}
		if name == CIFARMetaFile {
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("data: %w", err)
			}
			if _, err := ParseClassNames(p, b); err != nil {
				return err
			}
			continue
		}
		if want := int64(CIFARRecordsPerFile * CIFARRecordSize); fi.Size() != want {
			return fmt.Errorf("%w: %s is %d bytes, expected %d", ErrCorrupt, p, fi.Size(), want)
		}
	}
	return nil
}
