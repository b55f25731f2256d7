package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const chartYAML = "apiVersion: v2\nname: demo\nversion: 1.2.3\ndescription: a demo\nhome: https://example.com\nannotations:\n  org.opencontainers.image.title: spoofed\n  team: infra\n"

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: "{{ .Values.init.image }}"
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        - name: sidecar
          image: {{ .Values.sidecar }}
`

const values = "image:\n  repository: registry.example.com/team/app\n  tag: \"1.0\"\ninit:\n  image: busybox:1.36\nsidecar: ghcr.io/org/side@sha256:" + "0123456789012345678901234567890123456789012345678901234567890123" + "\n"

type file struct {
	name string
	data []byte
	size int64 // header size when different from len(data)
}

// tgz makes a chart archive; files are named as given (normally demo/...).
func tgz(t testing.TB, files ...file) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		size := int64(len(f.data))
		if f.size > 0 {
			size = f.size
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if f.size > 0 {
			if _, err := io.CopyN(tw, zeros{}, f.size); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := tw.Write(f.data); err != nil {
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

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func demoChart(t testing.TB, extra ...file) []byte {
	return tgz(t, append([]file{
		{name: "demo/Chart.yaml", data: []byte(chartYAML)},
		{name: "demo/values.yaml", data: []byte(values)},
		{name: "demo/templates/deployment.yaml", data: []byte(deployment)},
	}, extra...)...)
}

func TestLoadRefusesHostileArchives(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		archive    []byte
	}{
		{"traversal", "parent directory", demoChart(t, file{name: "demo/../../etc/passwd", data: []byte("x")})},
		{"absolute", "absolute", demoChart(t, file{name: "demo//etc/passwd", data: []byte("x")})},
		{"file bomb", "larger than the maximum file size", demoChart(t, file{name: "demo/templates/big.yaml", size: 6 << 20})},
		{"archive bomb", "larger than the maximum", demoChart(t,
			file{name: "demo/a", size: 5 << 20}, file{name: "demo/b", size: 5 << 20}, file{name: "demo/c", size: 5 << 20},
			file{name: "demo/d", size: 5 << 20}, file{name: "demo/e", size: 5 << 20}, file{name: "demo/f", size: 5 << 20},
			file{name: "demo/g", size: 5 << 20}, file{name: "demo/h", size: 5 << 20}, file{name: "demo/i", size: 5 << 20},
			file{name: "demo/j", size: 5 << 20}, file{name: "demo/k", size: 5 << 20}, file{name: "demo/l", size: 5 << 20},
			file{name: "demo/m", size: 5 << 20}, file{name: "demo/n", size: 5 << 20}, file{name: "demo/o", size: 5 << 20},
			file{name: "demo/p", size: 5 << 20}, file{name: "demo/q", size: 5 << 20}, file{name: "demo/r", size: 5 << 20},
			file{name: "demo/s", size: 5 << 20}, file{name: "demo/t", size: 5 << 20}, file{name: "demo/u", size: 5 << 20})},
		{"not gzip", "gzip", []byte("<html>not a chart</html>")},
		{"wrong version", "Chart.yaml says demo 9.9.9", tgz(t, file{name: "demo/Chart.yaml", data: []byte("apiVersion: v2\nname: demo\nversion: 9.9.9\n")})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.archive, "demo", "1.2.3")
			if !errors.Is(err, ErrBadChart) {
				t.Fatalf("err = %v, want ErrBadChart", err)
			}
			if !strings.Contains(err.Error(), "chart demo 1.2.3") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the chart and version or say %q", err, tc.want)
			}
		})
	}
}

func TestRenderFindsImages(t *testing.T) {
	ch, err := Load(demoChart(t), "demo", "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	uses, err := Render(ch, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range uses {
		got = append(got, u.Template+" "+u.Image)
	}
	want := []string{
		"demo/templates/deployment.yaml busybox:1.36",
		"demo/templates/deployment.yaml ghcr.io/org/side@sha256:0123456789012345678901234567890123456789012345678901234567890123",
		"demo/templates/deployment.yaml registry.example.com/team/app:1.0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("images:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A values file overrides the defaults, as helm -f does.
	vf := filepath.Join(t.TempDir(), "v.yaml")
	if err := os.WriteFile(vf, []byte("image:\n  tag: \"2.0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uses, err = Render(ch, []string{vf})
	if err != nil {
		t.Fatal(err)
	}
	if uses[2].Image != "registry.example.com/team/app:2.0" {
		t.Errorf("with a values file: %+v", uses)
	}
}

func TestRenderFailureNamesChart(t *testing.T) {
	ch, err := Load(demoChart(t, file{name: "demo/templates/bad.yaml", data: []byte(`x: {{ required "set .Values.needed" .Values.needed }}`)}), "demo", "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(ch, nil)
	if !errors.Is(err, ErrRender) || !strings.Contains(err.Error(), "chart demo 1.2.3") || !strings.Contains(err.Error(), "set .Values.needed") {
		t.Fatalf("err = %v, want ErrRender naming chart, version and the template's message", err)
	}
}

// repoServer serves index.yaml and the archives given by file name.
func repoServer(t *testing.T, index string, files map[string][]byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/index.yaml" {
			_, _ = io.WriteString(w, index)
			return
		}
		if b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]; ok {
			_, _ = w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func indexFor(entries ...string) string {
	return "apiVersion: v1\nentries:\n  demo:\n" + strings.Join(entries, "")
}

func entry(version, url, digest string) string {
	return "  - name: demo\n    version: " + version + "\n    urls: [" + url + "]\n    digest: " + digest + "\n    created: 2026-01-02T03:04:05Z\n"
}

func TestRepoFetchPicksHighestAndChecksDigest(t *testing.T) {
	good := demoChart(t)
	sum := sha256.Sum256(good)
	digest := hex.EncodeToString(sum[:])
	other := tgz(t, file{name: "demo/Chart.yaml", data: []byte("apiVersion: v2\nname: demo\nversion: 1.1.0\n")})
	srv := repoServer(t, indexFor(entry("1.1.0", "demo-1.1.0.tgz", ""), entry("1.2.3", "demo-1.2.3.tgz", digest), entry("2.0.0", "demo-2.0.0.tgz", "")),
		map[string][]byte{"demo-1.2.3.tgz": good, "demo-1.1.0.tgz": other, "demo-1.2.3.tgz.prov": []byte("signed")})
	r := &Repo{URL: srv.URL}
	f, err := r.Fetch(context.Background(), "demo", ">=1.0.0 <2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != "1.2.3" || !bytes.Equal(f.Archive, good) || string(f.Prov) != "signed" || f.Created.Year() != 2026 {
		t.Errorf("fetched %s (%d bytes, prov %q, created %v), want 1.2.3 with its bytes and provenance", f.Version, len(f.Archive), f.Prov, f.Created)
	}
	if _, err := r.Fetch(context.Background(), "demo", ">=3.0.0"); !errors.Is(err, ErrNoVersion) {
		t.Errorf("no match: err = %v, want ErrNoVersion", err)
	}
}

func TestRepoFetchRefusesLyingIndex(t *testing.T) {
	good := demoChart(t)
	lie := strings.Repeat("ab", 32)
	srv := repoServer(t, indexFor(entry("1.2.3", "demo-1.2.3.tgz", lie)), map[string][]byte{"demo-1.2.3.tgz": good})
	_, err := (&Repo{URL: srv.URL}).Fetch(context.Background(), "demo", "1.2.3")
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "chart demo 1.2.3") || !strings.Contains(err.Error(), lie) {
		t.Fatalf("err = %v, want ErrDigestMismatch naming chart, version and the index digest", err)
	}
}

func TestRepoSendsCredentialsOnlyToItsHost(t *testing.T) {
	var sawAuth []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); ok {
			sawAuth = append(sawAuth, "other")
		}
		_, _ = w.Write(demoChart(t))
	}))
	t.Cleanup(other.Close)
	repo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "reader" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, indexFor(entry("1.2.3", other.URL+"/demo-1.2.3.tgz", "")))
	}))
	t.Cleanup(repo.Close)
	if _, err := (&Repo{URL: repo.URL}).Fetch(context.Background(), "demo", "1.2.3"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without credentials: err = %v, want a 401", err)
	}
	if _, err := (&Repo{URL: repo.URL, Username: "reader", Password: "pw"}).Fetch(context.Background(), "demo", "1.2.3"); err != nil {
		t.Fatal(err)
	}
	if len(sawAuth) > 0 {
		t.Errorf("credentials were sent to another host: %v", sawAuth)
	}
}

// TestArtifactMatchesHelmPush checks the shape helm push writes: config =
// the chart metadata's JSON, layers sorted by digest, helm's annotations
// with title and version not overridable.
func TestArtifactMatchesHelmPush(t *testing.T) {
	archive := demoChart(t)
	ch, err := Load(archive, "demo", "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewArtifact(archive, []byte("prov"), ch.Metadata, "2026-01-02T03:04:05Z")
	if err != nil {
		t.Fatal(err)
	}
	wantConfig, _ := json.Marshal(ch.Metadata)
	if !bytes.Equal(a.Config.Data, wantConfig) || a.Config.Descriptor.MediaType != ConfigMediaType {
		t.Errorf("config %s (%s)", a.Config.Data, a.Config.Descriptor.MediaType)
	}
	var m struct {
		MediaType string `json:"mediaType"`
		Layers    []struct {
			MediaType, Digest string
		} `json:"layers"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(a.Manifest.Data, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 || m.Layers[0].Digest > m.Layers[1].Digest {
		t.Errorf("layers %+v, want the chart and its provenance sorted by digest", m.Layers)
	}
	var chartLayer *Blob
	for i := range a.Layers {
		if a.Layers[i].Descriptor.MediaType == ChartLayerMediaType {
			chartLayer = &a.Layers[i]
		}
	}
	if chartLayer == nil || !bytes.Equal(chartLayer.Data, archive) {
		t.Error("the chart layer is not the archive's bytes")
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.title": "demo", "org.opencontainers.image.version": "1.2.3",
		"org.opencontainers.image.created": "2026-01-02T03:04:05Z", "org.opencontainers.image.description": "a demo",
		"org.opencontainers.image.url": "https://example.com", "team": "infra",
	} {
		if m.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], v)
		}
	}
	if m.MediaType != "" {
		t.Errorf("manifest has mediaType %q; helm push writes none", m.MediaType)
	}
	if d, err := ChartLayer(a.Manifest.Data); err != nil || d.Digest != chartLayer.Descriptor.Digest {
		t.Errorf("ChartLayer = %v, %v", d, err)
	}
}
