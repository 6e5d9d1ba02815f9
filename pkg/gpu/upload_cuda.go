package gpu

import "unsafe"

// uploadPinned queues a copy from page-locked memory (pinnedUploader):
// no staging, no wait; the caller keeps src unchanged until later work
// has been waited for.
func (d *cudaDevice) uploadPinned(dst uint64, src unsafe.Pointer, bytes uint64) error {
	return d.drv.check("cuMemcpyHtoDAsync", d.drv.cuMemcpyHtoDAsync(dst, src, bytes, d.stream))
}

var _ pinnedUploader = (*cudaDevice)(nil)
