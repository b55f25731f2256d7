package test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/test/harness"
)

// helmPath finds the helm CLI on PATH or in $(go env GOPATH)/bin.
func helmPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("helm not found: install it with `go install helm.sh/helm/v3/cmd/helm@v3.22.0` (.ci/run does)")
	return ""
}

// helmCLI runs the real helm with its state in a private home.
type helmCLI struct {
	bin, home string
}

func newHelm(t *testing.T) *helmCLI {
	return &helmCLI{bin: helmPath(t), home: t.TempDir()}
}

func (h *helmCLI) run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(h.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+h.home,
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"), "DOCKER_CONFIG="+filepath.Join(h.home, "docker"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// chartRepo is a classic Helm repository made with the real helm CLI and
// served over HTTP on loopback.
type chartRepo struct {
	URL string
	Dir string
}

// tgz returns the bytes of one packaged version.
func (r *chartRepo) tgz(t *testing.T, name, version string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Dir, name+"-"+version+".tgz"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// makeChartRepo runs `helm create demo`, points its images at images
// (deployment image, test-hook image, both REGISTRY/PATH:TAG), packages
// versions and indexes them with `helm repo index`.
func makeChartRepo(t *testing.T, h *helmCLI, deployImage, hookImage string, versions ...string) *chartRepo {
	t.Helper()
	work := t.TempDir()
	h.run(t, work, "create", "demo")
	i := strings.LastIndex(deployImage, ":")
	repo, tag := deployImage[:i], deployImage[i+1:]
	editFile(t, filepath.Join(work, "demo", "values.yaml"), func(s string) string {
		s = strings.Replace(s, "repository: nginx", "repository: "+repo, 1)
		return strings.Replace(s, `tag: ""`, `tag: "`+tag+`"`, 1)
	})
	editFile(t, filepath.Join(work, "demo", "templates", "tests", "test-connection.yaml"), func(s string) string {
		return strings.Replace(s, "image: busybox", "image: "+hookImage, 1)
	})
	dir := t.TempDir()
	for _, v := range versions {
		h.run(t, work, "package", "demo", "--version", v, "-d", dir)
	}
	h.run(t, dir, "repo", "index", ".")
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return &chartRepo{URL: srv.URL, Dir: dir}
}

func editFile(t *testing.T, path string, edit func(string) string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := edit(string(b))
	if s == string(b) {
		t.Fatalf("%s: the edit changed nothing (helm create's template moved?)", path)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeChartMapping(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// exportJSON is the part of `ferry export --json` the chart tests read.
type exportJSON struct {
	Images []struct {
		Source string   `json:"source"`
		Target string   `json:"target"`
		Tags   []string `json:"tags"`
		Digest string   `json:"digest"`
		Kind   string   `json:"kind"`
	} `json:"images"`
	Warnings []string `json:"warnings"`
}

func chartExportJSON(t *testing.T, bin string, args ...string) (*exportJSON, string) {
	t.Helper()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		append([]string{"export", "--json", "-q"}, args...)...)
	if code != 0 {
		t.Fatalf("export %v: exit %d\n%s\n%s", args, code, stdout, stderr)
	}
	var s exportJSON
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("export --json: %v\n%s", err, stdout)
	}
	return &s, stderr
}

// TestChartClassicRepoRoundTrip: a chart from a classic Helm repository
// (made by helm create/package/repo index) crosses in the same bundle as
// the images it renders; after import, `helm pull` from the target returns
// the very bytes the repository served, `helm template` renders them, and
// the chart's images pull at the mapped paths with their source digests.
func TestChartClassicRepoRoundTrip(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{impAlice: impAPW}})
	fixtures := harness.Seed(t, src, impAlice, harness.SmallSet())
	repo := makeChartRepo(t, h, src.Host+"/spaceone/console:1.11.0", src.Host+"/library/alpine:3.19", "2.0.0", "2.1.0", "3.0.0")

	m := writeChartMapping(t, `
tasks:
  - name: base
    source:
      registry: `+src.Host+`
    mappings:
      - from: library/redis
        to: mirror/library/redis
        tags: ['7.2.4']
charts:
  - repo: `+repo.URL+`
    name: demo
    version: ">=2.0.0 <3.0.0"
    to: cloudforet/charts
    images: true
`)
	out := filepath.Join(t.TempDir(), "bundle.tar")
	sum, _ := chartExportJSON(t, bin, "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice)
	targets := map[string]string{}
	for _, im := range sum.Images {
		targets[im.Target+":"+strings.Join(im.Tags, ",")] = im.Kind
	}
	for _, want := range []string{"cloudforet/charts/demo:2.1.0", "mirror/spaceone/console:1.11.0", "mirror/library/alpine:3.19", "mirror/library/redis:7.2.4"} {
		if _, ok := targets[want]; !ok {
			t.Errorf("export carries no %s; it carries %v", want, targets)
		}
	}
	if targets["cloudforet/charts/demo:2.1.0"] != "helm-chart" {
		t.Errorf("chart kind %q, want helm-chart", targets["cloudforet/charts/demo:2.1.0"])
	}
	if len(sum.Warnings) > 0 {
		t.Errorf("warnings with every image carried: %v", sum.Warnings)
	}

	if stdout, stderr, code := harness.Run(t, bin, "verify", out); code != 0 {
		t.Fatalf("verify: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, _, code := harness.Run(t, bin, "inspect", out)
	if code != 0 || !strings.Contains(stdout, "cloudforet/charts/demo:2.1.0") || !strings.Contains(stdout, "helm-chart") {
		t.Errorf("inspect (exit %d) does not show the chart:\n%s", code, stdout)
	}

	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	isum, stderr, code := runImport(t, bin, robotPW+"\n", out, "--to", dst.Host, "--ca-cert", dst.CAFile, "--username", robot, "--password-stdin")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	if isum.Failed != 0 {
		t.Fatalf("import failures: %+v", isum.Failures)
	}

	pulled := t.TempDir()
	h.run(t, pulled, "pull", "oci://"+dst.Host+"/cloudforet/charts/demo", "--version", "2.1.0",
		"--ca-file", dst.CAFile, "--username", robot, "--password", robotPW, "-d", pulled)
	got, err := os.ReadFile(filepath.Join(pulled, "demo-2.1.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if want := repo.tgz(t, "demo", "2.1.0"); sha256Of(got) != sha256Of(want) {
		t.Fatalf("helm pull from the target: sha256 %s, the repository served %s", sha256Of(got), sha256Of(want))
	}
	rendered := h.run(t, pulled, "template", "demo", filepath.Join(pulled, "demo-2.1.0.tgz"))
	if !strings.Contains(rendered, src.Host+"/spaceone/console:1.11.0") {
		t.Errorf("helm template of the pulled chart does not render its image:\n%s", rendered)
	}
	checkMappedImages(t, dst, fixtures, map[string]string{
		"spaceone/console:1.11.0": "mirror/spaceone/console:1.11.0",
		"library/alpine:3.19":     "mirror/library/alpine:3.19",
	})

	// mirrors prints the values fragment for the chart's own image keys.
	stdout, stderr, code = harness.Run(t, bin, "mirrors", out, "--registry", dst.Host)
	if code != 0 || !strings.Contains(stdout, "values-airgap.yaml for chart demo 2.1.0") ||
		!strings.Contains(stdout, "image:\n    repository: "+dst.Host+"/mirror/spaceone/console\n") {
		t.Errorf("mirrors (exit %d) has no values fragment for the chart:\n%s\n%s", code, stdout, stderr)
	}

	// serve: helm pulls the same bytes straight from the bundle.
	sv := startServe(t, bin, out)
	fromServe := t.TempDir()
	h.run(t, fromServe, "pull", "oci://"+sv.addr+"/cloudforet/charts/demo", "--version", "2.1.0", "--plain-http", "-d", fromServe)
	if got, err := os.ReadFile(filepath.Join(fromServe, "demo-2.1.0.tgz")); err != nil || sha256Of(got) != sha256Of(repo.tgz(t, "demo", "2.1.0")) {
		t.Errorf("helm pull from ferry serve: %v, or other bytes than the repository served", err)
	}

	// The same selection again is nothing new for a delta: the chart's
	// manifest is the same bytes run after run.
	_, stderr, code = harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", filepath.Join(t.TempDir(), "delta.tar"), "--since", out, "--ca-cert", src.CAFile, "--username", impAlice)
	if code != 0 || !strings.Contains(stderr, "nothing new") {
		t.Errorf("delta of an unchanged selection: exit %d\n%s", code, stderr)
	}
}

// checkMappedImages asserts that each source ref pulls from dst at its
// mapped path with the source digest.
func checkMappedImages(t *testing.T, dst *harness.Registry, fixtures []harness.Fixture, refs map[string]string) {
	t.Helper()
	byRef := map[string]harness.Fixture{}
	for _, f := range fixtures {
		byRef[f.Ref()] = f
	}
	for from, to := range refs {
		desc, err := remote.Get(dst.Ref(t, to), dst.RemoteOptions(robot)...)
		if err != nil {
			t.Errorf("%s is not pullable at %s: %v", from, to, err)
			continue
		}
		if desc.Digest.String() != byRef[from].Digest {
			t.Errorf("%s at %s: digest %s, source %s", from, to, desc.Digest, byRef[from].Digest)
		}
		if oci.KindOf(desc.MediaType) == oci.KindUnknown {
			t.Errorf("%s: media type %s", to, desc.MediaType)
		}
	}
}

// TestChartOCISourceAndWarnings: a chart pushed with `helm push` to an OCI
// registry crosses with the manifest helm wrote (same digest, so same
// config and layer bytes as a classic chart of the same .tgz); a chart
// whose images are not carried warns, naming chart, template and image;
// --dry-run with images: true lists the chart's images.
func TestChartOCISourceAndWarnings(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{impAlice: impAPW}})
	harness.Seed(t, src, impAlice, harness.SmallSet())
	repo := makeChartRepo(t, h, src.Host+"/spaceone/console:1.11.0", src.Host+"/library/alpine:3.19", "2.1.0")
	h.run(t, repo.Dir, "push", filepath.Join(repo.Dir, "demo-2.1.0.tgz"), "oci://"+src.Host+"/charts",
		"--ca-file", src.CAFile, "--username", impAlice, "--password", impAPW)
	pushed, err := remote.Get(src.Ref(t, "charts/demo:2.1.0"), src.RemoteOptions(impAlice)...)
	if err != nil {
		t.Fatal(err)
	}

	// images: false: the chart crosses alone, and each image it renders
	// that no task selects is a warning.
	m := writeChartMapping(t, `
charts:
  - repo: oci://`+src.Host+`/charts
    name: demo
    version: "~2.1"
    to: team/charts
`)
	out := filepath.Join(t.TempDir(), "bundle.tar")
	sum, stderr := chartExportJSON(t, bin, "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice)
	if len(sum.Images) != 1 || sum.Images[0].Target != "team/charts/demo" || sum.Images[0].Digest != pushed.Digest.String() || sum.Images[0].Kind != "helm-chart" {
		t.Fatalf("export of the OCI chart: %+v, want team/charts/demo at %s (helm push's digest), kind helm-chart", sum.Images, pushed.Digest)
	}
	for _, want := range []string{
		"chart demo 2.1.0: template demo/templates/deployment.yaml uses image " + src.Host + "/spaceone/console:1.11.0",
		"chart demo 2.1.0: template demo/templates/tests/test-connection.yaml uses image " + src.Host + "/library/alpine:3.19",
	} {
		if !strings.Contains(stderr, want) || !strings.Contains(strings.Join(sum.Warnings, "\n"), want) {
			t.Errorf("no warning %q\nstderr:\n%s", want, stderr)
		}
	}

	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	preview, stderr, code := runImport(t, bin, robotPW+"\n", out, "--to", dst.Host+"/mirror", "--dry-run", "--ca-cert", dst.CAFile, "--username", robot, "--password-stdin")
	if code != 0 || len(preview.Images) != 1 || !strings.HasSuffix(preview.Images[0].Repository, "mirror/team/charts/demo") {
		t.Errorf("import --dry-run: exit %d, %+v\n%s", code, preview.Images, stderr)
	}
	if _, stderr, code := runImport(t, bin, robotPW+"\n", out, "--to", dst.Host+"/mirror", "--ca-cert", dst.CAFile, "--username", robot, "--password-stdin"); code != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	pulled := t.TempDir()
	h.run(t, pulled, "pull", "oci://"+dst.Host+"/mirror/team/charts/demo", "--version", "2.1.0",
		"--ca-file", dst.CAFile, "--username", robot, "--password", robotPW, "-d", pulled)
	got, err := os.ReadFile(filepath.Join(pulled, "demo-2.1.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if want := repo.tgz(t, "demo", "2.1.0"); sha256Of(got) != sha256Of(want) {
		t.Fatalf("helm pull from the target: sha256 %s, pushed %s", sha256Of(got), sha256Of(want))
	}

	// The same .tgz from a classic repository gets helm push's config and
	// layer: only the manifest's created annotation may differ.
	classic := writeChartMapping(t, "charts:\n  - {repo: '"+repo.URL+"', name: demo, version: 2.1.0}\n")
	cout := filepath.Join(t.TempDir(), "classic.tar")
	chartExportJSON(t, bin, "-f", classic, "-o", cout)
	if _, stderr, code := runImport(t, bin, robotPW+"\n", cout, "--to", dst.Host, "--ca-cert", dst.CAFile, "--username", robot, "--password-stdin"); code != 0 {
		t.Fatalf("import of the classic chart: exit %d\n%s", code, stderr)
	}
	ours, err := remote.Get(dst.Ref(t, "charts/demo:2.1.0"), dst.RemoteOptions(robot)...)
	if err != nil {
		t.Fatal(err)
	}
	om, _ := oci.Manifest(ours.Manifest)
	hm, _ := oci.Manifest(pushed.Manifest)
	if om.Config.Digest != hm.Config.Digest || om.Config.MediaType != hm.Config.MediaType || len(om.Layers) != 1 || om.Layers[0].Digest != hm.Layers[0].Digest || om.Layers[0].MediaType != hm.Layers[0].MediaType {
		t.Errorf("classic chart manifest differs from helm push's beyond annotations:\nferry: %s\nhelm:  %s", ours.Manifest, pushed.Manifest)
	}

	// images: true in a dry run: the images are listed, nothing is written.
	dry := writeChartMapping(t, `
charts:
  - repo: oci://`+src.Host+`/charts
    name: demo
    version: 2.1.0
    images: true
`)
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "--dry-run", "-f", dry, "--ca-cert", src.CAFile, "--username", impAlice)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"spaceone/console", "library/alpine", "charts/demo"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run does not list %s:\n%s", want, stdout)
		}
	}
	if strings.Contains(stderr, "does not carry") {
		t.Errorf("dry run with images: true still warns:\n%s", stderr)
	}
}

// TestChartHostileRepoWritesNothing: a repository whose index lies about a
// chart's digest, and a chart that fails to render, stop the export with
// an error naming chart and version; no bundle is left behind. A malformed
// --chart is a usage error (exit 2).
func TestChartHostileRepoWritesNothing(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	repo := makeChartRepo(t, h, "127.0.0.1:1/app:1.0", "127.0.0.1:1/hook:1.0", "1.0.0")
	// A second chart whose template fails unless a value is set.
	work := t.TempDir()
	h.run(t, work, "create", "broken")
	if err := os.WriteFile(filepath.Join(work, "broken", "templates", "need.yaml"), []byte(`x: {{ required "set .Values.needed" .Values.needed }}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h.run(t, work, "package", "broken", "--version", "0.3.0", "-d", repo.Dir)
	h.run(t, repo.Dir, "repo", "index", ".")
	editFile(t, filepath.Join(repo.Dir, "index.yaml"), func(s string) string {
		return strings.Replace(s, "digest: "+sha256Of(repo.tgz(t, "demo", "1.0.0")), "digest: "+strings.Repeat("0", 64), 1)
	})

	for _, tc := range []struct{ name, chart, want string }{
		{"lying index", repo.URL + "/demo@1.0.0", "chart demo 1.0.0"},
		{"render failure", repo.URL + "/broken@0.3.0", "chart broken 0.3.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := writeChartMapping(t, "charts:\n  - {repo: '"+repo.URL+"', name: "+strings.Split(strings.TrimPrefix(tc.chart, repo.URL+"/"), "@")[0]+", version: "+strings.Split(tc.chart, "@")[1]+", images: true}\n")
			for _, args := range [][]string{{"-f", m}, {"--chart", tc.chart}} {
				out := filepath.Join(t.TempDir(), "bundle.tar")
				stdout, stderr, code := harness.Run(t, bin, append([]string{"export", "-o", out}, args...)...)
				if code != 1 || !strings.Contains(stderr, tc.want) {
					t.Errorf("export %v: exit %d, want 1 and an error naming %q\n%s\n%s", args, code, tc.want, stdout, stderr)
				}
				if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
					t.Errorf("export %v left %d files behind", args, len(entries))
				}
			}
		})
	}
	if _, stderr, code := harness.Run(t, bin, "export", "-o", filepath.Join(t.TempDir(), "b.tar"), "--chart", repo.URL+"/demo"); code != 2 || !strings.Contains(stderr, "REPO/NAME@VERSION") {
		t.Errorf("malformed --chart: exit %d, want 2\n%s", code, stderr)
	}
}

// TestChartClassicRepoTLSAndBasicAuth: a classic repository behind TLS from
// a private CA and basic auth is read with --ca-cert and the credentials of
// --auth-file for its host; without them the error names the repository and
// the status, and says where credentials go.
func TestChartClassicRepoTLSAndBasicAuth(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	plain := makeChartRepo(t, h, "127.0.0.1:1/app:1.0", "127.0.0.1:1/hook:1.0", "1.0.0")
	ca := harness.NewCA(t)
	files := http.FileServer(http.Dir(plain.Dir))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "reader" || p != "chart-pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="charts"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.IssueTLS(t)}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")

	authFile := filepath.Join(t.TempDir(), "config.json")
	cfg := `{"auths": {"` + host + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("reader:chart-pw")) + `"}}}`
	if err := os.WriteFile(authFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	m := writeChartMapping(t, "charts:\n  - {repo: '"+srv.URL+"', name: demo, version: 1.0.0, to: team/charts}\n")
	out := filepath.Join(t.TempDir(), "b.tar")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-f", m, "-o", out, "--ca-cert", ca.CertFile, "--auth-file", authFile)
	if code != 0 {
		t.Fatalf("export with --ca-cert and --auth-file: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "team/charts/demo") {
		t.Errorf("export does not list the chart:\n%s", stdout)
	}
	if strings.Contains(stdout+stderr, "chart-pw") {
		t.Errorf("the repository password shows in the output")
	}

	_, stderr, code = harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-f", m, "-o", filepath.Join(t.TempDir(), "c.tar"), "--ca-cert", ca.CertFile)
	if code != 1 || !strings.Contains(stderr, srv.URL) || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "--auth-file") {
		t.Errorf("without credentials: exit %d, want 1 and an error naming the repository, 401 and --auth-file\n%s", code, stderr)
	}
}

// TestChartProvenanceCrosses: a chart signed with `helm package --sign`
// crosses with its .prov file as helm push's provenance layer, and
// `helm pull --verify` against the target checks the signature.
func TestChartProvenanceCrosses(t *testing.T) {
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		t.Fatal("gpg not found: install gnupg (Debian: apt-get install gnupg) to make a signed chart")
	}
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	work := t.TempDir()
	gnupg := filepath.Join(work, "gnupg")
	if err := os.Mkdir(gnupg, 0o700); err != nil {
		t.Fatal(err)
	}
	runGPG := func(args ...string) []byte {
		cmd := exec.Command(gpg, append([]string{"--batch", "--homedir", gnupg}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v", args, err)
		}
		return out
	}
	runGPG("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", "ferry test <test@example.com>", "rsa2048", "sign", "never")
	secring, pubring := filepath.Join(work, "secring.gpg"), filepath.Join(work, "pubring.gpg")
	for path, arg := range map[string]string{secring: "--export-secret-keys", pubring: "--export"} {
		if err := os.WriteFile(path, runGPG(arg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.run(t, work, "create", "signed")
	repoDir := t.TempDir()
	h.run(t, work, "package", "signed", "--version", "1.0.0", "--sign", "--key", "ferry test", "--keyring", secring, "-d", repoDir)
	h.run(t, repoDir, "repo", "index", ".")
	srv := httptest.NewServer(http.FileServer(http.Dir(repoDir)))
	t.Cleanup(srv.Close)

	m := writeChartMapping(t, "charts:\n  - {repo: '"+srv.URL+"', name: signed, version: 1.0.0, to: team/charts}\n")
	out := filepath.Join(t.TempDir(), "b.tar")
	chartExportJSON(t, bin, "-f", m, "-o", out)
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	if _, stderr, code := runImport(t, bin, "", out, "--to", dst.Host); code != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	desc, err := remote.Get(dst.Ref(t, "team/charts/signed:1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	man, _ := oci.Manifest(desc.Manifest)
	prov, _ := os.ReadFile(filepath.Join(repoDir, "signed-1.0.0.tgz.prov"))
	found := false
	for _, l := range man.Layers {
		found = found || (l.MediaType == "application/vnd.cncf.helm.chart.provenance.v1.prov" && l.Digest.Hex == sha256Of(prov))
	}
	if !found {
		t.Fatalf("no provenance layer with the .prov's bytes in %s", desc.Manifest)
	}
	pulled := t.TempDir()
	h.run(t, pulled, "pull", "oci://"+dst.Host+"/team/charts/signed", "--version", "1.0.0", "--plain-http",
		"--verify", "--keyring", pubring, "-d", pulled)
	if got, _ := os.ReadFile(filepath.Join(pulled, "signed-1.0.0.tgz")); sha256Of(got) != sha256Of(mustRead(t, filepath.Join(repoDir, "signed-1.0.0.tgz"))) {
		t.Errorf("helm pull --verify: other bytes than the repository served")
	}
}
