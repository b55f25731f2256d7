package registry

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzRangeStart: any Content-Range a server sends parses without panic,
// and a start it accepts is a non-negative number that reads back the same.
func FuzzRangeStart(f *testing.F) {
	for _, s := range []string{"bytes 100-199/200", "bytes 0-0/1", "bytes */200", "bytes -5-10/20", "bytes 99999999999999999999-1/2", "", "items 1-2/3", " bytes 7-8/9 ", "bytes +5-9/10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cr string) {
		n, ok := rangeStart(cr)
		if !ok {
			return
		}
		// Accepted: "bytes " then the decimal digits of n (leading zeros allowed).
		rest := strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
		start, _, _ := strings.Cut(rest, "-")
		start = strings.TrimSpace(start)
		if n < 0 || strings.TrimLeft(start, "0123456789") != "" || strings.TrimLeft(start, "0") != strings.TrimLeft(strconv.FormatInt(n, 10), "0") {
			t.Fatalf("rangeStart(%q) = %d from %q", cr, n, start)
		}
	})
}

func TestRangeStart(t *testing.T) {
	for cr, want := range map[string]int64{"bytes 100-199/200": 100, "bytes 0-9/*": 0, " bytes 7-8/9 ": 7} {
		if n, ok := rangeStart(cr); !ok || n != want {
			t.Errorf("rangeStart(%q) = %d, %v; want %d", cr, n, ok, want)
		}
	}
	for _, cr := range []string{"", "bytes */200", "bytes -5-10/20", "items 1-2/3", "bytes 99999999999999999999-1/2", "bytes +5-9/10"} {
		if n, ok := rangeStart(cr); ok {
			t.Errorf("rangeStart(%q) = %d, accepted", cr, n)
		}
	}
}
