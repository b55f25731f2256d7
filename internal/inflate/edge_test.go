package inflate

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"io"
	"testing"
)

// bitWriter packs DEFLATE bits: values least significant bit first,
// Huffman codes most significant bit first.
type bitWriter struct {
	out []byte
	acc uint64
	n   uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.n
	w.n += n
	for w.n >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.n -= 8
	}
}

// code writes the canonical code of sym in codes.
func (w *bitWriter) code(c canon, sym int) {
	n := c.lens[sym]
	if n == 0 {
		panic("no code for the symbol")
	}
	v := c.codes[sym]
	var r uint64
	for i := uint8(0); i < n; i++ {
		r = r<<1 | uint64(v>>i&1)
	}
	w.bits(r, uint(n))
}

// align pads to a byte boundary with zero bits.
func (w *bitWriter) align() {
	if w.n > 0 {
		w.bits(0, 8-w.n)
	}
}

func (w *bitWriter) bytes() []byte {
	w.align()
	return w.out
}

// canon is a canonical Huffman code: each symbol's length and code.
type canon struct {
	lens  []uint8
	codes []uint32
}

func canonical(lens []uint8) canon {
	var count [16]int
	for _, n := range lens {
		count[n]++
	}
	count[0] = 0
	var next [16]uint32
	code := uint32(0)
	for n := 1; n < 16; n++ {
		code = (code + uint32(count[n-1])) << 1
		next[n] = code
	}
	c := canon{lens: lens, codes: make([]uint32, len(lens))}
	for sym, n := range lens {
		if n > 0 {
			c.codes[sym] = next[n]
			next[n]++
		}
	}
	return c
}

// clCode is a complete code length code: 0-15 in 5 bits, 16 in 2, 17 and
// 18 in 3.
var clCode = canonical([]uint8{5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 2, 3, 3})

// dynamicHeader writes a dynamic block's header: the code lengths of lit
// and dist, each written as it is (no repeat codes), unless raw gives the
// code length code's symbols and extra bits to write instead.
func (w *bitWriter) dynamicHeader(final bool, nlit, ndist int, lengths []uint8, raw [][2]uint64) {
	w.bits(b2u(final)|2<<1, 3)
	w.bits(uint64(nlit-257), 5)
	w.bits(uint64(ndist-1), 5)
	w.bits(19-4, 4)
	for _, sym := range codeOrder {
		w.bits(uint64(clCode.lens[sym]), 3)
	}
	if raw != nil {
		for _, r := range raw {
			w.code(clCode, int(r[0]))
			switch r[0] {
			case 16:
				w.bits(r[1], 2)
			case 17:
				w.bits(r[1], 3)
			case 18:
				w.bits(r[1], 7)
			}
		}
		return
	}
	for _, n := range lengths {
		w.code(clCode, int(n))
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// gzipOf wraps a raw DEFLATE stream in a gzip member whose trailer is
// right for what compress/flate decodes of it (or zero if it refuses it).
func gzipOf(raw []byte) []byte {
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}
	out = append(out, raw...)
	content, err := io.ReadAll(flate.NewReader(bytes.NewReader(raw)))
	var crc, size uint32
	if err == nil {
		crc, size = crc32.ChecksumIEEE(content), uint32(len(content))
	}
	out = binary.LittleEndian.AppendUint32(out, crc)
	return binary.LittleEndian.AppendUint32(out, size)
}

// fixedCodes are the fixed literal/length and distance codes.
func fixedCodes() (canon, canon) {
	lit, dist := fixedLengths()
	return canonical(lit[:]), canonical(dist[:])
}

// TestGunzipEdgeCases: hand-made streams at the edges of what
// compress/flate accepts get its verdict and its output.
func TestGunzipEdgeCases(t *testing.T) {
	fl, fd := fixedCodes()
	// fixed writes a fixed block of literals, then a match of symbol ls
	// (extra le) at distance symbol ds (extra de), then the end of block.
	fixed := func(lits string, ls int, le uint64, ds int, de uint64) []byte {
		var w bitWriter
		w.bits(1|1<<1, 3)
		for _, c := range []byte(lits) {
			w.code(fl, int(c))
		}
		if ls > 0 {
			w.code(fl, ls)
			w.bits(le, uint(lenExtra[min(ls-257, 28)]))
			w.code(fd, ds)
			if ds < 30 {
				w.bits(de, uint(distExtra[ds]))
			}
		}
		w.code(fl, 256)
		return w.bytes()
	}
	cases := map[string][]byte{
		"fixed, length 258 (285)":          fixed("abc", 285, 0, 0, 0),
		"fixed, length 258 (284+31)":       fixed("abc", 284, 31, 0, 0),
		"fixed, symbol 286":                fixed("abc", 286, 0, 0, 0),
		"fixed, symbol 287":                fixed("abc", 287, 0, 0, 0),
		"fixed, distance symbol 30":        fixed("abc", 257, 0, 30, 0),
		"fixed, distance symbol 31":        fixed("abc", 257, 0, 31, 0),
		"fixed, distance = output":         fixed("abcd", 257, 0, 3, 0),
		"fixed, distance past the output":  fixed("abc", 257, 0, 3, 0),
		"fixed, distance 2 with 1 literal": fixed("a", 257, 0, 1, 0),
		"block type 3":                     {0x07, 0, 0},
		"stored, LEN 0":                    {0x01, 0, 0, 0xff, 0xff},
		"stored, LEN/NLEN mismatch":        {0x01, 3, 0, 0xfc, 0xfe, 'a', 'b', 'c'},
		"stored, cut":                      {0x01, 3, 0, 0xfc, 0xff, 'a'},
		"empty":                            {},
	}
	for name, raw := range dynamicCases() {
		cases[name] = raw
	}
	// A stored block of 70000 bytes in two, then a fixed block that
	// reaches back 32768 bytes: history crosses blocks.
	var w bitWriter
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000/16)
	for _, part := range [][]byte{big[:65535], big[65535:]} {
		w.bits(b2u(false), 1)
		w.bits(0, 2)
		w.align()
		w.out = binary.LittleEndian.AppendUint16(w.out, uint16(len(part)))
		w.out = binary.LittleEndian.AppendUint16(w.out, ^uint16(len(part)))
		w.out = append(w.out, part...)
	}
	w.bits(1|1<<1, 3)
	w.code(fl, 285)
	w.code(fd, 29)
	w.bits(32768-24577, 13)
	w.code(fl, 256)
	cases["stored 70000 bytes, then a match 32768 back"] = w.bytes()

	// The cases compress/flate accepts; every other one it refuses. (So
	// that the cases test what their names say.)
	valid := map[string]bool{
		"fixed, length 258 (285)": true, "fixed, length 258 (284+31)": true, "fixed, distance = output": true,
		"stored, LEN 0": true, "stored 70000 bytes, then a match 32768 back": true,
		"dynamic, only the end of block (degenerate), empty distance code": true,
		"dynamic, a repeat across the literal/distance boundary":           true,
		"dynamic, degenerate distance code":                                true,
		"dynamic, 15-bit codes after a stored block":                       true,
	}
	for name, raw := range cases {
		if _, err := reference(gzipOf(raw)); (err == nil) != valid[name] {
			t.Errorf("%s: compress/gzip says %v", name, err)
		}
		same(t, gzipOf(raw), name)
		if len(raw) > 0 {
			same(t, gzipOf(raw[:len(raw)-1]), name+", last byte cut")
		}
	}
}

// dynamicCases are dynamic blocks at the edges: degenerate and empty
// codes, incomplete and over-subscribed ones, repeat codes at the ends,
// too many codes, and codes of up to 15 bits (subtables) after a stored
// block.
func dynamicCases() map[string][]byte {
	cases := map[string][]byte{}
	// block writes a final dynamic block with these code lengths (nlit
	// literal/length, the rest distance), then body's symbols: lit and
	// dist codes, with extra bits.
	type sym struct {
		dist  bool
		s     int
		extra uint64
		n     uint
	}
	block := func(nlit int, lengths []uint8, raw [][2]uint64, body []sym) []byte {
		var w bitWriter
		w.dynamicHeader(true, nlit, len(lengths)-nlit, lengths, raw)
		lc, dc := canonical(lengths[:nlit]), canonical(lengths[nlit:])
		for _, b := range body {
			if b.dist {
				w.code(dc, b.s)
			} else if b.s >= 0 {
				w.code(lc, b.s)
			}
			w.bits(b.extra, b.n)
		}
		return w.bytes()
	}
	lens := func(nlit, ndist int, set map[int]uint8) []uint8 {
		l := make([]uint8, nlit+ndist)
		for k, v := range set {
			l[k] = v
		}
		return l
	}
	eob := sym{s: 256}
	lit := func(c int) sym { return sym{s: c} }
	bit := func(v uint64) sym { return sym{s: -1, extra: v, n: 1} }

	only := lens(257, 1, map[int]uint8{256: 1})
	cases["dynamic, only the end of block (degenerate), empty distance code"] = block(257, only, nil, []sym{eob})
	cases["dynamic, degenerate code's unused pattern"] = block(257, only, nil, []sym{bit(1)})
	cases["dynamic, 287 literal/length codes"] = block(257, only, nil, []sym{eob})
	cases["dynamic, 287 literal/length codes"][0] |= 30 << 3
	cases["dynamic, 31 distance codes"] = block(257, only, nil, []sym{eob})
	cases["dynamic, 31 distance codes"][1] |= 30 << 0
	cases["dynamic, incomplete"] = block(257, lens(257, 1, map[int]uint8{97: 2, 98: 2, 256: 2}), nil, []sym{eob})
	cases["dynamic, over-subscribed"] = block(257, lens(257, 1, map[int]uint8{97: 2, 98: 2, 99: 2, 100: 2, 256: 2}), nil, []sym{eob})
	cases["dynamic, no end of block code"] = block(257, lens(257, 1, map[int]uint8{97: 1, 98: 1}), nil, []sym{lit(97), lit(98)})

	// 258 literal/length and 3 distance lengths, by repeat codes: 97
	// zeros, 1 ('a'), 158 zeros, 1 (end of block), then three zeros
	// across the boundary (257, d0, d1), then 1 (d2).
	across := [][2]uint64{{18, 86}, {1, 0}, {18, 127}, {18, 9}, {1, 0}, {17, 0}, {1, 0}}
	al := lens(258, 3, map[int]uint8{97: 1, 256: 1, 260: 1})
	cases["dynamic, a repeat across the literal/distance boundary"] = block(258, al, across, []sym{lit(97), lit(97), eob})
	cases["dynamic, repeat of the previous length first"] = block(258, al, [][2]uint64{{16, 0}}, nil)
	cases["dynamic, repeat past the last length"] = block(258, al, [][2]uint64{{18, 127}, {18, 127}}, nil)

	// A degenerate distance code: d0 alone, used, and its unused pattern.
	dl := lens(258, 1, map[int]uint8{97: 1, 257: 2, 256: 2, 258: 1})
	cases["dynamic, degenerate distance code"] = block(258, dl, nil, []sym{lit(97), lit(257), {dist: true, s: 0}, eob})
	cases["dynamic, degenerate distance code's unused pattern"] = block(258, dl, nil, []sym{lit(97), lit(257), bit(1), eob})

	// Codes of up to 15 bits after a stored block of 1000 bytes.
	long := make([]uint8, 258+16)
	for i := 0; i <= 12; i++ {
		long[i] = uint8(i + 1)
	}
	long[13], long[256], long[257] = 15, 15, 14
	for i := 0; i <= 13; i++ {
		long[258+i] = uint8(i + 1)
	}
	long[258+14], long[258+15] = 15, 15
	var w bitWriter
	w.bits(0, 3)
	w.align()
	w.out = append(w.out, 0xe8, 0x03, 0x17, 0xfc)
	w.out = append(w.out, bytes.Repeat([]byte("long codes "), 91)[:1000]...)
	body := block(258, long, nil, []sym{lit(13), lit(0), {s: 257}, {dist: true, s: 15, extra: 10, n: 6},
		lit(12), {s: 257}, {dist: true, s: 9, extra: 5, n: 3}, eob})
	cases["dynamic, 15-bit codes after a stored block"] = append(w.out, body...)
	return cases
}
