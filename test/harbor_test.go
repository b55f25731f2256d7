package test

// End-to-end tests against a real Harbor v2.15.2 (harness.StartHarbor):
// what a Harbor site does first. Each test uses projects of its own, so
// they run in parallel on the one Harbor of the test binary. The commands
// of docs/harbor.md are the ones these tests run (the doc names the test).

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/test/harness"
)

// harborSummary is what the Harbor tests read of `ferry import --json`.
type harborSummary struct {
	importSummary
	Harbor          bool     `json:"harbor"`
	ProjectsCreated []string `json:"projectsCreated"`
	BlobsSkipped    int      `json:"blobsSkipped"`
	Error           *struct {
		Message  string `json:"message"`
		Kind     string `json:"kind"`
		ExitCode int    `json:"exitCode"`
		Registry string `json:"registry"`
		Hint     string `json:"hint"`
	} `json:"error"`
}

// harborSource is a source registry seeded with harness.SmallSet, and
// what the test exports of it.
type harborSource struct {
	reg      *harness.Registry
	fixtures map[string]harness.Fixture // by repo:tag at the source
	sel      []harborSel
}

// harborSel is a source repository and the tags to export.
type harborSel struct {
	from string
	tags []string
}

func newHarborSource(t *testing.T) *harborSource {
	t.Helper()
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	s := &harborSource{reg: src, fixtures: map[string]harness.Fixture{}, sel: harborSelection()}
	for _, f := range harness.Seed(t, src, "", harness.SmallSet()) {
		s.fixtures[f.Ref()] = f
	}
	return s
}

// harborSelection is what the Harbor tests export: 5 images, 6 tags
// (redis's latest is 7.2.4), both manifest kinds, an OCI index and a
// Docker manifest list.
func harborSelection() []harborSel {
	return []harborSel{
		{"spaceone/console", []string{"1.11.0", "1.11.5"}},
		{"spaceone/plugin-a", []string{"1.4.1"}},
		{"library/redis", []string{"7.2.4", "latest"}},
		{"library/alpine", []string{"3.19"}},
	}
}

// export writes a bundle of the selection with each repository's target
// path to(from) (identity when nil) and returns its path. since, if not
// "", makes it a delta on that bundle.
func (s *harborSource) export(t *testing.T, bin string, to func(string) string, since string) string {
	t.Helper()
	dir := t.TempDir()
	var m strings.Builder
	fmt.Fprintf(&m, "tasks:\n  - name: harbor\n    source:\n      registry: %s\n    mappings:\n", s.reg.Host)
	for _, sel := range s.sel {
		target := sel.from
		if to != nil {
			target = to(sel.from)
		}
		fmt.Fprintf(&m, "      - from: %s\n        to: %s\n        tags: ['%s']\n", sel.from, target, strings.Join(sel.tags, "', '"))
	}
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte(m.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle.tar")
	args := []string{"export", "-q", "-f", mapping, "-o", out}
	if since != "" {
		args = append(args, "--since", since)
	}
	if stdout, stderr, code := harness.Run(t, bin, args...); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	return out
}

// checkHarborTags asserts that every tag of the selection (plus extra
// source refs) is in Harbor at to(repo) with the source's digest, and that
// an index's children are there too (pullable by digest).
func (s *harborSource) checkHarborTags(t *testing.T, h *harness.Harbor, to func(string) string, extra ...string) {
	t.Helper()
	var refs []string
	for _, sel := range s.sel {
		for _, tag := range sel.tags {
			refs = append(refs, sel.from+":"+tag)
		}
	}
	reg := h.Registry()
	checked := 0
	for _, ref := range append(refs, extra...) {
		f, ok := s.fixtures[ref]
		if !ok {
			t.Fatalf("no fixture %s", ref)
		}
		repo, tag, _ := strings.Cut(ref, ":")
		target := to(repo)
		desc, err := remote.Get(reg.Ref(t, target+":"+tag), reg.RemoteOptions(h.Admin)...)
		if err != nil {
			t.Errorf("%s:%s in Harbor: %v", target, tag, err)
			continue
		}
		if desc.Digest.String() != f.Digest {
			t.Errorf("%s:%s: digest %s in Harbor, %s at the source", target, tag, desc.Digest, f.Digest)
		}
		checked++
		if oci.KindOf(desc.MediaType) != oci.KindIndex {
			continue
		}
		idx, err := oci.Index(desc.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		if len(idx.Manifests) != len(f.Platforms) || len(idx.Manifests) < 2 {
			t.Errorf("%s:%s: %d children in Harbor, %d at the source", target, tag, len(idx.Manifests), len(f.Platforms))
		}
		for _, c := range idx.Manifests {
			if _, err := remote.Head(reg.Ref(t, target+"@"+c.Digest.String()), reg.RemoteOptions(h.Admin)...); err != nil {
				t.Errorf("%s:%s: child %s not in Harbor: %v", target, tag, c.Digest, err)
			}
		}
	}
	if checked != len(refs)+len(extra) {
		t.Errorf("%d of %d tags checked", checked, len(refs)+len(extra))
	}
}

// harborImport runs `ferry import --json -q ARGS` with stdin and returns
// the summary (with its error object), stderr and the exit status.
func harborImport(t *testing.T, bin, stdin string, args ...string) (*harborSummary, string, int) {
	t.Helper()
	o := harness.RunOptions{Env: impEnv(t)}
	if stdin != "" {
		o.Stdin = []byte(stdin)
	}
	stdout, stderr, code := harness.RunWith(t, o, bin, append([]string{"import", "--json", "-q"}, args...)...)
	var sum harborSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("import --json: %v\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	return &sum, stderr, code
}

// under returns a target-path function that puts repositories under
// prefix.
func under(prefix string) func(string) string {
	return func(repo string) string { return prefix + "/" + repo }
}

// harborWrites lists the requests a counting proxy in front of Harbor saw
// that change something: registry writes and project creation.
func harborWrites(c *harness.Counter) []string {
	var out []string
	for _, r := range c.Requests() {
		write := r.Method != http.MethodGet && r.Method != http.MethodHead
		if write && (strings.HasPrefix(r.Path, "/v2/") || strings.HasPrefix(r.Path, "/api/v2.0/projects")) {
			out = append(out, fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status))
		}
	}
	return out
}

// TestHarborEmptyCreateProjects is the first thing a new site does: an
// import with --create-projects as admin into projects that do not exist
// yet. Every tag arrives with its source digest the first time (issue 21:
// the token issued before the projects existed used to fail every image
// with 401), no request is refused after the projects are created (the
// token is renewed up front, not after a 401), and a second import
// uploads nothing and creates nothing.
func TestHarborEmptyCreateProjects(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := newHarborSource(t)
	// Fresh projects: the bundle's first path segments.
	pa, pb := harness.UniqueProject("cloudforet"), harness.UniqueProject("library")
	to := func(repo string) string {
		if strings.HasPrefix(repo, "spaceone/") {
			return pa + "/" + strings.TrimPrefix(repo, "spaceone/")
		}
		return pb + "/" + strings.TrimPrefix(repo, "library/")
	}
	bundlePath := src.export(t, bin, to, "")
	front, counter := harness.CountingProxy(t, h.Registry())
	args := []string{bundlePath, "--to", front.Host, "--username", h.Admin, "--password-stdin", "--plain-http", "--create-projects"}

	sum, stderr, code := harborImport(t, bin, h.AdminPassword, args...)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s\ncore log:\n%s", code, stderr, h.Logs("core", 20))
	}
	if !sum.Harbor || sum.Pushed != 5 || sum.Failed != 0 {
		t.Errorf("harbor %v, pushed %d, failed %d; want true, 5, 0", sum.Harbor, sum.Pushed, sum.Failed)
	}
	if want := []string{pa, pb}; !slices.Equal(sum.ProjectsCreated, want) {
		t.Errorf("projects created %v, want %v", sum.ProjectsCreated, want)
	}
	for _, p := range []string{pa, pb} {
		if !h.ProjectExists(t, p) {
			t.Errorf("project %s not in Harbor", p)
		}
	}
	src.checkHarborTags(t, h, to)
	for _, r := range counter.Requests() {
		if r.Status == http.StatusUnauthorized && r.Path != "/v2/" {
			t.Errorf("refused after the projects were created: %s %s", r.Method, r.Path)
		}
	}
	t.Logf("first import: %s", counter)

	counter.Reset()
	sum, stderr, code = harborImport(t, bin, h.AdminPassword, args...)
	if code != 0 {
		t.Fatalf("re-import: exit %d\n%s", code, stderr)
	}
	if sum.UpToDate != 5 || sum.Pushed != 0 || sum.BlobsUploaded != 0 || sum.BytesUploaded != 0 || sum.BlobsMounted != 0 || len(sum.ProjectsCreated) != 0 {
		t.Errorf("re-import: %d up to date, %d pushed, %d blobs (%d bytes) uploaded, %d mounted, projects created %v; want 5, 0, 0, 0, 0, none",
			sum.UpToDate, sum.Pushed, sum.BlobsUploaded, sum.BytesUploaded, sum.BlobsMounted, sum.ProjectsCreated)
	}
	if w := harborWrites(counter); len(w) != 0 {
		t.Errorf("re-import changed something: %v", w)
	}
	t.Logf("re-import: %s", counter)
}

// TestHarborRobotPrefix: project robots (robot$project+name, with only
// the repository pull and push permissions) import under a project prefix,
// one with --password-stdin, one with --auth-file (a docker config.json).
// Every tag is exact at PROJECT/sub/REPO.
func TestHarborRobotPrefix(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := newHarborSource(t)
	bundlePath := src.export(t, bin, nil, "")
	minimal := []harness.RobotPermission{{Resource: "repository", Action: "pull"}, {Resource: "repository", Action: "push"}}

	t.Run("password-stdin", func(t *testing.T) {
		proj := h.NewProject(t, "robot")
		user, secret := h.NewRobot(t, proj, "importer", minimal)
		sum, stderr, code := harborImport(t, bin, secret+"\n", bundlePath, "--to", h.Host+"/"+proj+"/sub",
			"--username", user, "--password-stdin", "--plain-http")
		if code != 0 || sum.Pushed != 5 {
			t.Fatalf("import as %s: exit %d, pushed %d\n%s", user, code, sum.Pushed, stderr)
		}
		src.checkHarborTags(t, h, under(proj+"/sub"))
	})
	t.Run("auth-file", func(t *testing.T) {
		proj := h.NewProject(t, "robotfile")
		user, secret := h.NewRobot(t, proj, "importer", minimal)
		cfg, err := json.Marshal(map[string]any{"auths": map[string]any{
			h.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))},
		}})
		if err != nil {
			t.Fatal(err)
		}
		authFile := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(authFile, cfg, 0o600); err != nil {
			t.Fatal(err)
		}
		sum, stderr, code := harborImport(t, bin, "", bundlePath, "--to", h.Host+"/"+proj+"/sub",
			"--auth-file", authFile, "--plain-http")
		if code != 0 || sum.Pushed != 5 {
			t.Fatalf("import with --auth-file: exit %d, pushed %d\n%s", code, sum.Pushed, stderr)
		}
		src.checkHarborTags(t, h, under(proj+"/sub"))
	})
}

// checkOneError asserts that a refused import exits 1 with one error (on
// stderr once, and as --json's error object) that contains every one of
// want, and that Harbor holds no repository in project.
func checkOneError(t *testing.T, h *harness.Harbor, sum *harborSummary, stderr string, code int, project string, want ...string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr)
	}
	if sum.Error == nil {
		t.Fatalf("--json has no error object\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(sum.Error.Message, w) {
			t.Errorf("error message does not say %q:\n%s", w, sum.Error.Message)
		}
	}
	if sum.Error.ExitCode != 1 {
		t.Errorf("error object: exit code %d, want 1", sum.Error.ExitCode)
	}
	if n := strings.Count(stderr, want[0]); n != 1 {
		t.Errorf("stderr says %q %d times, want once:\n%s", want[0], n, stderr)
	}
	if strings.Contains(stderr, "failed: ") {
		t.Errorf("stderr lists images one by one:\n%s", stderr)
	}
	if sum.Pushed != 0 {
		t.Errorf("%d images pushed", sum.Pushed)
	}
	if repos := h.Repositories(t, project); len(repos) != 0 {
		t.Errorf("Harbor holds repositories in %s: %v", project, repos)
	}
}

// TestHarborMissingProject: without --create-projects, an import into a
// project that does not exist stops before any upload with one error that
// names the project and the flag; the project is not created.
func TestHarborMissingProject(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := newHarborSource(t)
	bundlePath := src.export(t, bin, nil, "")
	proj := harness.UniqueProject("missing")
	sum, stderr, code := harborImport(t, bin, h.AdminPassword, bundlePath, "--to", h.Host+"/"+proj,
		"--username", h.Admin, "--password-stdin", "--plain-http")
	t.Logf("stderr:\n%s", stderr)
	checkOneError(t, h, sum, stderr, code, proj, "Harbor project "+proj+" does not exist", "--create-projects")
	if sum.Error.Kind != "failed" {
		t.Errorf("--json kind %q for a missing project, want failed (the credentials are fine)", sum.Error.Kind)
	}
	if h.ProjectExists(t, proj) {
		t.Errorf("project %s was created without --create-projects", proj)
	}

	// A project robot may not create projects: one error that says so.
	own := h.NewProject(t, "robothome")
	user, secret := h.NewRobot(t, own, "importer", harness.PushPull)
	sum, stderr, code = harborImport(t, bin, secret+"\n", bundlePath, "--to", h.Host+"/"+proj,
		"--username", user, "--password-stdin", "--plain-http", "--create-projects")
	t.Logf("stderr as a project robot with --create-projects:\n%s", stderr)
	checkOneError(t, h, sum, stderr, code, proj, "creating project "+proj, "project-level robot accounts cannot create projects")
	if h.ProjectExists(t, proj) {
		t.Errorf("a project robot created project %s", proj)
	}

	// Without the flag, the robot (which may not look the project up) gets
	// the same one error as the administrator.
	sum, stderr, code = harborImport(t, bin, secret+"\n", bundlePath, "--to", h.Host+"/"+proj,
		"--username", user, "--password-stdin", "--plain-http")
	t.Logf("stderr as a project robot:\n%s", stderr)
	checkOneError(t, h, sum, stderr, code, proj, "Harbor project "+proj+" does not exist", "--create-projects")
	if sum.Error.Kind != "failed" {
		t.Errorf("--json kind %q for a missing project found by a robot, want failed, as for the admin", sum.Error.Kind)
	}
}

// TestHarborRobotWithoutPush: a robot that may pull but not push gets one
// error naming the robot, the project and the missing permission, before
// any upload.
func TestHarborRobotWithoutPush(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := newHarborSource(t)
	bundlePath := src.export(t, bin, nil, "")
	proj := h.NewProject(t, "pullonly")
	user, secret := h.NewRobot(t, proj, "reader", []harness.RobotPermission{{Resource: "repository", Action: "pull"}})
	sum, stderr, code := harborImport(t, bin, secret+"\n", bundlePath, "--to", h.Host+"/"+proj,
		"--username", user, "--password-stdin", "--plain-http")
	t.Logf("stderr:\n%s", stderr)
	checkOneError(t, h, sum, stderr, code, proj, "may not push to Harbor project "+proj, user, "push")

	// A dry run needs only pull rights.
	sum, stderr, code = harborImport(t, bin, secret+"\n", bundlePath, "--to", h.Host+"/"+proj,
		"--username", user, "--password-stdin", "--plain-http", "--dry-run")
	if code != 0 || sum.Pushed != 5 || sum.Failed != 0 {
		t.Errorf("dry run as a pull-only robot: exit %d, %d new, %d failed\n%s", code, sum.Pushed, sum.Failed, stderr)
	}
}

// TestHarborDeltaOnBase: a delta bundle (export --since base.tar) imported
// on its base leaves every tag of both exact.
func TestHarborDeltaOnBase(t *testing.T) {
	t.Parallel()
	h := harness.StartHarbor(t)
	bin := harness.BuildFerry(t)
	src := newHarborSource(t)
	proj := h.NewProject(t, "delta")
	to := under(proj)
	base := src.export(t, bin, to, "")
	// Upstream moves on: a new tag in a selected repository.
	added := harness.Seed(t, src.reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "spaceone/console", Tag: "1.11.13", Kind: harness.DockerImage, Bases: []string{"os", "node-runtime"}},
	}})
	src.fixtures[added[0].Ref()] = added[0]
	src.sel[0].tags = append(src.sel[0].tags, "1.11.13")
	delta := src.export(t, bin, to, base)

	login := []string{"--username", h.Admin, "--password-stdin", "--plain-http"}
	sum, stderr, code := harborImport(t, bin, h.AdminPassword, append([]string{base, "--to", h.Host}, login...)...)
	if code != 0 || sum.Pushed != 5 {
		t.Fatalf("base import: exit %d, pushed %d\n%s", code, sum.Pushed, stderr)
	}
	sum, stderr, code = harborImport(t, bin, h.AdminPassword, append([]string{delta, "--to", h.Host}, login...)...)
	if code != 0 || sum.Pushed != 1 || sum.Failed != 0 {
		t.Fatalf("delta import: exit %d, pushed %d, failed %d\n%s", code, sum.Pushed, sum.Failed, stderr)
	}
	src.checkHarborTags(t, h, to)
}
