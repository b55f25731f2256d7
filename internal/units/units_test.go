package units

import "testing"

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB", 3 << 40: "3.0 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"10GiB": 10 << 30, "10G": 10e9, "700M": 700e6, "700mb": 700e6, "1048576": 1 << 20, "512 B": 512,
		"1.5KiB": 1536, "2 TiB": 2 << 40, "1.5g": 1.5e9, " 3Mi ": 3 << 20,
	} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "0", "4X", "abc", "1.2.3G", "1e3", "0.1B", "99999999999TiB", "NaN", "Inf"} {
		if got, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", bad, got)
		}
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"10GiB", "4G", "1.5 TiB", "1048576", "-1", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err == nil && n <= 0 {
			t.Errorf("ParseBytes(%q) = %d with no error", s, n)
		}
	})
}
