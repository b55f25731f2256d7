package inflate

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Gunzip decompresses the gzip stream read from r into w and returns how
// many bytes it wrote. Like compress/gzip's Reader, it reads every member
// of a multi-member stream; each member's CRC-32 and size are checked, and
// anything after the last member that is not a gzip header is an error
// (ErrHeader). An empty r is io.EOF. w receives the output in chunks of
// up to 256 KiB; an error from w is returned as it is.
func Gunzip(w io.Writer, r io.Reader) (n int64, err error) {
	d := pool.Get().(*decoder)
	defer pool.Put(d)
	defer func() {
		// Hostile input gets an error, never a crash: a fault of the
		// decoder's own (none is known; FuzzGunzip hunts for them, and
		// would show one as a disagreement with compress/gzip) is
		// reported as corrupt input.
		if p := recover(); p != nil {
			n, err = d.written, fmt.Errorf("%w: decoder fault at offset %d: %v", ErrCorrupt, d.offset(), p)
		}
	}()
	d.r, d.w, d.err = r, w, nil
	d.pos, d.end, d.eof, d.base = 0, 0, -1, 0
	d.bitbuf, d.bitsleft = 0, 0
	d.written = 0
	defer func() { d.r, d.w = nil, nil }()
	for first := true; ; first = false {
		if err := d.header(); err != nil {
			if err == io.EOF && !first {
				return d.written, d.err
			}
			return d.written, err
		}
		if err := d.member(); err != nil {
			return d.written, err
		}
	}
}

// member decompresses one member after its header: blocks, then the
// trailer (CRC-32 and size).
func (d *decoder) member() error {
	d.op, d.flushed, d.crc, d.size = 0, 0, 0, 0
	for final := false; !final; {
		var err error
		if final, err = d.block(); err != nil {
			return err
		}
	}
	if err := d.flush(); err != nil {
		return err
	}
	if err := d.align(); err != nil {
		return err
	}
	t, err := d.bytes(8)
	if err != nil {
		return noEOF(err)
	}
	if binary.LittleEndian.Uint32(t) != d.crc || binary.LittleEndian.Uint32(t[4:]) != d.size {
		return ErrChecksum
	}
	return nil
}

// bytes returns the next n (at most 8) bytes of input, byte-aligned (the
// bit buffer empty). Fewer than n left is io.EOF if none is, else
// io.ErrUnexpectedEOF.
func (d *decoder) bytes(n int) ([]byte, error) {
	if d.end-d.pos < n {
		if err := d.fill(); err != nil {
			return nil, err
		}
	}
	if d.eof >= 0 && d.eof-d.pos < n {
		if d.err != nil {
			return nil, d.err
		}
		if d.eof == d.pos {
			return nil, io.EOF
		}
		return nil, io.ErrUnexpectedEOF
	}
	b := d.in[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

const (
	flagHdrCrc  = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4
)

// header reads a member's header as compress/gzip does: no check of the
// reserved flags, names and comments of at most 511 bytes, the header
// CRC-16 when flagged. No input at all is io.EOF.
func (d *decoder) header() error {
	h, err := d.bytes(10)
	if err != nil {
		return err
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return ErrHeader
	}
	flg := h[3]
	crc := crc32.ChecksumIEEE(h)
	if flg&flagExtra != 0 {
		b, err := d.bytes(2)
		if err != nil {
			return noEOF(err)
		}
		crc = crc32.Update(crc, crc32.IEEETable, b)
		for n := int(binary.LittleEndian.Uint16(b)); n > 0; {
			b, err := d.bytes(min(n, 8))
			if err != nil {
				return noEOF(err)
			}
			crc = crc32.Update(crc, crc32.IEEETable, b)
			n -= len(b)
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flg&f != 0 {
			if crc, err = d.skipString(crc); err != nil {
				return err
			}
		}
	}
	if flg&flagHdrCrc != 0 {
		b, err := d.bytes(2)
		if err != nil {
			return noEOF(err)
		}
		if binary.LittleEndian.Uint16(b) != uint16(crc) {
			return ErrHeader
		}
	}
	return nil
}

// skipString reads a NUL-terminated header string of at most 512 bytes
// (the NUL included), adding it to the header CRC.
func (d *decoder) skipString(crc uint32) (uint32, error) {
	for i := 0; ; i++ {
		if i >= 512 {
			return crc, ErrHeader
		}
		b, err := d.bytes(1)
		if err != nil {
			return crc, noEOF(err)
		}
		crc = crc32.Update(crc, crc32.IEEETable, b)
		if b[0] == 0 {
			return crc, nil
		}
	}
}
