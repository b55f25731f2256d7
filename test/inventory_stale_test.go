package test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// staleImport is the part of `ferry import --json` the stale-inventory
// test reads.
type staleImport struct {
	Pushed   int `json:"pushed"`
	Failed   int `json:"failed"`
	Failures []struct {
		Image   string `json:"image"`
		Blob    string `json:"blob"`
		Kind    string `json:"kind"`
		Error   string `json:"error"`
		Missing []struct {
			Kind       string   `json:"kind"`
			Repository string   `json:"repository"`
			Tag        string   `json:"tag"`
			Digest     string   `json:"digest"`
			Found      string   `json:"found"`
			Searched   []string `json:"searched"`
		} `json:"missing"`
	} `json:"failures"`
	Error *struct {
		Message  string `json:"message"`
		Kind     string `json:"kind"`
		ExitCode int    `json:"exitCode"`
	} `json:"error"`
}

// TestInventoryStaleEntry: a site takes an inventory, then, inside, retags
// mirror/app/db:7.2 and loses the python layer from mirror/app/db. The
// bundle export --have cuts afterwards carries app/web:2.0.0 and
// app/api:1.0 and leaves out app/db:7.2 whole and the python layer (the
// inventory saw it in mirror/app/db). With --strict the import refuses it
// whole and pushes nothing. Without, app/web:2.0.0 lands exact; app/db:7.2
// (its tag moved) and app/api:1.0 (it needs the lost layer) fail with kind
// stale-inventory, naming what is missing and where, their tags untouched;
// exit 1, and the message says what to carry back. Doing that (a new
// inventory, a new export --have) completes the site.
func TestInventoryStaleEntry(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fixes := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/db", Tag: "7.2", Kind: harness.OCIImage, Bases: []string{"os", "python-runtime"}},
	}})
	dir := t.TempDir()
	task := "tasks:\n  - name: t\n    source:\n      registry: " + src.Host + "\n    mappings:\n      - from: app/web\n      - from: app/db\n"
	m1 := writeFile(t, filepath.Join(dir, "m1.yaml"), task)
	m2 := writeFile(t, filepath.Join(dir, "m2.yaml"), task+"      - from: app/api\n")
	full := filepath.Join(dir, "full.tar")
	if _, stderr, code := harness.Run(t, bin, "export", "-q", "-f", m1, "-o", full); code != 0 {
		t.Fatalf("full export: %s", stderr)
	}
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	to := dst.Host + "/mirror"
	if _, stderr, code := harness.Run(t, bin, "import", "-q", full, "--to", to); code != 0 {
		t.Fatalf("full import: %s", stderr)
	}
	have := filepath.Join(dir, "have.json")
	if _, stderr, code := harness.Run(t, bin, "inventory", "-f", m2, "--to", to, "-o", have); code != 0 {
		t.Fatalf("inventory: %s", stderr)
	}

	// Inside, after the inventory: app/db:7.2 retagged, the old image and
	// its python layer cleaned out of mirror/app/db.
	other, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst.Ref(t, "mirror/app/db:7.2"), other, dst.RemoteOptions("")...); err != nil {
		t.Fatal(err)
	}
	otherDigest, _ := other.Digest()
	byRef := map[string]harness.Fixture{}
	for _, f := range fixes {
		byRef[f.Ref()] = f
	}
	added := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "2.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/api", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"python-runtime"}},
	}})
	for _, f := range added {
		byRef[f.Ref()] = f
	}
	var python string // the layer only app/db and app/api share
	for _, l := range byRef["app/api:1.0"].Layers {
		if slices.Contains(byRef["app/db:7.2"].Layers, l) {
			python = l
		}
	}
	if python == "" {
		t.Fatal("no layer shared by app/db:7.2 and app/api:1.0")
	}
	// A clean-up as garbage collection with --delete-untagged does it: the
	// untagged old manifest and the layer only it used.
	deleteManifest(t, dst, "mirror/app/db", byRef["app/db:7.2"].Digest)
	deleteBlob(t, dst, "mirror/app/db", python)

	delta := filepath.Join(dir, "delta.tar")
	if _, stderr, code := harness.Run(t, bin, "export", "-q", "-f", m2, "-o", delta, "--have", have); code != 0 {
		t.Fatalf("export --have: %s", stderr)
	}
	rec, err := bundle.ReadRecord(delta)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Images) != 2 || len(rec.BaseImages) != 2 || !slices.ContainsFunc(rec.BaseBlobs, func(b bundle.Blob) bool { return b.Digest == python }) {
		t.Fatalf("delta: images %+v, left out %+v, base blobs %+v", rec.Images, rec.BaseImages, rec.BaseBlobs)
	}

	// --strict: refused whole, nothing pushed.
	stdout, stderr, code := harness.Run(t, bin, "import", "-q", "--json", delta, "--to", to, "--strict")
	var strict staleImport
	if err := json.Unmarshal([]byte(stdout), &strict); err != nil {
		t.Fatalf("import --strict --json: %v\n%s", err, stdout)
	}
	if code != 1 || strict.Error == nil || strict.Error.Kind != "stale-inventory" || !strings.Contains(stderr, python) || !strings.Contains(stderr, "nothing was pushed") {
		t.Fatalf("import --strict: exit %d, %+v\n%s", code, strict.Error, stderr)
	}
	if repos := catalog(t, dst); slices.Contains(repos, "mirror/app/api") {
		t.Fatalf("a refused import created mirror/app/api: %v", repos)
	}
	if tags := listTags(t, dst, "mirror/app/web"); strings.Join(tags, ",") != "1.0.0" {
		t.Fatalf("a refused import moved tags: %v", tags)
	}

	// Without: what holds lands, the two images that depend on a stale
	// claim fail and are named.
	stdout, stderr, code = harness.Run(t, bin, "import", "--json", delta, "--to", to)
	var sum staleImport
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("import --json: %v\n%s", err, stdout)
	}
	t.Logf("import:\n%s", stderr)
	if code != 1 || sum.Pushed != 1 || sum.Failed != 2 || sum.Error == nil || sum.Error.Kind != "stale-inventory" || sum.Error.ExitCode != 1 {
		t.Fatalf("import: exit %d, pushed %d, failed %d, error %+v\n%s", code, sum.Pushed, sum.Failed, sum.Error, stderr)
	}
	failed := map[string]int{}
	for i, f := range sum.Failures {
		failed[f.Image] = i
		if f.Kind != "stale-inventory" || len(f.Missing) != 1 {
			t.Errorf("failure %+v", f)
		}
	}
	db, okDB := failed["mirror/app/db:7.2"]
	api, okAPI := failed["mirror/app/api:1.0"]
	if !okDB || !okAPI {
		t.Fatalf("failures: %+v", sum.Failures)
	}
	if m := sum.Failures[db].Missing[0]; m.Kind != "tag" || m.Repository != dst.Host+"/mirror/app/db" || m.Tag != "7.2" || m.Digest != byRef["app/db:7.2"].Digest || m.Found != otherDigest.String() {
		t.Errorf("app/db:7.2 missing: %+v", m)
	}
	if m := sum.Failures[api].Missing[0]; m.Kind != "blob" || m.Digest != python || m.Repository != dst.Host+"/mirror/app/api" || !slices.Contains(m.Searched, dst.Host+"/mirror/app/db") {
		t.Errorf("app/api:1.0 missing: %+v", m)
	}
	for _, want := range []string{"ferry inventory", "app/db:7.2", "app/api:1.0", "without --have"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the message does not say %q:\n%s", want, stderr)
		}
	}
	if d := tagDigest(t, dst, "mirror/app/db:7.2"); d != otherDigest.String() {
		t.Errorf("the failed image's tag moved: %s", d)
	}
	if repos := catalog(t, dst); slices.Contains(repos, "mirror/app/api") {
		t.Errorf("the failed image's repository was written to: %v", repos)
	}
	checkExact(t, src, dst, "app/web:2.0.0")

	// What the message says to carry back: a new inventory, a new export.
	have2 := filepath.Join(dir, "have2.json")
	if _, stderr, code := harness.Run(t, bin, "inventory", "-f", m2, "--to", to, "-o", have2); code != 0 {
		t.Fatalf("inventory again: %s", stderr)
	}
	delta2 := filepath.Join(dir, "delta2.tar")
	if _, stderr, code := harness.Run(t, bin, "export", "-q", "-f", m2, "-o", delta2, "--have", have2); code != 0 {
		t.Fatalf("export --have again: %s", stderr)
	}
	if _, stderr, code := harness.Run(t, bin, "import", "-q", delta2, "--to", to); code != 0 {
		t.Fatalf("import of the new bundle: exit %d\n%s", code, stderr)
	}
	for _, ref := range []string{"app/web:1.0.0", "app/web:2.0.0", "app/db:7.2", "app/api:1.0"} {
		checkExact(t, src, dst, ref)
	}
}

// tagDigest is the digest REPO:TAG points at in r.
func tagDigest(t *testing.T, r *harness.Registry, ref string) string {
	t.Helper()
	d, err := remote.Head(r.Ref(t, ref), r.RemoteOptions("")...)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest.String()
}

// checkExact: ref pulls whole from dst under mirror/ with src's digest.
func checkExact(t *testing.T, src, dst *harness.Registry, ref string) {
	t.Helper()
	if got, want := tagDigest(t, dst, "mirror/"+ref), tagDigest(t, src, ref); got != want {
		t.Errorf("%s: target %s, source %s", ref, got, want)
		return
	}
	img, err := remote.Image(dst.Ref(t, "mirror/"+ref), dst.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := pullImage(img); err != nil {
		t.Errorf("pulling %s from the target: %v", ref, err)
	}
}

// deleteManifest removes manifest d from repository repo of r (a plain
// registry without authentication).
func deleteManifest(t *testing.T, r *harness.Registry, repo, d string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, r.URL+"/v2/"+repo+"/manifests/"+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deleting manifest %s from %s: %s", d, repo, resp.Status)
	}
}
