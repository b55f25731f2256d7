package mapping

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCharts(t *testing.T) {
	cfg, err := Parse("/etc/ferry/m.yaml", []byte(`
charts:
  - repo: https://cloudforet-io.github.io/charts
    name: spaceone
    version: ">=2.0.0 <3.0.0"
    to: cloudforet/charts
    images: true
    values: [airgap.yaml, /abs/v.yaml]
  - repo: oci://registry.example.com/charts
    name: redis
    version: ["20.1.3", "~19"]
  - repo: https://charts.example.com/
    name: web
    version: 1.0.0
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Charts) != 3 {
		t.Fatalf("%d charts", len(cfg.Charts))
	}
	c := cfg.Charts[0]
	if c.Name != "spaceone" || c.Versions[0] != ">=2.0.0 <3.0.0" || c.Target() != "cloudforet/charts/spaceone" || !c.Images || c.IsOCI() || c.Line != 3 {
		t.Errorf("first chart: %+v", c)
	}
	if want := []string{filepath.Join("/etc/ferry", "airgap.yaml"), "/abs/v.yaml"}; strings.Join(c.Values, ",") != strings.Join(want, ",") {
		t.Errorf("values %v, want %v (relative to the mapping file)", c.Values, want)
	}
	if c := cfg.Charts[1]; !c.IsOCI() || c.Target() != "charts/redis" || len(c.Versions) != 2 || c.Images {
		t.Errorf("OCI chart (default to: the repository path): %+v", c)
	}
	if c := cfg.Charts[2]; c.Target() != "charts/web" {
		t.Errorf("classic chart default target %q, want charts/web", c.Target())
	}
	if c, err := ParseChartFlag("oci://registry.example.com/redis@1.0.0"); err != nil || c.Target() != "redis" {
		t.Errorf("OCI chart at the registry's root: target %q, %v; want redis", c.Target(), err)
	}
}

func TestParseChartsErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    colour: red\n", `m.yaml:5: unknown key "colour" in chart 1`},
		{"charts:\n  - repo: https://x.example\n    name: a\n", `m.yaml:2: chart "a" has no version:`},
		{"charts:\n  - repo: ftp://x.example\n    name: a\n    version: 1.0.0\n", `m.yaml:2: chart "a": repo "ftp://x.example" must be`},
		{"charts:\n  - repo: https://u:secret@x.example\n    name: a\n    version: 1.0.0\n", `without credentials`},
		{"charts:\n  - repo: https://x.example\n    name: ../a\n    version: 1.0.0\n", `name "../a" is not a chart name`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: \"not a range\"\n", `version "not a range" is neither`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    images: maybe\n", `m.yaml:5: images in chart 1: expected true or false`},
		{"charts: {}\n", `m.yaml:1: charts: expected a list of charts, found a map`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    exclude:\n      - busybox\n      - 'a(b'\n", `m.yaml:7: chart "a": exclude: invalid name pattern "a(b"`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    exclude: ['!']\n", `m.yaml:5: chart "a": exclude: invalid name pattern "!": empty pattern`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    exclude: {a: b}\n", `m.yaml:5: exclude in chart 1: expected a string, found a map`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    extraImages:\n      - busybox:1.36\n      - quay.io/org/app\n", `m.yaml:7: chart "a": extra image "quay.io/org/app" is not an image reference with a tag or digest`},
		{"charts:\n  - repo: https://x.example\n    extraImages: ['UPPER/case:1']\n    name: a\n    version: 1.0.0\n", `m.yaml:3: chart 1: extra image "UPPER/case:1"`},
		{"charts:\n  - repo: https://x.example\n    name: a\n    version: 1.0.0\n    extraImages: ['']\n", `m.yaml:5: extraImages in chart 1: empty value`},
	} {
		_, err := Parse("m.yaml", []byte(tc.doc))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.doc, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestLoadChartsOnly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("charts:\n  - {repo: 'oci://h.example/p', name: n, version: 1.0.0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil || len(cfg.Charts) != 1 || len(cfg.Tasks) != 0 {
		t.Fatalf("a file with only charts: %v, %+v", err, cfg)
	}
}

func TestParseChartFlag(t *testing.T) {
	c, err := ParseChartFlag("https://charts.example.com/stable/redis@>=1.0.0")
	if err != nil || c.Repo != "https://charts.example.com/stable" || c.Name != "redis" || c.Versions[0] != ">=1.0.0" || !c.Images {
		t.Errorf("%+v, %v", c, err)
	}
	for _, bad := range []string{"redis", "https://x.example/redis", "https://x.example/redis@", "nohost@1.0.0", "https://u:secret@x.example/r@1.0", "https://u:secret@x.example/r"} {
		_, err := ParseChartFlag(bad)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v, want ErrInvalid", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestParseChartExcludeExtra(t *testing.T) {
	cfg, err := Parse("m.yaml", []byte(`
charts:
  - repo: https://x.example
    name: demo
    version: 0.1.0
    images: true
    exclude: ['busybox', '!docker.io/library/.*']
    extraImages: [quay.io/org/operand:2.1, busybox@sha256:`+strings.Repeat("a", 64)+`]
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Charts[0]
	if len(c.Exclude) != 2 || len(c.ExtraImages) != 2 || c.ExtraImages[0] != "quay.io/org/operand:2.1" {
		t.Fatalf("%+v", c)
	}
	for _, tc := range []struct {
		image, want string
	}{
		{"busybox", "busybox"},                         // as written
		{"busybox:1.28", "busybox"},                    // tag ignored
		{"docker.io/library/busybox:1.28", ""},         // 'busybox' is anchored: the canonical name does not match it, and the '!' pattern keeps docker.io/library
		{"nginx:1.16.0", ""},                           // canonical docker.io/library/nginx: kept by the '!' pattern
		{"quay.io/org/app:1", "!docker.io/library/.*"}, // neither spelling matches docker.io/library/.*
		{"localhost:5000/x/y@sha256:" + strings.Repeat("b", 64), "!docker.io/library/.*"},
	} {
		got := ""
		if p := c.Excludes(tc.image); p != nil {
			got = p.String()
		}
		if got != tc.want {
			t.Errorf("Excludes(%q) = %q, want %q", tc.image, got, tc.want)
		}
	}
	if got := ImageNames("localhost:5000/x/y:1"); strings.Join(got, ",") != "localhost:5000/x/y" {
		t.Errorf("ImageNames: %v", got)
	}
	if got := ImageNames("redis"); strings.Join(got, ",") != "redis,docker.io/library/redis" {
		t.Errorf("ImageNames: %v", got)
	}
	f, err := ParseChartFlag("https://x.example/demo@0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AddExclude("a(b"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "chart https://x.example/demo") {
		t.Errorf("AddExclude: %v", err)
	}
	if err := f.AddExtraImage("nginx"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no tag or digest") {
		t.Errorf("AddExtraImage: %v", err)
	}
	if err := f.AddExclude(".*/busybox"); err != nil || f.Excludes("busybox:1.28") == nil {
		t.Errorf("AddExclude: %v", err)
	}
}
