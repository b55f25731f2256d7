package test

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// The two mapping files the Cloudforet documentation publishes, copied from
// ../shared/examples into testdata/ so that the test does not depend on where
// the repository sits.
var cloudforetFiles = []string{"dregsy-spaceone-core.yaml", "dregsy-spaceone-plugin.yaml"}

// cloudforetSet is a few of the repositories the published files name, as
// a Docker Hub mirror would hold them.
func cloudforetSet() harness.FixtureSet {
	var s []harness.FixtureSpec
	add := func(repo string, kind harness.ImageKind, tags ...string) {
		for _, tag := range tags {
			s = append(s, harness.FixtureSpec{Repo: repo, Tag: tag, Kind: kind, Bases: []string{"os", "cf-runtime"}, AppSize: 512})
		}
	}
	add("spaceone/console", harness.DockerImage, "1.11.0", "1.11.3", "1.12.0")
	add("spaceone/plugin-google-cloud-inven-collector", harness.OCIImage, "1.0.0", "1.4.1", "1.4.2-rc1", "2.0.0")
	add("library/redis", harness.OCIIndex, "latest")
	add("library/mongo", harness.DockerImage, "latest")
	return harness.FixtureSet{Name: "cloudforet", Specs: s}
}

// TestExportCloudforetFiles exports the published Cloudforet files unchanged
// through --mirror from a local registry that holds a few of their
// repositories: --task selects tasks, --dry-run fetches no blob, and a real
// export with --keep-going writes what exists and lists every mapping whose
// repository is absent. The files' {Token} and {registry_address}
// placeholders give warnings naming the task, not a crash.
func TestExportCloudforetFiles(t *testing.T) {
	root := harness.RepoRoot(t)
	var files []string
	for _, f := range cloudforetFiles {
		p := filepath.Join(root, "test", "testdata", f)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("reading the copy of the published file: %v", err)
		}
		// Say so when the published file has moved on from our copy.
		if pub, err := os.ReadFile(filepath.Join(root, "..", "shared", "examples", f)); err == nil && !bytes.Equal(pub, data) {
			t.Logf("note: ../shared/examples/%s differs from test/testdata/%s; refresh the copy", f, f)
		}
		files = append(files, p)
	}

	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", cloudforetSet())
	digests := fixtureDigests(fixtures)
	proxy, counter := harness.CountingProxy(t, reg)

	const to = "your_registry_project/spaceone/"
	args := func(extra ...string) []string {
		a := []string{"export", "--json"}
		for _, f := range files {
			a = append(a, "-f", f)
		}
		return append(a, extra...)
	}
	failedRepos := func(sum *exportSummary) []string {
		seen := map[string]bool{}
		var out []string
		for _, f := range sum.Failures {
			if !strings.Contains(f.Source, "docker.io/spaceone/") && !strings.Contains(f.Source, "spaceone/") {
				t.Errorf("failure does not name a repository: %+v", f)
			}
			if !seen[f.Source] {
				seen[f.Source] = true
				out = append(out, f.Source)
			}
		}
		sort.Strings(out)
		return out
	}
	checkDigests := func(t *testing.T, sum *exportSummary) {
		t.Helper()
		from := map[string]string{"redis": "library/redis", "mongo": "library/mongo", "console": "spaceone/console",
			"plugin-google-cloud-inven-collector": "spaceone/plugin-google-cloud-inven-collector"}
		for _, im := range sum.Images {
			if !strings.HasPrefix(im.Source, "docker.io/") {
				t.Errorf("%s: source %s, want it recorded as docker.io (the mirror only serves the bytes)", im.Target, im.Source)
			}
			for _, tag := range im.Tags {
				src := from[strings.TrimPrefix(im.Target, to)] + ":" + tag
				if digests[src] != im.Digest {
					t.Errorf("%s:%s: digest %s, mirror has %s for %s", im.Target, tag, im.Digest, digests[src], src)
				}
			}
		}
	}
	checkWarnings := func(t *testing.T, stderr string, tasks ...string) {
		t.Helper()
		if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
			t.Fatalf("ferry crashed:\n%s", stderr)
		}
		var warnings []string
		for _, l := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(l, "warning:") {
				warnings = append(warnings, l)
			}
		}
		all := strings.Join(warnings, "\n")
		for _, task := range tasks {
			if !strings.Contains(all, task) {
				t.Errorf("no warning names task %s:\n%s", task, all)
			}
		}
		if !strings.Contains(strings.ToLower(all), "placeholder") {
			t.Errorf("the warnings do not call the {Token}/{registry_address} values placeholders:\n%s", all)
		}
	}

	t.Run("dry run of selected tasks", func(t *testing.T) {
		counter.Reset()
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t)}, bin, args(
			"--task", "sync_spaceone_core", "--task", "sync_spaceone_plugin",
			"--mirror", "docker.io="+proxy.Host, "--dry-run", "--keep-going")...)
		t.Logf("exit %d; requests: %s", code, counter)
		if code != 1 {
			t.Fatalf("exit %d, want 1 (mappings of absent repositories fail)\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		sum := parseSummary(t, stdout)
		want := []string{
			to + "console:1.11.0", to + "console:1.11.3",
			to + "plugin-google-cloud-inven-collector:1.4.1", to + "plugin-google-cloud-inven-collector:1.4.2-rc1",
		}
		if got := summaryRefs(sum); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("dry run lists %v, want %v", got, want)
		}
		checkDigests(t, sum)
		// 17 core mappings and 25 plugin mappings; one of each exists.
		if got := failedRepos(sum); len(got) != 16+24 {
			t.Errorf("%d failed mappings, want 40: %v", len(got), got)
		}
		for _, f := range sum.Failures {
			if strings.Contains(f.Source, "spacectl") || strings.Contains(f.Source, "mongo") {
				t.Errorf("task sync_spaceone_doc was not selected, yet %s was tried", f.Source)
			}
		}
		if n := counter.Count("GET", harness.KindBlob); n != 0 {
			t.Errorf("--dry-run made %d blob GETs, want none", n)
		}
		if n := counter.Count("", harness.KindUpload); n != 0 {
			t.Errorf("--dry-run made %d upload requests", n)
		}
		checkWarnings(t, stderr, "sync_spaceone_core", "sync_spaceone_plugin")
	})

	t.Run("export with --keep-going", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "cloudforet.tar")
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t)}, bin, args(
			"-o", out, "--mirror", "registry.hub.docker.com="+reg.Host, "--keep-going")...)
		if code != 1 {
			t.Fatalf("exit %d, want 1 (mappings of absent repositories fail)\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		sum := parseSummary(t, stdout)
		want := []string{
			to + "console:1.11.0", to + "console:1.11.3",
			to + "mongo:latest",
			to + "plugin-google-cloud-inven-collector:1.4.1", to + "plugin-google-cloud-inven-collector:1.4.2-rc1",
			to + "redis:latest",
		}
		if got := summaryRefs(sum); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("exported %v, want %v", got, want)
		}
		checkDigests(t, sum)
		failed := failedRepos(sum)
		if len(failed) != 3+16+24 {
			t.Errorf("%d failed mappings, want 43: %v", len(failed), failed)
		}
		for _, repo := range []string{"spaceone/spacectl", "spaceone/inventory", "spaceone/dashboard", "spaceone/plugin-azure-inven-collector"} {
			if !strings.Contains(strings.Join(failed, " "), repo) || !strings.Contains(stderr, repo) {
				t.Errorf("the failure of %s is not listed (summary or stderr)", repo)
			}
		}
		checkWarnings(t, stderr, "sync_spaceone_doc", "sync_spaceone_core", "sync_spaceone_plugin")

		tc := readBundle(t, out)
		var names []string
		for _, d := range tc.index(t).Manifests {
			names = append(names, d.Annotations["org.opencontainers.image.ref.name"])
		}
		sort.Strings(names)
		if strings.Join(names, " ") != strings.Join(want, " ") {
			t.Errorf("index.json names %v, want %v", names, want)
		}
		if len(tc.Dups) > 0 || len(tc.Blobs) != len(tc.record(t).Blobs) {
			t.Errorf("blob entries: %d, dups %v, ferry.json %d", len(tc.Blobs), tc.Dups, len(tc.record(t).Blobs))
		}
		if names := dirEntries(t, dir); strings.Join(names, " ") != "cloudforet.tar cloudforet.tar.sha256" {
			t.Errorf("output directory holds %v", names)
		}
	})
}
