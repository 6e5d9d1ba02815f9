package data

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Download errors. Test with errors.Is.
var (
	// ErrChecksum is wrapped when a file's size or digest differs from the
	// expected one.
	ErrChecksum = errors.New("data: checksum mismatch")
	// ErrDownload is wrapped when a download failed for good: a permanent
	// HTTP status or every retry spent.
	ErrDownload = errors.New("data: download failed")
)

// Checksum identifies the exact bytes of a file. At least one digest must
// be set for a download to be verifiable; Size, when non-zero, is checked
// too (and lets a complete partial download be recognised).
type Checksum struct {
	Size   int64  // bytes; 0 if unknown
	MD5    string // lowercase hex, 32 digits; "" if unused
	SHA256 string // lowercase hex, 64 digits; "" if unused
}

// IsZero reports whether no digest is set.
func (c Checksum) IsZero() bool { return c.MD5 == "" && c.SHA256 == "" }

func (c Checksum) validate() error {
	check := func(name, v string, n int) error {
		if v == "" {
			return nil
		}
		if _, err := hex.DecodeString(v); err != nil || len(v) != n {
			return fmt.Errorf("%w: %s checksum %q is not %d hex digits", ErrInvalid, name, v, n)
		}
		return nil
	}
	if c.Size < 0 {
		return fmt.Errorf("%w: negative expected size %d", ErrInvalid, c.Size)
	}
	if err := check("MD5", c.MD5, 32); err != nil {
		return err
	}
	return check("SHA-256", c.SHA256, 64)
}

func (c Checksum) String() string {
	var parts []string
	if c.Size > 0 {
		parts = append(parts, fmt.Sprintf("%d bytes", c.Size))
	}
	if c.MD5 != "" {
		parts = append(parts, "MD5 "+c.MD5)
	}
	if c.SHA256 != "" {
		parts = append(parts, "SHA-256 "+c.SHA256)
	}
	return strings.Join(parts, ", ")
}

// CIFAR10URL is the official CIFAR-10 binary archive, and CIFAR10Sum its
// published size and digests.
const CIFAR10URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"

// CIFAR10Sum identifies the official archive at [CIFAR10URL].
var CIFAR10Sum = Checksum{
	Size:   170052171,
	MD5:    "c32a1d4ab5d03f1284b67883e8d87530",
	SHA256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
}

// VerifyFile checks the file at path against sum, reading it once. A
// mismatch wraps [ErrChecksum] and names both values.
func VerifyFile(path string, sum Checksum) error {
	if err := sum.validate(); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data: verify: %w", err)
	}
	defer f.Close()
	var hs []io.Writer
	var m5, s256 hash.Hash
	if sum.MD5 != "" {
		m5 = md5.New()
		hs = append(hs, m5)
	}
	if sum.SHA256 != "" {
		s256 = sha256.New()
		hs = append(hs, s256)
	}
	n, err := io.Copy(io.MultiWriter(hs...), f)
	if err != nil {
		return fmt.Errorf("data: verify %s: %w", path, err)
	}
	if sum.Size > 0 && n != sum.Size {
		return fmt.Errorf("%w: %s is %d bytes, expected %d", ErrChecksum, path, n, sum.Size)
	}
	if m5 != nil {
		if got := hex.EncodeToString(m5.Sum(nil)); got != strings.ToLower(sum.MD5) {
			return fmt.Errorf("%w: %s has MD5 %s, expected %s", ErrChecksum, path, got, sum.MD5)
		}
	}
	if s256 != nil {
		if got := hex.EncodeToString(s256.Sum(nil)); got != strings.ToLower(sum.SHA256) {
			return fmt.Errorf("%w: %s has SHA-256 %s, expected %s", ErrChecksum, path, got, sum.SHA256)
		}
	}
	return nil
}

// Downloader fetches files over HTTP(S) robustly: it retries transient
// failures with exponential backoff, resumes a partial download (dest +
// ".part") with an HTTP Range request, verifies the checksum and only then
// renames the file to its final name, so dest never holds a partial or
// unverified file. The zero value is ready to use. A Downloader may be used
// by several goroutines for different destinations.
type Downloader struct {
	// Client makes the requests; nil means a client whose connection and
	// response-header waits time out after 30 s (the body may take longer).
	Client *http.Client
	// Attempts is the number of tries, the first included; 0 means 5.
	Attempts int
	// Backoff is the wait after the first failure; it doubles after each
	// further failure up to MaxBackoff. 0 means 1 s (and 30 s for MaxBackoff).
	Backoff, MaxBackoff time.Duration
	// Progress receives a progress bar (bytes, rate, ETA); nil draws none.
	Progress io.Writer
	// Logf, if set, is told about each failed attempt.
	Logf func(format string, args ...any)
}

var defaultClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	ResponseHeaderTimeout: 30 * time.Second,
	TLSHandshakeTimeout:   30 * time.Second,
	IdleConnTimeout:       30 * time.Second,
}}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Download fetches url into dest and verifies it against sum, which must
// name at least one digest. A file dest+".part" left by an earlier attempt
// is resumed. On a checksum mismatch the partial file is removed and the
// error wraps [ErrChecksum]; when every attempt failed or the server
// answered with a permanent status (4xx other than 408/429) it wraps
// [ErrDownload]. ctx cancels the transfer and the waits between attempts.
func (d *Downloader) Download(ctx context.Context, url, dest string, sum Checksum) error {
	if err := sum.validate(); err != nil {
		return err
	}
	if sum.IsZero() {
		return fmt.Errorf("%w: no checksum for %s: a downloaded file must be verifiable", ErrInvalid, url)
	}
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	wait, maxWait := d.Backoff, d.MaxBackoff
	if wait <= 0 {
		wait = time.Second
	}
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("data: download: %w", err)
	}
	part := dest + ".part"
	defer func() {
		// Keep a partial download to resume later, but not an empty file.
		if fi, err := os.Stat(part); err == nil && fi.Size() == 0 {
			_ = os.Remove(part)
		}
	}()
	for i := 1; ; i++ {
		err := d.fetchOnce(ctx, url, part, sum.Size)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("data: download %s: %w", url, ctx.Err())
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("%w: %s: %w", ErrDownload, url, err)
		}
		if i >= attempts {
			return fmt.Errorf("%w: %s: %d attempts: %w", ErrDownload, url, attempts, err)
		}
		if d.Logf != nil {
			d.Logf("data: download %s: attempt %d of %d failed: %v; retrying in %v", url, i, attempts, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("data: download %s: %w", url, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
	if err := VerifyFile(part, sum); err != nil {
		_ = os.Remove(part)
		return fmt.Errorf("data: download %s: partial file removed: %w", url, err)
	}
	if err := os.Rename(part, dest); err != nil {
		return fmt.Errorf("data: download: place %s: %w", dest, err)
	}
	syncDir(filepath.Dir(dest))
	return nil
}

// fetchOnce makes one request and appends what it receives to part,
// resuming from part's current size. size, when known, is the full size.
func (d *Downloader) fetchOnce(ctx context.Context, url, part string, size int64) (err error) {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return permanentError{fmt.Errorf("open partial file: %w", err)}
	}
	defer func() {
		if serr := f.Sync(); err == nil && serr != nil {
			err = serr
		}
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return permanentError{err}
	}
	if size > 0 && off == size {
		return nil // complete already; verified by the caller
	}
	if size > 0 && off > size {
		if off, err = restart(f); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return permanentError{fmt.Errorf("%w: bad URL: %w", ErrInvalid, err)}
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	client := d.Client
	if client == nil {
		client = defaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusPartialContent:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != off {
			_, _ = restart(f)
			return fmt.Errorf("server resumed at a different offset (Content-Range %q, have %d bytes)", resp.Header.Get("Content-Range"), off)
		}
	case code == http.StatusOK:
		if off > 0 { // the server ignored the range: start over
			if off, err = restart(f); err != nil {
				return err
			}
		}
	case code == http.StatusRequestedRangeNotSatisfiable && off > 0:
		if size == 0 {
			return nil // nothing beyond what we have; the checksum decides
		}
		_, _ = restart(f)
		return fmt.Errorf("server refused to resume at byte %d", off)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("HTTP status %s", resp.Status)
	default:
		return permanentError{fmt.Errorf("HTTP status %s", resp.Status)}
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = off + resp.ContentLength
		if size > 0 && total != size {
			_, _ = restart(f)
			return permanentError{fmt.Errorf("%w: server offers %d bytes, expected %d", ErrChecksum, total, size)}
		}
	} else if size > 0 {
		total = size
	}
	var w io.Writer = f
	if d.Progress != nil {
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(d.Progress),
			progressbar.OptionSetDescription(path.Base(url)),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetSpinnerChangeInterval(0), // no background goroutine
		)
		_ = bar.Set64(off)
		defer func() {
			_ = bar.Exit()
			fmt.Fprintln(d.Progress)
		}()
		w = io.MultiWriter(f, bar)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return fmt.Errorf("transfer interrupted after %d bytes: %w", off+n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("transfer ended after %d of %d bytes: %w", off+n, total, io.ErrUnexpectedEOF)
	}
	return nil
}

// restart empties the partial file.
func restart(f *os.File) (int64, error) {
	if err := f.Truncate(0); err != nil {
		return 0, permanentError{err}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, permanentError{err}
	}
	return 0, nil
}

// contentRangeStart parses the first byte of "bytes START-END/TOTAL".
func contentRangeStart(h string) (int64, error) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, fmt.Errorf("%w: Content-Range %q", ErrInvalid, h)
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("%w: Content-Range %q", ErrInvalid, h)
	}
	return strconv.ParseInt(start, 10, 64)
}
