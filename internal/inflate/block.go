package inflate

import (
	"encoding/binary"
	"sync"
)

// block decodes one DEFLATE block and reports whether it was the last.
func (d *decoder) block() (bool, error) {
	h, err := d.bits(3)
	if err != nil {
		return false, err
	}
	final := h&1 == 1
	switch h >> 1 {
	case 0:
		err = d.stored()
	case 1:
		fixedOnce.Do(buildFixed)
		err = d.huffman(&fixedLit, &fixedDist)
	case 2:
		if err = d.dynamic(); err == nil {
			err = d.huffman(&d.lit, &d.dist)
		}
	default:
		err = d.corrupt()
	}
	return final, err
}

// stored copies a stored block: LEN bytes after LEN and its complement.
func (d *decoder) stored() error {
	if err := d.align(); err != nil {
		return err
	}
	b, err := d.bytes(4)
	if err != nil {
		return noEOF(err)
	}
	n := int(binary.LittleEndian.Uint16(b))
	if uint16(n) != ^binary.LittleEndian.Uint16(b[2:]) {
		return d.corrupt()
	}
	for n > 0 {
		if d.op >= window+outSize {
			if err := d.flush(); err != nil {
				return err
			}
		}
		if d.end == d.pos {
			if err := d.fill(); err != nil {
				return err
			}
		}
		avail := d.end - d.pos
		if d.eof >= 0 {
			avail = d.eof - d.pos
			if avail <= 0 {
				return d.truncated()
			}
		}
		c := copy(d.out[d.op:window+outSize], d.in[d.pos:d.pos+min(n, avail)])
		d.op += c
		d.pos += c
		n -= c
	}
	return nil
}

// codeOrder is the order of the code length code's lengths.
var codeOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamic reads a dynamic block's code lengths and builds its tables, with
// compress/flate's checks: at most 286 and 30 codes, complete codes, no
// repeat before the first length or past the last.
func (d *decoder) dynamic() error {
	h, err := d.bits(14)
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(h&0x1f)+257, int(h>>5&0x1f)+1, int(h>>10)+4
	if nlit > numLit || ndist > numDist {
		return d.corrupt()
	}
	var cl [19]uint8
	for i := 0; i < nclen; i++ {
		v, err := d.bits(3)
		if err != nil {
			return err
		}
		cl[codeOrder[i]] = uint8(v)
	}
	if !build(d.cl[:], cl[:], clBits, clEntry) {
		return d.corrupt()
	}
	if err := d.codeLengths(nlit + ndist); err != nil {
		return err
	}
	if !build(d.lit[:], d.lens[:nlit], litBits, litEntry) {
		return d.corrupt()
	}
	if !build(d.dist[:], d.lens[nlit:nlit+ndist], distBits, distEntry) {
		return d.corrupt()
	}
	return nil
}

// codeLengths decodes n code lengths into d.lens with the code length
// code.
func (d *decoder) codeLengths(n int) error {
	lens := d.lens[:n]
	for i := 0; i < n; {
		if d.bitsleft < 7+7 {
			if err := d.refill(); err != nil {
				return err
			}
		}
		e := d.cl[d.bitbuf&(1<<clBits-1)]
		if e&31 == 0 {
			return d.corrupt()
		}
		d.bitbuf >>= e & 31
		d.bitsleft -= uint(e & 31)
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var v uint8
		switch sym {
		case 16:
			if i == 0 {
				return d.corrupt()
			}
			rep, v = 3+int(d.bitbuf&3), lens[i-1]
			d.bitbuf >>= 2
			d.bitsleft -= 2
		case 17:
			rep = 3 + int(d.bitbuf&7)
			d.bitbuf >>= 3
			d.bitsleft -= 3
		default:
			rep = 11 + int(d.bitbuf&0x7f)
			d.bitbuf >>= 7
			d.bitsleft -= 7
		}
		if i+rep > n {
			return d.corrupt()
		}
		for ; rep > 0; rep-- {
			lens[i] = v
			i++
		}
	}
	return nil
}

// The fixed code's tables (RFC 1951, 3.2.6).
var (
	fixedOnce sync.Once
	fixedLit  [litTableSize]uint32
	fixedDist [distTableSize]uint32
)

func buildFixed() {
	lit, dist := fixedLengths()
	build(fixedLit[:], lit[:], litBits, litEntry)
	build(fixedDist[:], dist[:], distBits, distEntry)
}

// fixedLengths are the code lengths of the fixed literal/length code
// (symbols 286 and 287 included, as compress/flate builds it) and of the
// fixed distance code (30 and 31 included).
func fixedLengths() (lit [288]uint8, dist [32]uint8) {
	for i := range lit {
		switch {
		case i < 144, i >= 280:
			lit[i] = 8
		case i < 256:
			lit[i] = 9
		default:
			lit[i] = 7
		}
	}
	for i := range dist {
		dist[i] = 5
	}
	return lit, dist
}

// huffman decodes a Huffman block's symbols with the tables lt and dt up
// to its end of block. The loop keeps the hot state in locals; it stores
// it back before every call that reads or changes it (flush, fill) and
// when it ends.
func (d *decoder) huffman(lt *[litTableSize]uint32, dt *[distTableSize]uint32) error {
	in, out := d.in, d.out
	bitbuf, bitsleft, pos, op := d.bitbuf, d.bitsleft, d.pos, d.op
	ok := false
	for {
		if op >= window+outSize {
			d.op = op
			if err := d.flush(); err != nil {
				return err
			}
			op = d.op
		}
		if d.end-pos < 8 {
			d.bitbuf, d.bitsleft, d.pos = bitbuf, bitsleft, pos
			if err := d.fill(); err != nil {
				return err
			}
			pos = d.pos
		}
		// At least 56 bits: a length, a distance and their extra bits
		// need 48 at most.
		bitbuf |= binary.LittleEndian.Uint64(in[pos:]) << bitsleft
		pos += int(63-bitsleft) >> 3
		bitsleft |= 56
		e := lt[bitbuf&(1<<litBits-1)]
		if e&kindMask == kindSub {
			bitbuf >>= litBits
			bitsleft -= litBits
			e = lt[int(e>>16)+int(bitbuf&(1<<(e>>8&0xff)-1))]
		}
		if e&kindMask == kindLit {
			// Up to three literals per refill (a literal found in the
			// main table has at most litBits bits).
			for k := 0; k < 3 && e&kindMask == kindLit; k++ {
				bitbuf >>= e & 31
				bitsleft -= uint(e & 31)
				out[op] = byte(e >> 16)
				op++
				e = lt[bitbuf&(1<<litBits-1)]
			}
			continue
		}
		bitbuf >>= e & 31
		bitsleft -= uint(e & 31)
		if e&kindMask != kindLen {
			ok = e&kindMask == kindEOB
			break
		}
		extra := e >> 8 & 0xff
		length := int(e>>16) + int(bitbuf&(1<<extra-1))
		bitbuf >>= extra
		bitsleft -= uint(extra)

		e = dt[bitbuf&(1<<distBits-1)]
		if e&kindMask == kindSub {
			bitbuf >>= distBits
			bitsleft -= distBits
			e = dt[int(e>>16)+int(bitbuf&(1<<(e>>8&0xff)-1))]
		}
		if e&kindMask != kindDist {
			break
		}
		bitbuf >>= e & 31
		bitsleft -= uint(e & 31)
		extra = e >> 8 & 0xff
		dist := int(e>>16) + int(bitbuf&(1<<extra-1))
		bitbuf >>= extra
		bitsleft -= uint(extra)
		if dist > op {
			break
		}
		copyMatch(out, op, dist, length)
		op += length
	}
	d.bitbuf, d.bitsleft, d.pos, d.op = bitbuf, bitsleft, pos, op
	if !ok {
		return d.corrupt()
	}
	return nil
}

// copyMatch copies length bytes from dist back to out[op:], eight bytes
// at a time where they do not overlap within a word; it may write up to 7
// bytes past the match.
func copyMatch(out []byte, op, dist, length int) {
	src := op - dist
	switch {
	case dist >= 8:
		for i := 0; i < length; i += 8 {
			binary.LittleEndian.PutUint64(out[op+i:], binary.LittleEndian.Uint64(out[src+i:]))
		}
	case dist == 1:
		v := uint64(out[src]) * 0x0101010101010101
		for i := 0; i < length; i += 8 {
			binary.LittleEndian.PutUint64(out[op+i:], v)
		}
	default:
		for i := 0; i < length; i++ {
			out[op+i] = out[src+i]
		}
	}
}
