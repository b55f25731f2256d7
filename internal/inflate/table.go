package inflate

import "math/bits"

// A decode table maps the next bits of the stream (least significant bit
// first, as DEFLATE packs them) to an entry. Codes no longer than the
// table's main bits are found in one lookup; longer ones through a
// subtable, sized for the longest code under that prefix.
//
// An entry (uint32):
//
//	bits 0-4   how many bits the entry consumes (0: no code has these bits)
//	bits 5-7   what it is: a literal, a length, the end of the block, a subtable
//	bits 8-15  extra bits that follow the code (lengths and distances), or a subtable's index bits
//	bits 16-31 the value: a literal byte, a base length or distance, a subtable's offset
//
// A zero entry is an invalid code: an incomplete code (the degenerate
// single code of length 1 that compress/flate accepts, or an empty
// distance code) leaves its unused bit patterns zero.
const (
	kindLit  = 1 << 5
	kindLen  = 2 << 5
	kindEOB  = 3 << 5
	kindSub  = 4 << 5
	kindDist = 5 << 5
	kindMask = 7 << 5

	litBits  = 10 // main bits of a literal/length table
	distBits = 8  // main bits of a distance table
	clBits   = 7  // the code length code's codes are at most 7 bits

	maxCodeLen = 15
	numLit     = 286 // literal/length symbols a stream may use
	numDist    = 30  // distance symbols a stream may use

	// Upper bounds of a table's size: the main table and every subtable
	// a complete (or degenerate) code can need, as zlib's ENOUGH does for
	// its root sizes, with room to spare.
	litTableSize  = 1<<litBits + 1<<maxCodeLen>>2
	distTableSize = 1<<distBits + 1<<maxCodeLen>>2
)

var (
	lenBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}

	distBase  = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// entryFunc gives the entry (without its bit count) of symbol sym.
type entryFunc func(sym int) uint32

// litEntry is a literal/length table's entry for sym; symbols 286 and
// 287 (which only the fixed code has) are invalid, as in compress/flate.
func litEntry(sym int) uint32 {
	switch {
	case sym < 256:
		return kindLit | uint32(sym)<<16
	case sym == 256:
		return kindEOB
	case sym < numLit:
		i := sym - 257
		return kindLen | uint32(lenExtra[i])<<8 | uint32(lenBase[i])<<16
	}
	return 0
}

// distEntry is a distance table's entry for sym; 30 and 31 are invalid.
func distEntry(sym int) uint32 {
	if sym < numDist {
		return kindDist | uint32(distExtra[sym])<<8 | uint32(distBase[sym])<<16
	}
	return 0
}

// clEntry is the code length code's entry: the symbol itself.
func clEntry(sym int) uint32 { return kindLit | uint32(sym)<<16 }

// build fills t with the decode table of the canonical code whose code
// lengths are lens, main bits wide. It reports false for a code
// compress/flate refuses: over-subscribed, or incomplete unless it is
// empty or a single code of length 1.
func build(t []uint32, lens []uint8, main uint, entry entryFunc) bool {
	var count [maxCodeLen + 1]int
	maxLen := 0
	for _, n := range lens {
		count[n]++
		if int(n) > maxLen {
			maxLen = int(n)
		}
	}
	count[0] = 0
	clear(t[:1<<main])
	if maxLen == 0 {
		return true // empty: every lookup fails
	}
	var next [maxCodeLen + 2]int
	code := 0
	for n := 1; n <= maxLen; n++ {
		code = (code + count[n-1]) << 1
		next[n] = code
	}
	if code+count[maxLen] != 1<<maxLen && !(maxLen == 1 && count[1] == 1) {
		return false
	}
	// Subtables: for each main-bits prefix of a longer code, the longest
	// code under it sets its size. Canonical codes put them in order.
	if maxLen > int(main) {
		buildSubtables(t, lens, main, next)
	}
	for sym, n := range lens {
		if n == 0 {
			continue
		}
		c := next[n]
		next[n]++
		rev := int(bits.Reverse16(uint16(c)) >> (16 - n))
		e := entry(sym)
		if uint(n) <= main {
			for i := rev; i < 1<<main; i += 1 << n {
				t[i] = e | uint32(n)
			}
			continue
		}
		sub := t[rev&(1<<main-1)]
		off, subBits := int(sub>>16), uint(sub>>8&0xff)
		sn := uint(n) - main
		for i := rev >> main; i < 1<<subBits; i += 1 << sn {
			t[off+i] = e | uint32(sn)
		}
	}
	return true
}

// buildSubtables writes the subtable pointers of t's main table for the
// codes longer than main bits and clears the subtables. next holds the
// first code of each length.
func buildSubtables(t []uint32, lens []uint8, main uint, next [maxCodeLen + 2]int) {
	// The longest code under each prefix (reversed main bits).
	var longest [1 << litBits]uint8
	var order []int // prefixes in the order they are met
	nx := next
	for n := int(main) + 1; n <= maxCodeLen; n++ {
		for _, l := range lens {
			if int(l) != n {
				continue
			}
			c := nx[n]
			nx[n]++
			prefix := int(bits.Reverse16(uint16(c>>(n-int(main)))) >> (16 - main))
			if longest[prefix] == 0 {
				order = append(order, prefix)
			}
			longest[prefix] = uint8(n)
		}
	}
	size := 1 << main
	for _, p := range order {
		subBits := uint(longest[p]) - main
		t[p] = kindSub | uint32(subBits)<<8 | uint32(size)<<16 | uint32(main)
		clear(t[size : size+1<<subBits])
		size += 1 << subBits
	}
}
