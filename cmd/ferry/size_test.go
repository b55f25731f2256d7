package main

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"4G": 4e9, "700M": 700e6, "700MB": 700e6, "1048576": 1 << 20,
		"4GiB": 1 << 32, "2 TiB": 2 << 40, "1.5g": 1.5e9,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "4X", "1K", "abc", "1.2.3G"} {
		if got, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, got)
		}
	}
}
