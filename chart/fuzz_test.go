package chart

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzChartLoad: no archive makes Load panic; every failure is ErrBadChart
// naming chart and version; what loads is the chart asked for.
func FuzzChartLoad(f *testing.F) {
	f.Add(demoChart(f))
	f.Add(demoChart(f, file{name: "demo/../x", data: []byte("x")}))
	f.Add([]byte("\x1f\x8b\x08\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := Load(data, "demo", "1.2.3")
		if err != nil {
			if !errors.Is(err, ErrBadChart) || !strings.Contains(err.Error(), "chart demo 1.2.3") {
				t.Fatalf("error %v: not ErrBadChart naming the chart", err)
			}
			return
		}
		if ch.Name() != "demo" || ch.Metadata.Version != "1.2.3" {
			t.Fatalf("loaded %s %s", ch.Name(), ch.Metadata.Version)
		}
	})
}

// FuzzImagesIn: rendered output of any shape yields image strings or an
// error, never a panic, and only non-empty strings.
func FuzzImagesIn(f *testing.F) {
	f.Add(deployment)
	f.Add("a: &x [*x]\n")
	f.Add("image: a\n---\nspec: {containers: [{image: b}, {image: ''}]}\n")
	f.Fuzz(func(t *testing.T, s string) {
		images, err := imagesIn(s)
		if err != nil {
			return
		}
		for _, im := range images {
			if strings.TrimSpace(im) == "" {
				t.Fatalf("empty image from %q", s)
			}
		}
	})
}

// FuzzPick: any index.yaml and constraint either picks an entry of that
// chart or fails with an error, never a panic.
func FuzzPick(f *testing.F) {
	f.Add(indexFor(entry("1.0.0", "a.tgz", ""), entry("2.0.0-rc1", "b.tgz", "")), ">=1.0.0")
	f.Add("entries: {demo: [{version: x}]}", "x")
	f.Fuzz(func(t *testing.T, index, constraint string) {
		var idx indexFile
		if yaml.Unmarshal([]byte(index), &idx) != nil {
			return
		}
		e, err := pick(idx.Entries["demo"], "demo", constraint)
		if err == nil && e == nil {
			t.Fatal("no entry and no error")
		}
	})
}
