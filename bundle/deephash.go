package bundle

import (
	"encoding/hex"
	"hash"
	"runtime"
	"sync"
	"sync/atomic"
)

// inflating counts the layers this process is decompressing. While there
// are fewer than GOMAXPROCS, a layer's hashing (its compressed bytes, its
// uncompressed content) moves to a helper goroutine, so that a core that
// would sit idle takes it off the inflater's: one big layer, or the last
// layer of a bundle, uses two cores. While every core inflates a layer,
// hashing stays on the inflater's goroutine, where it costs no copy and no
// hand-over (a helper there would only take the time from another layer).
var inflating atomic.Int32

// hashPipeBufs bounds the buffers one layer's hashPipe holds (1.5 MiB):
// the staging buffer of each stream and those queued for, or in, the
// helper.
const hashPipeBufs = 6

// hashBufs holds the hashPipes' 256 KiB staging buffers: big enough that
// a hand-over (two channel operations) costs nothing beside hashing it.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// hashChunk is n bytes of buf for the helper to write into h.
type hashChunk struct {
	h   hash.Hash
	buf *[]byte
	n   int
}

// hashPipe hashes the streams of one layer (pipedHash) on a helper
// goroutine while cores are idle, else on the caller's. One goroutine
// writes into its pipedHashes; close must be called when it is done.
type hashPipe struct {
	procs    int32
	work     chan hashChunk
	done     chan *[]byte // buffers the helper has hashed
	free     []*[]byte
	owned    int // buffers taken from hashBufs
	inFlight int // chunks sent and not yet back
}

// newHashPipe counts a layer in inflating until close.
func newHashPipe() *hashPipe {
	inflating.Add(1)
	return &hashPipe{procs: int32(runtime.GOMAXPROCS(0))}
}

// offload reports whether hashing should go to the helper now: whether
// fewer layers are being inflated than there are cores to run them.
func (p *hashPipe) offload() bool { return inflating.Load() < p.procs }

// buffer returns an empty staging buffer, waiting for the helper to hand
// one back when the pipe holds hashPipeBufs already.
func (p *hashPipe) buffer() *[]byte {
	for {
		select {
		case b := <-p.done:
			p.inFlight--
			p.free = append(p.free, b)
			continue
		default:
		}
		break
	}
	if len(p.free) > 0 {
		b := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		return b
	}
	if p.owned < hashPipeBufs {
		p.owned++
		return hashBufs.Get().(*[]byte)
	}
	b := <-p.done
	p.inFlight--
	return b
}

// send queues n bytes of buf for h, starting the helper the first time.
func (p *hashPipe) send(h hash.Hash, buf *[]byte, n int) {
	if p.work == nil {
		p.work = make(chan hashChunk, hashPipeBufs)
		p.done = make(chan *[]byte, hashPipeBufs)
		go func(work <-chan hashChunk, done chan<- *[]byte) {
			for c := range work {
				c.h.Write((*c.buf)[:c.n])
				done <- c.buf
			}
		}(p.work, p.done)
	}
	p.inFlight++
	p.work <- hashChunk{h: h, buf: buf, n: n}
}

// drain waits until the helper has hashed everything sent: then the
// caller may write into the hashes itself, or read their sums.
func (p *hashPipe) drain() {
	for p.inFlight > 0 {
		p.free = append(p.free, <-p.done)
		p.inFlight--
	}
}

// close waits for the helper, stops it and gives the buffers back. The
// pipe's pipedHashes must not be written after.
func (p *hashPipe) close() {
	p.drain()
	if p.work != nil {
		close(p.work)
	}
	for _, b := range p.free {
		hashBufs.Put(b)
	}
	p.free = nil
	inflating.Add(-1)
}

// pipedHash is one stream of a layer hashed through p: in place while
// every core is busy, else staged in 256 KiB chunks for the helper. The
// bytes reach h in the order they were written either way: before it
// writes in place, it hands over what it has staged and waits for the
// helper to finish.
type pipedHash struct {
	p   *hashPipe
	h   hash.Hash
	buf *[]byte
	n   int
}

func (w *pipedHash) Write(b []byte) (int, error) {
	if !w.p.offload() {
		w.flush()
		w.p.drain()
		return w.h.Write(b)
	}
	total := len(b)
	for len(b) > 0 {
		if w.buf == nil {
			w.buf = w.p.buffer()
		}
		c := copy((*w.buf)[w.n:], b)
		w.n += c
		b = b[c:]
		if w.n == len(*w.buf) {
			w.flush()
		}
	}
	return total, nil
}

// flush hands the staged bytes to the helper.
func (w *pipedHash) flush() {
	if w.buf == nil {
		return
	}
	if w.n == 0 {
		w.p.free = append(w.p.free, w.buf)
	} else {
		w.p.send(w.h, w.buf, w.n)
	}
	w.buf, w.n = nil, 0
}

// sum is the hex digest of everything written.
func (w *pipedHash) sum() string {
	w.flush()
	w.p.drain()
	return hex.EncodeToString(w.h.Sum(nil))
}
