// Package units formats and parses sizes for people.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bytes formats n with a binary unit: 512 B, 1.5 KiB, 3.2 GiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ParseBytes reads a size such as 10GiB, 4G, 700M, 1.5TiB or 1048576. A
// suffix with "i" (KiB, MiB, GiB, TiB) is binary; without it (K, M, G, T,
// with or without B) decimal, as disk vendors count. Case and a space
// before the unit do not matter. The size must be a positive whole number
// of bytes no larger than 8 EiB.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	mult, ok := multipliers[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit (use B, K, M, G, T or KiB, MiB, GiB, TiB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || strings.ContainsAny(num, "eE") {
		return 0, fmt.Errorf("size %q is not a positive number of bytes", s)
	}
	b := v * mult
	if b >= math.MaxInt64 || b < 1 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return int64(b), nil
}

var multipliers = map[string]float64{
	"": 1, "B": 1,
	"K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
	"KI": 1 << 10, "KIB": 1 << 10, "MI": 1 << 20, "MIB": 1 << 20, "GI": 1 << 30, "GIB": 1 << 30, "TI": 1 << 40, "TIB": 1 << 40,
}
