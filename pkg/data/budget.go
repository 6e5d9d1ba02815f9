package data

import "sync"

// DefaultDecodeBudget is the number of pixels an ImageFolder decodes at
// once, over all its concurrent Get calls: one image at the MaxImagePixels
// limit, or many small ones. Decoding costs at most about 20 bytes per
// pixel (the decoded image, up to 8 bytes a pixel for 16-bit PNGs, plus
// three float32 planes), so decoding holds at most about 1.3 GB whatever
// the number of CPUs decoding.
const DefaultDecodeBudget = MaxImagePixels

// pixelBudget is a weighted semaphore over pixels.
type pixelBudget struct {
	mu    sync.Mutex // guards inUse
	cond  *sync.Cond
	limit int64
	inUse int64
}

func newPixelBudget(limit int64) *pixelBudget {
	b := &pixelBudget{limit: max(limit, 1)}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire waits until n pixels (at most the whole budget) are free and
// takes them; it returns what release must give back.
func (b *pixelBudget) acquire(n int64) int64 {
	n = min(max(n, 1), b.limit)
	b.mu.Lock()
	for b.inUse+n > b.limit {
		b.cond.Wait()
	}
	b.inUse += n
	b.mu.Unlock()
	return n
}

func (b *pixelBudget) release(n int64) {
	b.mu.Lock()
	b.inUse -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}
