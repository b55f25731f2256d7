package inflate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// Errors, as compress/gzip and compress/flate name them.
var (
	// ErrHeader: a member does not start with a valid gzip header.
	ErrHeader = errors.New("gzip: invalid header")
	// ErrChecksum: a member's CRC-32 or size does not match its content.
	ErrChecksum = errors.New("gzip: invalid checksum")
	// ErrCorrupt: the DEFLATE data is not valid.
	ErrCorrupt = errors.New("flate: corrupt input")
)

const (
	window  = 32 << 10  // the farthest a match may reach back
	outSize = 256 << 10 // output decoded between two writes
	// outSlack: the fast loop writes up to three literals and a match of
	// 258 bytes, whose eight-byte copies overshoot by up to 7, past the
	// point where it stops to flush.
	outSlack = 3 + 258 + 8 + 5
	inSize   = 256 << 10
	// inLook: bytes kept before the read position when the input buffer
	// is compacted, so that bytes loaded into the bit buffer and not
	// consumed can be handed back (stored blocks, the trailer).
	inLook = 8
)

// decoder is one decompression: input and bit buffer, output window,
// tables. It is reused through pool.
type decoder struct {
	r   io.Reader
	w   io.Writer
	err error // a read error other than io.EOF

	in       []byte
	pos, end int   // in[pos:end] not yet loaded into bitbuf
	eof      int   // real end of input in in (-1: not reached); past it, zeros
	base     int64 // input offset of in[0]
	bitbuf   uint64
	bitsleft uint

	out     []byte
	op      int // next output byte
	flushed int // out[:flushed] has been written (or is history)
	written int64
	crc     uint32
	size    uint32

	lit  [litTableSize]uint32
	dist [distTableSize]uint32
	cl   [1 << clBits]uint32
	lens [numLit + numDist]uint8
}

var pool = sync.Pool{New: func() any {
	return &decoder{in: make([]byte, inSize+inLook+16), out: make([]byte, window+outSize+outSlack)}
}}

// corrupt is ErrCorrupt at the current input offset.
func (d *decoder) corrupt() error {
	return fmt.Errorf("%w at offset %d", ErrCorrupt, d.offset())
}

// offset is the input offset of the next unconsumed bit's byte.
func (d *decoder) offset() int64 { return d.base + int64(d.pos) - int64(d.bitsleft/8) }

// fill makes at least 8 bytes available at in[pos:], reading more input;
// past the end of the input it adds zeros. It fails once bits past the
// end have been consumed: the stream is truncated.
func (d *decoder) fill() error {
	if d.eof >= 0 {
		if d.overread() {
			return d.truncated()
		}
		for d.end-d.pos < 8 {
			d.in[d.end] = 0
			d.end++
		}
		return nil
	}
	keep := min(d.pos, inLook)
	n := copy(d.in, d.in[d.pos-keep:d.end])
	d.base += int64(d.pos - keep)
	d.pos, d.end = keep, n
	for empty := 0; d.end-d.pos < 8; {
		m, err := d.r.Read(d.in[d.end : len(d.in)-16])
		d.end += m
		if m == 0 && err == nil {
			if empty++; empty == 100 {
				err = io.ErrNoProgress
			}
		}
		if err == io.EOF {
			d.eof = d.end
			return d.fill()
		}
		if err != nil {
			d.err = err
			d.eof = d.end
			return d.fill()
		}
	}
	return nil
}

// overread reports whether bits past the real end of input were used.
func (d *decoder) overread() bool {
	return d.eof >= 0 && (d.pos-d.eof)*8 > int(d.bitsleft)
}

// truncated is the error of a stream that ends early: the read error, if
// one cut it, else io.ErrUnexpectedEOF.
func (d *decoder) truncated() error {
	if d.err != nil {
		return d.err
	}
	return io.ErrUnexpectedEOF
}

// refill tops the bit buffer up to at least 56 bits.
func (d *decoder) refill() error {
	if d.end-d.pos < 8 {
		if err := d.fill(); err != nil {
			return err
		}
	}
	d.bitbuf |= binary.LittleEndian.Uint64(d.in[d.pos:]) << d.bitsleft
	d.pos += int(63-d.bitsleft) >> 3
	d.bitsleft |= 56
	return nil
}

// bits consumes and returns the next n (at most 32) bits.
func (d *decoder) bits(n uint) (uint32, error) {
	if d.bitsleft < n {
		if err := d.refill(); err != nil {
			return 0, err
		}
	}
	v := uint32(d.bitbuf & (1<<n - 1))
	d.bitbuf >>= n
	d.bitsleft -= n
	return v, nil
}

// align drops the bits up to the next byte boundary and hands the whole
// bytes left in the bit buffer back to the input: in[pos:] is then the
// next byte of the stream.
func (d *decoder) align() error {
	d.pos -= int(d.bitsleft / 8)
	d.bitbuf, d.bitsleft = 0, 0
	if d.eof >= 0 && d.pos > d.eof {
		return d.truncated()
	}
	return nil
}

// flush writes the output decoded since the last flush, and slides the
// window when the buffer is past full.
func (d *decoder) flush() error {
	if d.op > d.flushed {
		p := d.out[d.flushed:d.op]
		d.crc = crc32.Update(d.crc, crc32.IEEETable, p)
		d.size += uint32(len(p))
		if _, err := d.w.Write(p); err != nil {
			return err
		}
		d.written += int64(len(p))
		d.flushed = d.op
	}
	if d.op >= window+outSize {
		copy(d.out, d.out[d.op-window:d.op])
		d.op, d.flushed = window, window
	}
	return nil
}
