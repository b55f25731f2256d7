package bundle

import "sync"

// copyBufs holds the 1 MiB buffers that blob copies and checksums read
// through. A buffer per call would allocate 1 MiB for every blob: checking
// the 700 manifests and configs of an import, mostly a few KiB each, made
// 700 MiB of garbage and a tenth of the import's CPU.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
