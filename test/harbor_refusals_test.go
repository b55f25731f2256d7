package test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// harborRefusalSummary is the part of `ferry import --json` the Harbor tests read.
type harborRefusalSummary struct {
	importSummary
	Refusals []struct {
		Kind    string   `json:"kind"`
		Project string   `json:"project"`
		Message string   `json:"message"`
		Hint    string   `json:"hint"`
		Images  []string `json:"images"`
		Tags    []string `json:"tags"`
	} `json:"refusals"`
	Error *struct {
		cliError
		Hint string `json:"hint"`
	} `json:"error"`
}

// importHarbor runs `ferry import --json BUNDLE --to HARBOR/PREFIX` as user
// (password on stdin) and returns the summary, stderr and exit status.
func importHarbor(t *testing.T, bin string, h *harness.Harbor, bundle, prefix, user, password string, extra ...string) (*harborRefusalSummary, string, int) {
	t.Helper()
	args := append([]string{"import", "--json", "-q", bundle, "--to", h.Host + "/" + prefix, "--plain-http",
		"--username", user, "--password-stdin"}, extra...)
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t), Stdin: []byte(password)}, bin, args...)
	var sum harborRefusalSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("import --json: %v\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	return &sum, stderr, code
}

// exportSpecs seeds specs into a fresh plain-HTTP source registry and
// exports every tag the specs name into a bundle; it returns the bundle and
// the fixtures.
func exportSpecs(t *testing.T, bin string, specs []harness.FixtureSpec) (string, []harness.Fixture) {
	t.Helper()
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, src, "", harness.FixtureSet{Name: "harbor", Specs: specs})
	return exportFrom(t, bin, src, fx), fx
}

// exportFrom exports the tags of fx from src (same repository names).
func exportFrom(t *testing.T, bin string, src *harness.Registry, fx []harness.Fixture) string {
	t.Helper()
	tags := map[string][]string{}
	var repos []string
	for _, f := range fx {
		if tags[f.Repo] == nil {
			repos = append(repos, f.Repo)
		}
		tags[f.Repo] = append(tags[f.Repo], "'"+f.Tag+"'")
	}
	m := "tasks:\n  - name: t\n    source:\n      registry: " + src.Host + "\n    mappings:\n"
	for _, r := range repos {
		m += "      - from: " + r + "\n        tags: [" + strings.Join(tags[r], ", ") + "]\n"
	}
	dir := t.TempDir()
	mf := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mf, []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b.tar")
	if stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "export", "-q", "-f", mf, "-o", out); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	return out
}

// harborDigest is the digest Harbor serves for project/repo:tag ("" if none).
func harborDigest(t *testing.T, h *harness.Harbor, repoTag string) string {
	t.Helper()
	repo, tag, _ := strings.Cut(repoTag, ":")
	req, _ := http.NewRequest(http.MethodHead, h.URL+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	req.SetBasicAuth(h.Admin, h.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ""
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s in Harbor: %d", repoTag, resp.StatusCode)
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// checkOnce asserts that text names needle exactly once, and that no
// image is reported on a line of its own.
func checkOnce(t *testing.T, stderr, needle string) {
	t.Helper()
	if n := strings.Count(stderr, needle); n != 1 {
		t.Errorf("stderr names %q %d times, want once:\n%s", needle, n, stderr)
	}
	if strings.HasPrefix(stderr, "failed: ") || strings.Contains(stderr, "\nfailed: ") {
		t.Errorf("stderr has a line per image:\n%s", stderr)
	}
}

// TestHarborQuotaExceeded: a project whose storage quota is too small for
// the bundle gets one error naming the project, its quota, what is used and
// what the import still needs (exit 1, --json kind "quota"); the images
// that fit land, and after the quota is raised a second import completes
// without uploading them again. As a robot, which may not read quotas, the
// figures come from Harbor's refusal.
func TestHarborQuotaExceeded(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	var specs []harness.FixtureSpec
	for _, r := range []string{"app/a", "app/b", "app/c", "app/d"} {
		specs = append(specs, harness.FixtureSpec{Repo: r, Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 64 << 10})
	}
	bundle, fx := exportSpecs(t, bin, specs)

	proj := h.NewProject(t, "quota")
	quotaID := h.SetQuota(t, proj, 100<<10) // the base and one app layer fit, not four
	// A dry run says how much the import would upload: more than the quota.
	dry, stderr, code := importHarbor(t, bin, h, bundle, proj, h.Admin, h.AdminPassword, "--dry-run")
	if code != 0 || dry.BytesToUpload <= 100<<10 {
		t.Fatalf("dry run: exit %d, %d bytes to upload\n%s", code, dry.BytesToUpload, stderr)
	}
	sum, stderr, code := importHarbor(t, bin, h, bundle, proj, h.Admin, h.AdminPassword)
	if code != 1 {
		t.Fatalf("import over quota: exit %d, want 1\n%s", code, stderr)
	}
	if sum.Error == nil || sum.Error.Kind != "quota" || sum.Error.ExitCode != 1 {
		t.Fatalf("--json error = %+v, want kind quota, exit 1", sum.Error)
	}
	for _, want := range []string{`storage quota of project "` + proj + `"`, "its quota is 100.0 KiB", "left", "more bytes", "raise it by at least", "not pushed"} {
		if !strings.Contains(sum.Error.Message, want) {
			t.Errorf("error message lacks %q: %s", want, sum.Error.Message)
		}
	}
	if !strings.Contains(sum.Error.Hint, "PUT /api/v2.0/quotas/") || !strings.Contains(sum.Error.Hint, proj) {
		t.Errorf("hint does not say how to raise the quota of %s: %s", proj, sum.Error.Hint)
	}
	checkOnce(t, stderr, `storage quota of project "`+proj+`"`)
	if len(sum.Refusals) != 1 || sum.Refusals[0].Kind != "quota" || len(sum.Refusals[0].Images) != sum.Failed || sum.Failed == 0 {
		t.Fatalf("refusals %+v, failed %d", sum.Refusals, sum.Failed)
	}
	t.Logf("stderr:\n%s", stderr)
	landed := 0
	for _, f := range fx {
		if d := harborDigest(t, h, proj+"/"+f.Ref()); d == f.Digest {
			landed++
		} else if d != "" {
			t.Errorf("%s: digest %s in Harbor, %s upstream", f.Ref(), d, f.Digest)
		}
	}
	if landed != len(fx)-sum.Failed {
		t.Errorf("%d images in Harbor, the summary says %d pushed", landed, len(fx)-sum.Failed)
	}

	// Raised: the rest lands, and what landed is not uploaded again.
	h.SetQuota(t, proj, -1)
	sum2, stderr, code := importHarbor(t, bin, h, bundle, proj, h.Admin, h.AdminPassword)
	if code != 0 {
		t.Fatalf("import after raising quota %d: exit %d\n%s", quotaID, code, stderr)
	}
	if sum2.UpToDate != landed || sum2.Pushed != len(fx)-landed {
		t.Errorf("second import: %d pushed, %d up to date; want %d and %d", sum2.Pushed, sum2.UpToDate, len(fx)-landed, landed)
	}
	for _, f := range fx {
		if d := harborDigest(t, h, proj+"/"+f.Ref()); d != f.Digest {
			t.Errorf("%s: %q in Harbor, want %s", f.Ref(), d, f.Digest)
		}
	}

	// A robot may not read the quota: the figures come from Harbor's 403.
	proj2 := h.NewProject(t, "quotarobot")
	h.SetQuota(t, proj2, 100<<10)
	user, secret := h.NewRobot(t, proj2, "importer", harness.PushPull)
	sum3, stderr, code := importHarbor(t, bin, h, bundle, proj2, user, secret)
	if code != 1 || sum3.Error == nil || sum3.Error.Kind != "quota" {
		t.Fatalf("robot over quota: exit %d, error %+v\n%s", code, sum3.Error, stderr)
	}
	for _, want := range []string{`storage quota of project "` + proj2 + `"`, "its quota is about 100.0 KiB"} {
		if !strings.Contains(sum3.Error.Message, want) {
			t.Errorf("robot's error message lacks %q: %s", want, sum3.Error.Message)
		}
	}
	checkOnce(t, stderr, `storage quota of project "`+proj2+`"`)
}

// TestHarborImmutableTagRefused: a project whose immutable tag rule keeps
// every tag: a second bundle that moves a tag gets one error naming the
// tag, the project and the rule (exit 1, --json kind "immutable-tag"); the
// moved tag keeps its old image, while a new image and the moved image's
// new tag land, and an unchanged image stays up to date.
func TestHarborImmutableTagRefused(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fx1 := harness.Seed(t, src, "", harness.FixtureSet{Name: "v1", Specs: []harness.FixtureSpec{
		{Repo: "app/a", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "app/b", Tag: "1.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	first := exportFrom(t, bin, src, fx1)
	// Upstream moves app/a:1.0 to a new image (also tagged 1.1) and adds app/c.
	fx2 := harness.Seed(t, src, "", harness.FixtureSet{Name: "v2", Specs: []harness.FixtureSpec{
		{Repo: "app/a", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 3000},
		{Repo: "app/a", Tag: "1.1", AliasOf: "1.0"},
		{Repo: "app/c", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	second := exportFrom(t, bin, src, append(fx2, fx1[1]))
	if fx2[0].Digest == fx1[0].Digest {
		t.Fatal("the fixture did not move app/a:1.0")
	}

	proj := h.NewProject(t, "immutable")
	h.AddImmutableRule(t, proj, "**", "**")
	if _, stderr, code := importHarbor(t, bin, h, first, proj, h.Admin, h.AdminPassword); code != 0 {
		t.Fatalf("first import: exit %d\n%s", code, stderr)
	}
	// A dry run names the tag that would move.
	dry, stderr, code := importHarbor(t, bin, h, second, proj, h.Admin, h.AdminPassword, "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, stderr)
	}
	moves := 0
	for _, im := range dry.Images {
		for _, tg := range im.Tags {
			if tg.Status == "would move" {
				moves++
				if !strings.HasSuffix(im.Repository, "/app/a") || tg.Tag != "1.0" || tg.Previous != fx1[0].Digest {
					t.Errorf("dry run: %s:%s would move from %s", im.Repository, tg.Tag, tg.Previous)
				}
			}
		}
	}
	if moves != 1 {
		t.Errorf("dry run lists %d tags that would move, want 1 (app/a:1.0)", moves)
	}
	sum, stderr, code := importHarbor(t, bin, h, second, proj, h.Admin, h.AdminPassword)
	if code != 1 {
		t.Fatalf("import moving an immutable tag: exit %d, want 1\n%s", code, stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	if sum.Error == nil || sum.Error.Kind != "immutable-tag" {
		t.Fatalf("--json error = %+v, want kind immutable-tag", sum.Error)
	}
	tag := proj + "/app/a:1.0"
	for _, want := range []string{`Harbor project "` + proj + `"`, tag, `immutable tag rule 1: tags matching "**" in repositories matching "**"`} {
		if !strings.Contains(sum.Error.Message, want) {
			t.Errorf("error message lacks %q: %s", want, sum.Error.Message)
		}
	}
	if strings.Contains(sum.Error.Message, proj+"/app/a:1.1") {
		t.Errorf("the new tag 1.1 is named as refused: %s", sum.Error.Message)
	}
	if !strings.Contains(sum.Error.Hint, "Tag Immutability") {
		t.Errorf("hint: %s", sum.Error.Hint)
	}
	checkOnce(t, stderr, `Harbor project "`+proj+`"`)
	if len(sum.Refusals) != 1 || len(sum.Refusals[0].Tags) != 1 || sum.Refusals[0].Tags[0] != tag {
		t.Errorf("refusals: %+v", sum.Refusals)
	}
	for ref, want := range map[string]string{
		"app/a:1.0": fx1[0].Digest, // kept by the rule
		"app/a:1.1": fx2[0].Digest, // the moved image's new tag
		"app/b:1.0": fx1[1].Digest,
		"app/c:1.0": fx2[2].Digest,
	} {
		if got := harborDigest(t, h, proj+"/"+ref); got != want {
			t.Errorf("%s: %q in Harbor, want %s", ref, got, want)
		}
	}
	for _, im := range sum.Images {
		for _, tg := range im.Tags {
			if strings.HasSuffix(im.Repository, "/app/a") && tg.Tag == "1.1" && tg.Status != "pushed" {
				t.Errorf("app/a:1.1 status %q, want pushed", tg.Status)
			}
			if strings.HasSuffix(im.Repository, "/app/a") && tg.Tag == "1.0" && tg.Status != "not pushed" {
				t.Errorf("app/a:1.0 status %q, want not pushed", tg.Status)
			}
		}
	}
}

// TestHarborRefusesProxyCacheProject: a proxy-cache project as the target
// is refused before anything is uploaded, with one error naming the
// project and what it caches (exit 1, --json kind "proxy-cache"), for an
// admin and for a project robot. Harbor itself refuses a push there (the
// premise of harness.NewProxyCacheProject's shortcut).
func TestHarborRefusesProxyCacheProject(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	upstream := harness.StartRegistry(t, harness.RegistryOptions{})
	bundle, fx := exportSpecs(t, bin, []harness.FixtureSpec{
		{Repo: "app/a", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "app/b", Tag: "1.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	})
	proj := h.NewProxyCacheProject(t, "proxy", upstream.URL)

	// Harbor refuses a push into it: an upload start answers 403.
	req, _ := http.NewRequest(http.MethodPost, h.URL+"/v2/"+proj+"/app/a/blobs/uploads/", nil)
	req.SetBasicAuth(h.Admin, h.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Harbor answers %d to an upload into proxy-cache project %s, want 403", resp.StatusCode, proj)
	}

	user, secret := h.NewRobot(t, proj, "importer", harness.PushPull)
	for _, who := range []struct{ user, password string }{{h.Admin, h.AdminPassword}, {user, secret}} {
		sum, stderr, code := importHarbor(t, bin, h, bundle, proj, who.user, who.password)
		if code != 1 {
			t.Fatalf("%s: import into a proxy-cache project: exit %d, want 1\n%s", who.user, code, stderr)
		}
		if sum.Error == nil || sum.Error.Kind != "proxy-cache" {
			t.Fatalf("%s: --json error = %+v, want kind proxy-cache", who.user, sum.Error)
		}
		for _, want := range []string{`Harbor project "` + proj + `"`, "proxy-cache project", "2 images not pushed"} {
			if !strings.Contains(sum.Error.Message, want) {
				t.Errorf("%s: error message lacks %q: %s", who.user, want, sum.Error.Message)
			}
		}
		if who.user == h.Admin && !strings.Contains(sum.Error.Message, upstream.URL) {
			t.Errorf("admin's error message does not name the upstream %s: %s", upstream.URL, sum.Error.Message)
		}
		if who.user == user && !strings.Contains(sum.Error.Message, "Harbor registry endpoint ") {
			t.Errorf("robot's error message does not name the registry endpoint by its id: %s", sum.Error.Message)
		}
		if !strings.Contains(sum.Error.Hint, "normal project") {
			t.Errorf("hint: %s", sum.Error.Hint)
		}
		checkOnce(t, stderr, `Harbor project "`+proj+`"`)
		if sum.BlobsUploaded != 0 || sum.BytesUploaded != 0 || sum.BlobsMounted != 0 {
			t.Errorf("%s: uploaded %d blobs (%d bytes), mounted %d into a proxy-cache project", who.user, sum.BlobsUploaded, sum.BytesUploaded, sum.BlobsMounted)
		}
	}
	syncIntoProxyCache(t, bin, h, proj, fx)
	for _, f := range fx {
		if d := harborDigest(t, h, proj+"/"+f.Ref()); d != "" {
			t.Errorf("%s is in the proxy-cache project: %s", f.Ref(), d)
		}
	}
}

// syncIntoProxyCache: ferry sync into the proxy-cache project says the
// refusal once, however many images it stopped, and its --json round
// lists it with its kind (as import does).
func syncIntoProxyCache(t *testing.T, bin string, h *harness.Harbor, proj string, fx []harness.Fixture) {
	t.Helper()
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	var specs []harness.FixtureSpec
	for _, f := range fx {
		specs = append(specs, harness.FixtureSpec{Repo: f.Repo, Tag: f.Tag, Kind: f.Kind, Bases: []string{"os"}})
	}
	harness.Seed(t, src, "", harness.FixtureSet{Name: "sync-proxy", Specs: specs})
	auth := base64.StdEncoding.EncodeToString([]byte(`{"username": "` + h.Admin + `", "password": "` + h.AdminPassword + `"}`))
	m := writeFile(t, filepath.Join(t.TempDir(), "m.yaml"), "tasks:\n  - name: into-proxy\n    source:\n      registry: "+src.Host+
		"\n    target:\n      registry: "+h.Host+"/"+proj+"\n      auth: "+auth+"\n    mappings:\n      - from: app/a\n      - from: app/b\n")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "sync", "--json", "--plain-http", "-f", m)
	if code != 1 {
		t.Fatalf("sync into a proxy-cache project: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	if n := strings.Count(stderr, `Harbor project "`+proj+`"`); n != 1 {
		t.Errorf("sync names the refusal %d times, want once:\n%s", n, stderr)
	}
	var r struct {
		Failed   int `json:"failed"`
		Refusals []struct {
			Kind   string   `json:"kind"`
			Images []string `json:"images"`
		} `json:"refusals"`
		Failures []struct {
			Refusal string `json:"refusal"`
		} `json:"failures"`
	}
	line, _, _ := strings.Cut(strings.TrimSpace(stdout), "\n")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("sync --json: %v\n%s", err, stdout)
	}
	if r.Failed != 2 || len(r.Refusals) != 1 || r.Refusals[0].Kind != "proxy-cache" || len(r.Refusals[0].Images) != 2 ||
		len(r.Failures) != 2 || r.Failures[0].Refusal != "proxy-cache" {
		t.Errorf("sync --json round: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var last struct {
		Error struct{ Kind string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Error.Kind != "proxy-cache" {
		t.Errorf("sync --json's error line: kind %q (%v), want proxy-cache:\n%s", last.Error.Kind, err, stdout)
	}
}
