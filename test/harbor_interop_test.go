package test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/test/harness"
)

// harborArtifactsPath is Harbor's API path of project/repo's artifacts
// (a repository name's slashes are escaped twice there).
func harborArtifactsPath(project, repo string) string {
	return "/projects/" + project + "/repositories/" + url.PathEscape(url.PathEscape(repo)) + "/artifacts"
}

// TestHarborHelmPull: a chart from a classic Helm repository, imported into
// a Harbor project by a project robot, is a CHART artifact there, and
// `helm pull oci://HARBOR/PROJECT/charts/demo` returns the very .tgz the
// repository served.
func TestHarborHelmPull(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	hc := newHelm(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, src, "", harness.FixtureSet{Name: "chart", Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "app/hook", Tag: "1.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	repo := makeChartRepo(t, hc, src.Host+"/app/web:1.0", src.Host+"/app/hook:1.0", "2.0.0", "2.1.0")
	m := writeChartMapping(t, `
charts:
  - repo: `+repo.URL+`
    name: demo
    version: ">=2.0.0 <3.0.0"
    to: charts
    images: true
`)
	out := filepath.Join(t.TempDir(), "bundle.tar")
	if _, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-q", "-f", m, "-o", out); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, stderr)
	}
	proj := h.NewProject(t, "charts")
	user, secret := h.NewRobot(t, proj, "importer", harness.PushPull)
	sum, stderr, code := importHarbor(t, bin, h, out, proj, user, secret)
	if code != 0 || sum.Failed != 0 {
		t.Fatalf("import: exit %d, %d failed\n%s", code, sum.Failed, stderr)
	}

	var arts []struct {
		Digest string `json:"digest"`
		Type   string `json:"type"`
	}
	h.MustAPI(t, http.MethodGet, harborArtifactsPath(proj, "charts/demo"), nil, &arts, http.StatusOK)
	if len(arts) != 1 || arts[0].Type != "CHART" {
		t.Errorf("Harbor's artifacts of %s/charts/demo: %+v, want one CHART", proj, arts)
	}

	// As the docs show it: log in once, then pull.
	dir := t.TempDir()
	hc.run(t, dir, "registry", "login", h.Host, "--insecure", "--username", user, "--password", secret)
	hc.run(t, dir, "pull", "oci://"+h.Host+"/"+proj+"/charts/demo", "--version", "2.1.0", "--plain-http", "-d", dir)
	got, err := os.ReadFile(filepath.Join(dir, "demo-2.1.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if want := repo.tgz(t, "demo", "2.1.0"); sha256Of(got) != sha256Of(want) {
		t.Fatalf("helm pull from Harbor: sha256 %s, the repository served %s", sha256Of(got), sha256Of(want))
	}
	// The chart's images went under the same project prefix.
	for _, ref := range []string{"app/web:1.0", "app/hook:1.0"} {
		if harborDigest(t, h, proj+"/"+ref) == "" {
			t.Errorf("the chart's image %s is not in %s", ref, proj)
		}
	}
}

// TestHarborSignaturesAreAccessories: a cosign signature and an OCI
// referrer (an SBOM with a subject), carried with --with-referrers, arrive
// in Harbor with their digests, Harbor lists both as accessories of the
// image, and `cosign verify` against Harbor passes.
func TestHarborSignaturesAreAccessories(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	cosign := cosignPath(t)
	bin := harness.BuildFerry(t)
	src := harness.StartInProcess(t) // answers the referrers API
	fx := harness.Seed(t, src, "", harness.FixtureSet{Name: "signed", Specs: []harness.FixtureSpec{
		{Repo: "app/signed", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	docker := filepath.Join(dir, ".docker")
	env := []string{"HOME=" + dir, "COSIGN_PASSWORD=", "DOCKER_CONFIG=" + docker, "TUF_ROOT=" + filepath.Join(dir, "tuf")}
	cos := func(want int, args ...string) string {
		t.Helper()
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Dir: dir, Env: env}, cosign, args...)
		if code != want {
			t.Fatalf("cosign %s: exit %d, want %d\n%s\n%s", strings.Join(args, " "), code, want, stdout, stderr)
		}
		return stdout + stderr
	}
	cos(0, "generate-key-pair")
	cos(0, "sign", "--yes", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry", src.Host+"/app/signed@"+fx[0].Digest)
	sigTag := "sha256-" + strings.TrimPrefix(fx[0].Digest, "sha256:") + ".sig"
	sig, err := remote.Head(src.Ref(t, "app/signed:"+sigTag), src.RemoteOptions("")...)
	if err != nil {
		t.Fatalf("cosign left no %s: %v", sigTag, err)
	}
	// An SBOM that names the image as its subject.
	subject, err := remote.Head(src.Ref(t, "app/signed:1.0"), src.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	art, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3"}`), "application/spdx+json")})
	if err != nil {
		t.Fatal(err)
	}
	art = mutate.ConfigMediaType(mutate.MediaType(art, types.OCIManifestSchema1), "application/vnd.oci.empty.v1+json")
	art = mutate.Subject(art, *subject).(v1.Image)
	sbom, _ := art.Digest()
	if err := remote.Write(src.Ref(t, "app/signed@"+sbom.String()), art, src.RemoteOptions("")...); err != nil {
		t.Fatal(err)
	}

	m := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/signed\n        tags: ['1.0']\n")
	out := filepath.Join(dir, "b.tar")
	if _, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-q", "--with-referrers", "-f", m, "-o", out); code != 0 {
		t.Fatalf("export --with-referrers: exit %d\n%s", code, stderr)
	}
	proj := h.NewProject(t, "signed")
	user, secret := h.NewRobot(t, proj, "importer", harness.PushPull)
	if sum, stderr, code := importHarbor(t, bin, h, out, proj, user, secret); code != 0 || sum.Failed != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}

	var acc []struct {
		Digest  string `json:"digest"`
		Type    string `json:"type"`
		Subject string `json:"subject_artifact_digest"`
	}
	h.MustAPI(t, http.MethodGet, harborArtifactsPath(proj, "app/signed")+"/"+fx[0].Digest+"/accessories", nil, &acc, http.StatusOK)
	kinds := map[string]string{}
	for _, a := range acc {
		kinds[a.Digest] = a.Type
	}
	if kinds[sig.Digest.String()] != "signature.cosign" {
		t.Errorf("Harbor does not list the cosign signature %s as an accessory of %s: %+v", sig.Digest, fx[0].Digest, acc)
	}
	if kinds[sbom.String()] != "subject.accessory" {
		t.Errorf("Harbor does not list the SBOM %s as an accessory of %s: %+v", sbom, fx[0].Digest, acc)
	}
	// The same through the artifact list, as the UI reads it.
	var arts []struct {
		Digest      string `json:"digest"`
		Accessories []struct {
			Digest string `json:"digest"`
		} `json:"accessories"`
	}
	h.MustAPI(t, http.MethodGet, harborArtifactsPath(proj, "app/signed")+"?with_accessory=true", nil, &arts, http.StatusOK)
	found := 0
	for _, a := range arts {
		if a.Digest == fx[0].Digest {
			found = len(a.Accessories)
		}
	}
	if found < 2 {
		t.Errorf("with_accessory=true lists %d accessories of %s, want 2: %+v", found, fx[0].Digest, arts)
	}

	// cosign verify reads the signature back from Harbor.
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	if err := os.MkdirAll(docker, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(docker, "config.json"), fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, h.Host, auth))
	got := cos(0, "verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", h.Host+"/"+proj+"/app/signed:1.0")
	if !strings.Contains(got, fx[0].Digest) {
		t.Errorf("cosign verify against Harbor does not name the image digest:\n%s", got)
	}
}

// TestHarborInventoryAsRobot: a project robot (which Harbor refuses
// /v2/_catalog) takes an inventory of its project: the tag lists of the
// repositories the mapping names, one of which Harbor does not have yet;
// export --have leaves out what Harbor holds, and the import of that
// bundle completes with every tag exact.
func TestHarborInventoryAsRobot(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fx1 := harness.Seed(t, src, "", harness.FixtureSet{Name: "v1", Specs: []harness.FixtureSpec{
		{Repo: "app/a", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "app/b", Tag: "1.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	proj := h.NewProject(t, "inventory")
	user, secret := h.NewRobot(t, proj, "importer", harness.PushPull)
	first := exportFrom(t, bin, src, fx1)
	if sum, stderr, code := importHarbor(t, bin, h, first, proj, user, secret); code != 0 || sum.Failed != 0 {
		t.Fatalf("first import: exit %d\n%s", code, stderr)
	}
	// Harbor refuses the catalog to the robot: inventory must not need it.
	req, _ := http.NewRequest(http.MethodGet, h.URL+"/v2/_catalog", nil)
	req.SetBasicAuth(user, secret)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Logf("note: Harbor answered the robot's /v2/_catalog with 200")
		}
	}

	fx2 := harness.Seed(t, src, "", harness.FixtureSet{Name: "v2", Specs: []harness.FixtureSpec{
		{Repo: "app/a", Tag: "2.0", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 3000},
		{Repo: "app/c", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+
		"\n    mappings:\n      - from: app/a\n        tags: ['1.0', '2.0']\n      - from: app/b\n        tags: ['1.0']\n      - from: app/c\n        tags: ['1.0']\n")
	have := filepath.Join(dir, "have.json")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t), Stdin: []byte(secret)}, bin,
		"inventory", "--json", "-f", m, "--to", h.Host+"/"+proj, "-o", have, "--plain-http", "--username", user, "--password-stdin")
	if code != 0 {
		t.Fatalf("inventory as robot: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var inv inventorySummary
	if err := json.Unmarshal([]byte(stdout), &inv); err != nil {
		t.Fatalf("inventory --json: %v\n%s", err, stdout)
	}
	if inv.Repositories != 3 || inv.Tags != 2 {
		t.Errorf("inventory: %d repositories, %d tags; want 3 (one empty) and 2", inv.Repositories, inv.Tags)
	}

	delta := filepath.Join(dir, "delta.tar")
	if _, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-q", "-f", m, "--have", have, "-o", delta); code != 0 {
		t.Fatalf("export --have: exit %d\n%s", code, stderr)
	}
	if full := exportFrom(t, bin, src, append(fx1, fx2...)); fileSize(t, delta) >= fileSize(t, full) {
		t.Errorf("the bundle made with --have (%d bytes) is not smaller than the full one (%d)", fileSize(t, delta), fileSize(t, full))
	}
	sum, stderr, code := importHarbor(t, bin, h, delta, proj, user, secret)
	if code != 0 || sum.Failed != 0 {
		t.Fatalf("import of the --have bundle: exit %d\n%s", code, stderr)
	}
	for _, f := range append(fx1, fx2...) {
		if d := harborDigest(t, h, proj+"/"+f.Ref()); d != f.Digest {
			t.Errorf("%s: %q in Harbor, want %s", f.Ref(), d, f.Digest)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestHarborSyncAndMirrors: `ferry sync` copies a task into a Harbor
// project (target auth in the mapping file, as Cloudforet's files carry
// it); a second round copies nothing. For the same images as Docker Hub's
// (imported: up to date), `ferry mirrors --registry http://HARBOR/PROJECT`
// prints a containerd hosts.toml whose mirror URL, followed the way
// containerd does (override_path, Harbor's token challenge), serves
// docker.io/REPO with its digest; a registries.conf mirror at
// HARBOR/PROJECT; no Docker registry-mirrors (it cannot carry the project
// path); and an ImageDigestMirrorSet to HARBOR/PROJECT/REPO.
func TestHarborSyncAndMirrors(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, src, "", harness.FixtureSet{Name: "sync", Specs: []harness.FixtureSpec{
		{Repo: "library/redis", Tag: "7.2.4", Kind: harness.OCIIndex, Bases: []string{"os"}},
		{Repo: "spaceone/console", Tag: "1.11.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	proj := h.NewProject(t, "sync")
	user, secret := h.NewRobot(t, proj, "sync", harness.PushPull)
	auth := base64.StdEncoding.EncodeToString([]byte(`{"username": "` + user + `", "password": "` + secret + `"}`))
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "m.yaml"), `
tasks:
  - name: mirror
    source:
      registry: `+src.Host+`
    target:
      registry: `+h.Host+`/`+proj+`
      auth: `+auth+`
    mappings:
      - from: library/redis
        tags: ['7.2.4']
      - from: spaceone/console
        tags: ['1.11.0']
`)
	syncOnce := func() syncRound {
		t.Helper()
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "sync", "--json", "--plain-http", "-f", m)
		if code != 0 {
			t.Fatalf("sync into Harbor: exit %d\n%s\n%s", code, stdout, stderr)
		}
		var r syncRound
		if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &r); err != nil {
			t.Fatalf("sync --json: %v\n%s", err, stdout)
		}
		return r
	}
	if r := syncOnce(); r.Copied != 2 || r.Failed != 0 {
		t.Fatalf("first sync round: %+v", r)
	}
	for _, f := range fx {
		if d := harborDigest(t, h, proj+"/"+f.Ref()); d != f.Digest {
			t.Errorf("%s: %q in Harbor, want %s", f.Ref(), d, f.Digest)
		}
	}
	if r := syncOnce(); r.Copied != 0 || r.Unchanged != 2 {
		t.Errorf("second sync round copied %d, unchanged %d; want 0 and 2", r.Copied, r.Unchanged)
	}

	// The same images as Docker Hub's (fetched from the test's registry with
	// --mirror), for mirrors: docker.io/library/redis is HARBOR/PROJECT/library/redis.
	hub := writeFile(t, filepath.Join(dir, "hub.yaml"), "tasks:\n  - name: hub\n    source:\n      registry: docker.io\n    mappings:\n"+
		"      - from: library/redis\n        tags: ['7.2.4']\n      - from: spaceone/console\n        tags: ['1.11.0']\n")
	bundle := filepath.Join(dir, "hub.tar")
	if _, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-q", "-f", hub, "-o", bundle, "--mirror", "docker.io="+src.Host); code != 0 {
		t.Fatalf("export from docker.io through --mirror: exit %d\n%s", code, stderr)
	}
	if sum, stderr, code := importHarbor(t, bin, h, bundle, proj, user, secret); code != 0 || sum.UpToDate != 2 {
		t.Fatalf("import of what sync copied: exit %d, %d up to date\n%s", code, sum.UpToDate, stderr)
	}
	stdout, stderr, code := harness.Run(t, bin, "mirrors", bundle, "--registry", "http://"+h.Host+"/"+proj)
	if code != 0 {
		t.Fatalf("mirrors: exit %d\n%s", code, stderr)
	}
	hostURL := "http://" + h.Host + "/v2/" + proj
	toml := "[host." + fmt.Sprintf("%q", hostURL) + "]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"
	if !strings.Contains(stdout, "/etc/containerd/certs.d/docker.io/hosts.toml") || !strings.Contains(stdout, toml) {
		t.Fatalf("mirrors has no containerd host %s with override_path for docker.io:\n%s", hostURL, stdout)
	}
	conf := "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"" + h.Host + "/" + proj + "\"\ninsecure = true\n"
	if !strings.Contains(stdout, conf) {
		t.Errorf("mirrors has no registries.conf mirror %s/%s for docker.io:\n%s", h.Host, proj, stdout)
	}
	if !strings.Contains(stdout, "Not applicable: Docker Hub images are served under \""+proj+"\"") {
		t.Errorf("mirrors offers Docker a registry-mirrors entry, which cannot carry the project path:\n%s", stdout)
	}
	for _, f := range fx {
		if !strings.Contains(stdout, "  - source: docker.io/"+f.Repo+"\n    mirrors:\n      - "+h.Host+"/"+proj+"/"+f.Repo+"\n") {
			t.Errorf("the ImageDigestMirrorSet does not send docker.io/%s to %s/%s/%s:\n%s", f.Repo, h.Host, proj, f.Repo, stdout)
		}
		// What containerd does with that host for docker.io/REPO:TAG (and
		// registries.conf's location gives the same HARBOR/PROJECT/REPO).
		if d := containerdMirrorGet(t, hostURL, f.Repo, f.Tag, user, secret); d != f.Digest {
			t.Errorf("through the mirror, docker.io/%s resolves to %q, want %s", f.Ref(), d, f.Digest)
		}
	}
}

// containerdMirrorGet resolves REPO:TAG through a containerd mirror host
// with override_path = true, as containerd's docker resolver does: the
// request goes to HOST_URL/REPO/manifests/TAG (the host's path replaces
// /v2), and a 401's Bearer challenge is answered at its realm with the
// challenge's own scope and Basic credentials. It returns the digest.
func containerdMirrorGet(t *testing.T, hostURL, repo, tag, user, password string) string {
	t.Helper()
	u := hostURL + "/" + repo + "/manifests/" + tag
	get := func(authz string) *http.Response {
		req, _ := http.NewRequest(http.MethodHead, u, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get("")
	if resp.StatusCode == http.StatusUnauthorized {
		ch := resp.Header.Get("WWW-Authenticate")
		params := map[string]string{}
		for _, part := range strings.Split(strings.TrimPrefix(ch, "Bearer "), ",") {
			if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok {
				params[k] = strings.Trim(v, `"`)
			}
		}
		if params["realm"] == "" {
			t.Fatalf("Harbor's challenge for %s has no realm: %q", u, ch)
		}
		q := url.Values{"service": {params["service"]}}
		if params["scope"] != "" {
			q.Set("scope", params["scope"])
		}
		treq, _ := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
		treq.SetBasicAuth(user, password)
		tresp, err := http.DefaultClient.Do(treq)
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			Token string `json:"token"`
		}
		err = json.NewDecoder(tresp.Body).Decode(&tok)
		tresp.Body.Close()
		if err != nil || tok.Token == "" {
			t.Fatalf("token for %s: %v", u, err)
		}
		resp = get("Bearer " + tok.Token)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD %s through the mirror: %d", u, resp.StatusCode)
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}
