package data

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fileServer serves one file with Range support and can misbehave on
// purpose: fail the first requests with a status, cut the first transfer
// short, or ignore Range headers. It records every request's Range header.
type fileServer struct {
	content    io.ReadSeeker
	size       int64
	failFirst  int   // answer this many requests with failStatus
	failStatus int   // e.g. 503
	cutAfter   int64 // if > 0, abort the first transfer after this many bytes
	ignoreRng  bool  // answer every request with the whole file (200)

	mu     sync.Mutex // guards ranges and content's position
	ranges []string
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	n := len(s.ranges)
	if n <= s.failFirst {
		http.Error(w, "try later", s.failStatus)
		return
	}
	if s.ignoreRng {
		r.Header.Del("Range")
	}
	if s.cutAfter > 0 && n == s.failFirst+1 {
		w.Header().Set("Content-Length", strconv.FormatInt(s.size, 10))
		w.WriteHeader(http.StatusOK)
		if _, err := s.content.Seek(0, io.SeekStart); err != nil {
			panic(err)
		}
		_, _ = io.CopyN(w, s.content, s.cutAfter)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	http.ServeContent(w, r, "file", time.Time{}, s.content)
}

func (s *fileServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func serve(t testing.TB, s *fileServer) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL + "/cifar-10-binary.tar.gz"
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := NewRand(uint64(n))
	for i := range b {
		b[i] = byte(r.Uint64())
	}
	return b
}

func sumOf(b []byte) Checksum {
	m := md5.Sum(b)
	s := sha256.Sum256(b)
	return Checksum{Size: int64(len(b)), MD5: hex.EncodeToString(m[:]), SHA256: hex.EncodeToString(s[:])}
}

func checkResult(t *testing.T, dest string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("downloaded %d bytes differ from the %d served", len(got), len(want))
	}
	if _, err := os.Stat(dest + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial file left behind: %v", err)
	}
}

func quick() Downloader { return Downloader{Attempts: 3, Backoff: time.Millisecond} }

func TestDownloadFreshWithProgress(t *testing.T) {
	body := randomBytes(1 << 20)
	url := serve(t, &fileServer{content: bytes.NewReader(body), size: int64(len(body))})
	var progress bytes.Buffer
	d := quick()
	d.Progress = &progress
	dest := filepath.Join(t.TempDir(), "sub", "a.tar.gz")
	if err := d.Download(context.Background(), url, dest, sumOf(body)); err != nil {
		t.Fatal(err)
	}
	checkResult(t, dest, body)
	if !strings.Contains(progress.String(), "cifar-10-binary.tar.gz") || !strings.Contains(progress.String(), "MB") {
		t.Fatalf("progress output %q lacks the file name or byte counts", progress.String())
	}
}

func TestDownloadResumesInterruptedTransfer(t *testing.T) {
	body := randomBytes(3 << 20)
	s := &fileServer{content: bytes.NewReader(body), size: int64(len(body)), cutAfter: 1 << 20}
	url := serve(t, s)
	var logs []string
	d := quick()
	d.Logf = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	dest := filepath.Join(t.TempDir(), "a.tar.gz")
	if err := d.Download(context.Background(), url, dest, sumOf(body)); err != nil {
		t.Fatal(err)
	}
	checkResult(t, dest, body)
	reqs := s.requests()
	if len(reqs) != 2 || reqs[0] != "" {
		t.Fatalf("requests %q, want a plain one then a resume", reqs)
	}
	start, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(reqs[1], "bytes="), "-"), 10, 64)
	if err != nil || start <= 0 || start > 1<<20 {
		t.Fatalf("resume request %q: want a range starting after the bytes already received", reqs[1])
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "attempt 1 of 3") {
		t.Fatalf("retry log %q", logs)
	}
}

func TestDownloadResumesPartialFile(t *testing.T) {
	body := randomBytes(1 << 20)
	s := &fileServer{content: bytes.NewReader(body), size: int64(len(body))}
	url := serve(t, s)
	dest := filepath.Join(t.TempDir(), "a.tar.gz")
	writeFile(t, filepath.Dir(dest), "a.tar.gz.part", body[:300000])
	d := quick()
	if err := d.Download(context.Background(), url, dest, sumOf(body)); err != nil {
		t.Fatal(err)
	}
	checkResult(t, dest, body)
	if reqs := s.requests(); len(reqs) != 1 || reqs[0] != "bytes=300000-" {
		t.Fatalf("requests %q, want one range request from byte 300000", reqs)
	}
}

func TestDownloadRestartsWhenServerIgnoresRange(t *testing.T) {
	body := randomBytes(1 << 20)
	s := &fileServer{content: bytes.NewReader(body), size: int64(len(body)), ignoreRng: true}
	url := serve(t, s)
	dest := filepath.Join(t.TempDir(), "a.tar.gz")
	writeFile(t, filepath.Dir(dest), "a.tar.gz.part", body[:5000])
	d := quick()
	if err := d.Download(context.Background(), url, dest, sumOf(body)); err != nil {
		t.Fatal(err)
	}
	checkResult(t, dest, body)
}

func TestDownloadChecksumMismatch(t *testing.T) {
	body := randomBytes(100000)
	url := serve(t, &fileServer{content: bytes.NewReader(body), size: int64(len(body))})
	dir := t.TempDir()
	dest := filepath.Join(dir, "a.tar.gz")
	d := quick()
	wrong := sumOf(body)
	wrong.MD5 = strings.Repeat("0", 32)
	err := d.Download(context.Background(), url, dest, wrong)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), sumOf(body).MD5) {
		t.Fatalf("err = %v, want ErrChecksum naming the actual MD5", err)
	}
	// A corrupt partial file resumed from is caught the same way.
	writeFile(t, dir, "a.tar.gz.part", make([]byte, 4000))
	if err := d.Download(context.Background(), url, dest, sumOf(body)); !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupt partial file: %v, want ErrChecksum", err)
	}
	for _, p := range []string{dest, dest + ".part"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a failed verification", p)
		}
	}
	// A server offering a different size is refused before the transfer.
	wrong = sumOf(body)
	wrong.Size++
	if err := d.Download(context.Background(), url, dest, wrong); !errors.Is(err, ErrChecksum) {
		t.Fatalf("size mismatch: %v", err)
	}
}

func TestDownloadStatusHandling(t *testing.T) {
	body := randomBytes(50000)
	ctx := context.Background()
	// Transient failures are retried.
	s := &fileServer{content: bytes.NewReader(body), size: int64(len(body)), failFirst: 2, failStatus: http.StatusServiceUnavailable}
	dest := filepath.Join(t.TempDir(), "a")
	d := quick()
	if err := d.Download(ctx, serve(t, s), dest, sumOf(body)); err != nil {
		t.Fatal(err)
	}
	checkResult(t, dest, body)
	if n := len(s.requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	// ... until the attempts are spent.
	s = &fileServer{content: bytes.NewReader(body), size: int64(len(body)), failFirst: 5, failStatus: http.StatusBadGateway}
	d.Attempts = 2
	err := d.Download(ctx, serve(t, s), filepath.Join(t.TempDir(), "a"), sumOf(body))
	if !errors.Is(err, ErrDownload) || len(s.requests()) != 2 {
		t.Fatalf("err = %v after %d requests, want ErrDownload after 2", err, len(s.requests()))
	}
	// A permanent status is not retried.
	s = &fileServer{content: bytes.NewReader(body), size: int64(len(body)), failFirst: 5, failStatus: http.StatusNotFound}
	d.Attempts = 5
	dest = filepath.Join(t.TempDir(), "a")
	err = d.Download(ctx, serve(t, s), dest, sumOf(body))
	if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), "404") || len(s.requests()) != 1 {
		t.Fatalf("err = %v after %d requests, want ErrDownload (404) after 1", err, len(s.requests()))
	}
	if _, err := os.Stat(dest + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an empty partial file was left: %v", err)
	}
	// Without a checksum nothing is downloaded.
	if err := d.Download(ctx, "http://127.0.0.1:1/x", filepath.Join(t.TempDir(), "a"), Checksum{Size: 5}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no checksum: %v", err)
	}
	if err := d.Download(ctx, "http://127.0.0.1:1/x", filepath.Join(t.TempDir(), "a"), Checksum{MD5: "xyz"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("malformed checksum: %v", err)
	}
}

func TestDownloadCancelledDuringBackoff(t *testing.T) {
	body := randomBytes(1000)
	s := &fileServer{content: bytes.NewReader(body), size: int64(len(body)), failFirst: 9, failStatus: http.StatusServiceUnavailable}
	d := Downloader{Attempts: 5, Backoff: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := d.Download(ctx, serve(t, s), filepath.Join(t.TempDir(), "a"), sumOf(body))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("err = %v after %v", err, time.Since(start))
	}
}

func TestEnsureCIFAR10OfflineSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	_, err := EnsureCIFAR10(context.Background(), CIFAROptions{Dir: dir, Offline: true})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	for _, want := range []string{CIFAR10URL, filepath.Join(dir, CIFAR10ArchiveName), CIFAR10Sum.MD5, "170052171", filepath.Join(dir, CIFARBatchesDir), "offline"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("offline error does not mention %q:\n%v", want, err)
		}
	}
	// An unreachable mirror gives the same advice, naming the mirror.
	srv := httptest.NewServer(http.NotFoundHandler())
	mirror := srv.URL + "/mirror/cifar.tgz"
	srv.Close()
	o := CIFAROptions{Dir: dir, Mirror: mirror, Downloader: quick()}
	_, err = EnsureCIFAR10(context.Background(), o)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), mirror) || !strings.Contains(err.Error(), CIFAR10Sum.MD5) {
		t.Fatalf("unreachable mirror: %v", err)
	}
	if _, err := EnsureCIFAR10(context.Background(), CIFAROptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no directory: %v", err)
	}
}

func TestEnsureCIFAR10RefusesBadLocalState(t *testing.T) {
	ctx := context.Background()
	// A file under the archive's name that is not the official archive.
	dir := t.TempDir()
	writeFile(t, dir, CIFAR10ArchiveName, []byte("not it"))
	_, err := EnsureCIFAR10(ctx, CIFAROptions{Dir: dir, Offline: true})
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "remove") {
		t.Fatalf("wrong archive in place: %v", err)
	}
	// A local archive with a checksum that does not match.
	arc := writeFile(t, t.TempDir(), "local.tar.gz", []byte("abc"))
	_, err = EnsureCIFAR10(ctx, CIFAROptions{Dir: t.TempDir(), Archive: arc, ArchiveSum: Checksum{MD5: strings.Repeat("1", 32)}})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("local archive mismatch: %v", err)
	}
	// A local archive that verifies but holds the wrong members.
	arc = writeFile(t, t.TempDir(), "local.tar.gz", makeTarGz(t, reg("cifar-10-batches-bin/evil.sh", []byte("x"))))
	if _, err := EnsureCIFAR10(ctx, CIFAROptions{Dir: t.TempDir(), Archive: arc}); !errors.Is(err, ErrUnsafeArchive) {
		t.Fatalf("unsafe local archive: %v", err)
	}
	// An incomplete extracted directory.
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, CIFARBatchesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = EnsureCIFAR10(ctx, CIFAROptions{Dir: dir, Offline: true})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "remove") {
		t.Fatalf("incomplete directory: %v", err)
	}
}

// TestEnsureCIFAR10OverHTTP runs the whole acquisition path on the real
// archive: a local server plays the mirror and drops the first transfer
// part-way, the download resumes, verifies with the mirror's own checksum,
// extracts atomically, and the result reads back as CIFAR-10.
func TestEnsureCIFAR10OverHTTP(t *testing.T) {
	src := cifarArchive(t)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum := Checksum{}
	{
		h, s := md5.New(), sha256.New()
		n, err := io.Copy(io.MultiWriter(h, s), f)
		if err != nil {
			t.Fatal(err)
		}
		sum = Checksum{Size: n, MD5: hex.EncodeToString(h.Sum(nil)), SHA256: hex.EncodeToString(s.Sum(nil))}
	}
	srv := &fileServer{content: f, size: sum.Size, cutAfter: 40 << 20}
	dir := t.TempDir()
	var progress bytes.Buffer
	o := CIFAROptions{Dir: dir, Mirror: serve(t, srv), MirrorSum: sum, Downloader: quick()}
	o.Downloader.Progress = &progress
	batches, err := EnsureCIFAR10(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if reqs := srv.requests(); len(reqs) != 2 || !strings.HasPrefix(reqs[1], "bytes=") {
		t.Fatalf("requests %q: want an interrupted transfer and a resume", reqs)
	}
	if fi, err := os.Stat(filepath.Join(dir, CIFAR10ArchiveName)); err != nil || fi.Size() != sum.Size {
		t.Fatalf("downloaded archive: %v", err)
	}
	test, err := LoadCIFAR10(dir, Test)
	if err != nil {
		t.Fatal(err)
	}
	_, want := loadRealCIFAR(t)
	if !bytes.Equal(test.labels, want.labels) || !bytes.Equal(test.pixels, want.pixels) {
		t.Fatal("extracted test split differs from the archive read in memory")
	}
	// Now present: offline use needs no network and finds the same data.
	again, err := EnsureCIFAR10(context.Background(), CIFAROptions{Dir: dir, Offline: true})
	if err != nil || again != batches {
		t.Fatalf("second call: %s, %v", again, err)
	}
	// The local-archive option, with the archive's own checksum.
	if testing.Short() {
		return
	}
	dir2 := t.TempDir()
	got, err := EnsureCIFAR10(context.Background(), CIFAROptions{Dir: dir2, Archive: src, ArchiveSum: Checksum{MD5: sum.MD5}, Offline: true})
	if err != nil || got != filepath.Join(dir2, CIFARBatchesDir) {
		t.Fatalf("local archive: %s, %v", got, err)
	}
	if err := CheckCIFARDir(got); err != nil {
		t.Fatal(err)
	}
}
