package serve

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-airgap/ferry/bundle"
)

func chartTgz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestChartValuesFragment: the fragment sets only the image keys the
// chart's values have (bitnami-style registry/repository, a plain
// repository, an image string, a subchart's, the global registry), and
// notes images the bundle does not carry.
func TestChartValuesFragment(t *testing.T) {
	archive := chartTgz(t, map[string]string{
		"web/Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\ndependencies: [{name: cache, version: 0.1.0}]\n",
		"web/values.yaml": `global:
  imageRegistry: ""
image:
  registry: docker.io
  repository: bitnami/nginx
  tag: "1.25"
metrics:
  image:
    registry: docker.io
    repository: bitnami/nginx-exporter
worker:
  image: quay.io/org/worker:1.0
missing:
  image:
    repository: ghcr.io/org/absent
`,
		"web/charts/cache/Chart.yaml":  "apiVersion: v2\nname: cache\nversion: 0.1.0\n",
		"web/charts/cache/values.yaml": "image:\n  repository: redis\n  tag: \"7.2\"\n",
	})
	im := func(source, target string) bundle.Image {
		return bundle.Image{Source: source, Target: target, Tags: []string{"x"}, Digest: "sha256:" + sha256Hex([]byte(source))}
	}
	rec := &bundle.Record{ID: "b1", Images: []bundle.Image{
		im("docker.io/bitnami/nginx:1.25", "mirror/bitnami/nginx"),
		im("docker.io/bitnami/nginx-exporter:0.11", "mirror/bitnami/nginx-exporter"),
		im("quay.io/org/worker:1.0", "other/worker"),
		im("docker.io/library/redis:7.2", "mirror/library/redis"),
		{Source: "charts.example.com/web:1.0.0", Target: "charts/web", Tags: []string{"1.0.0"}, Digest: "sha256:" + sha256Hex([]byte("chart")), Kind: "helm-chart"},
	}}
	ms, err := Mirrors([]*bundle.Record{rec}, MirrorOptions{Registry: "harbor.internal", Prefix: "airgap",
		ChartArchive: func(*bundle.Record, bundle.Image) ([]byte, error) { return archive, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Charts) != 1 {
		t.Fatalf("%d chart fragments", len(ms.Charts))
	}
	cv := ms.Charts[0]
	got, _ := yaml.Marshal(cv.Values)
	want := `cache:
    image:
        repository: harbor.internal/airgap/mirror/library/redis
global:
    imageRegistry: harbor.internal/airgap/mirror
image:
    registry: harbor.internal/airgap/mirror
metrics:
    image:
        registry: harbor.internal/airgap/mirror
worker:
    image: harbor.internal/airgap/other/worker:1.0
`
	if string(got) != want {
		t.Errorf("values:\n%s\nwant:\n%s", got, want)
	}
	if cv.Ref != "oci://harbor.internal/airgap/charts/web" || len(cv.Notes) != 1 || !strings.Contains(cv.Notes[0], "missing.image: ghcr.io/org/absent") {
		t.Errorf("ref %s, notes %q", cv.Ref, cv.Notes)
	}
	var out bytes.Buffer
	if err := ms.Write(&out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "charts/web") && !strings.Contains(out.String(), "helm install web oci://harbor.internal/airgap/charts/web --version 1.0.0") {
		t.Errorf("output:\n%s", out.String())
	}
	if strings.Contains(out.String(), "charts.example.com") {
		t.Errorf("the chart is listed among the images to mirror:\n%s", out.String())
	}
}
