// Package data is ringtrain's input pipeline: CIFAR-10 acquisition (download,
// verification, safe extraction) and reading, image folders for transfer
// learning, a procedurally drawn "synthetic" dataset, the tutorial's
// augmentations, the deterministic sharded sampler and the prefetching loader.
//
// Promises:
//
//   - Exact sharding. An epoch's sample order is one permutation fixed by
//     (seed, epoch). A global cursor says how far the epoch has got; a step
//     covers positions [cursor, cursor+B) and rank r of N takes a contiguous
//     slice of it (see [ShardRange]). Every sample is seen exactly once per
//     epoch whatever N is and however often N changes between steps, and a
//     job can restart at any (epoch, cursor).
//   - Pure augmentation. The random crop and flip applied to a sample are a
//     function of (seed, epoch, dataset index) only (see [Key]), so a sample
//     looks the same whichever worker, goroutine or world size handles it.
//   - Bounded memory. A [Loader] decodes into a fixed ring of batch buffers
//     allocated when it starts, so prefetching never runs ahead by more
//     than that ring; Close stops every goroutine it started.
//
// Images are float32, channel-major (C, H, W); batches are contiguous NCHW.
package data
