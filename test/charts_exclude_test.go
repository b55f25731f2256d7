package test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// inspectCharts is the part of `ferry inspect --json` the exclude test reads.
type inspectCharts struct {
	Images []struct {
		Target string `json:"target"`
		Chart  string `json:"chart"`
	} `json:"images"`
	Charts []struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Images   []string `json:"images"`
	} `json:"charts"`
}

// TestChartExcludeAndExtraImages: the stock `helm create` chart, with
// images: true, renders nginx:1.16.0 and its test hook's busybox (Docker
// Hub here is the loopback source, through --mirror; it has no busybox).
// Without exclude the export fails on busybox; with exclude: [busybox] it
// succeeds, carries nginx and the extraImages: operand the chart pulls at
// run time, and warns about nothing. The --chart-exclude and
// --chart-extra-image flags select the same. inspect says which images
// came from the chart, in text and --json.
func TestChartExcludeAndExtraImages(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true})
	harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "library/nginx", Tag: "1.16.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "org/operand", Tag: "2.1", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	work := t.TempDir()
	h.run(t, work, "create", "demo") // stock: nginx (appVersion 1.16.0), test hook busybox
	repoDir := t.TempDir()
	h.run(t, work, "package", "demo", "-d", repoDir)
	h.run(t, repoDir, "repo", "index", ".")
	srv := httptest.NewServer(http.FileServer(http.Dir(repoDir)))
	t.Cleanup(srv.Close)
	operand := src.Host + "/org/operand:2.1"
	common := []string{"--ca-cert", src.CAFile, "--mirror", "docker.io=" + src.Host}

	// Without exclude: busybox cannot be resolved, the export fails.
	_, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		append([]string{"export", "-q", "--dry-run", "--chart", srv.URL + "/demo@0.1.0"}, common...)...)
	if code != 1 || !strings.Contains(stderr, "docker.io/library/busybox:latest") || strings.Contains(stderr, "nginx") {
		t.Fatalf("export of the stock chart without exclude: exit %d, want 1 naming busybox\n%s", code, stderr)
	}

	m := writeChartMapping(t, `
charts:
  - repo: `+srv.URL+`
    name: demo
    version: 0.1.0
    to: charts
    images: true
    exclude: [busybox]
    extraImages: [`+operand+`]
`)
	out := filepath.Join(t.TempDir(), "bundle.tar")
	sum, stderr := chartExportJSON(t, bin, append([]string{"-f", m, "-o", out}, common...)...)
	var carried []string
	for _, im := range sum.Images {
		carried = append(carried, im.Target+":"+strings.Join(im.Tags, ","))
	}
	slices.Sort(carried)
	if want := []string{"charts/demo:0.1.0", "library/nginx:1.16.0", "org/operand:2.1"}; !slices.Equal(carried, want) {
		t.Errorf("carried %v, want %v", carried, want)
	}
	if len(sum.Warnings) > 0 || strings.Contains(stderr, "warning") {
		t.Errorf("warnings: %v\n%s", sum.Warnings, stderr)
	}

	// The same with flags beside --chart.
	flags, _ := chartExportJSON(t, bin, append([]string{"--dry-run", "--chart", srv.URL + "/demo@0.1.0",
		"--chart-exclude", "docker.io/library/busybox", "--chart-extra-image", operand}, common...)...)
	var viaFlags []string
	for _, im := range flags.Images {
		viaFlags = append(viaFlags, im.Target+":"+strings.Join(im.Tags, ","))
	}
	slices.Sort(viaFlags)
	if !slices.Equal(viaFlags, carried) {
		t.Errorf("with --chart-exclude/--chart-extra-image: %v, want %v", viaFlags, carried)
	}

	// inspect: chart → images.
	stdout, _, code := harness.Run(t, bin, "inspect", out)
	if code != 0 || !strings.Contains(stdout, "chart demo (charts/demo:0.1.0) brought 2 images: library/nginx:1.16.0, org/operand:2.1") {
		t.Errorf("inspect (exit %d) does not relate the chart to its images:\n%s", code, stdout)
	}
	stdout, _, code = harness.Run(t, bin, "inspect", "--json", out)
	var ij inspectCharts
	if err := json.Unmarshal([]byte(stdout), &ij); err != nil || code != 0 {
		t.Fatalf("inspect --json: exit %d, %v\n%s", code, err, stdout)
	}
	if len(ij.Charts) != 1 || ij.Charts[0].Name != "demo" || strings.Join(ij.Charts[0].Versions, ",") != "charts/demo:0.1.0" ||
		strings.Join(ij.Charts[0].Images, ",") != "library/nginx:1.16.0,org/operand:2.1" {
		t.Errorf("inspect --json charts: %+v", ij.Charts)
	}
	for _, im := range ij.Images {
		if im.Chart != "demo" {
			t.Errorf("inspect --json: %s has chart %q, want demo", im.Target, im.Chart)
		}
	}
}
