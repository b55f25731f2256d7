package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestExportErrors drives the failures a user meets first: a wrong
// password, a filter ferry does not know, a broken YAML file, and a blob
// that the source registry cannot serve (with and without --keep-going).
// Every failure must leave nothing at -o: no bundle, no sidecar, no temp file.
func TestExportErrors(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{"alice": "s3cret"}})
	fixtures := harness.Seed(t, reg, "alice", harness.SmallSet())
	env := ferryEnv(t, "FERRY_PASSWORD=s3cret")
	mappings := t.TempDir()

	// export runs ferry with -o in a fresh, empty directory and returns it.
	export := func(t *testing.T, env []string, mapping string, extra ...string) (outDir, stdout, stderr string, code int) {
		t.Helper()
		outDir = t.TempDir()
		args := append([]string{"export", "-f", mapping, "-o", filepath.Join(outDir, "bundle.tar"), "--ca-cert", reg.CAFile, "--username", "alice"}, extra...)
		stdout, stderr, code = harness.RunWith(t, harness.RunOptions{Env: env}, bin, args...)
		t.Logf("exit %d, stderr:\n%s", code, stderr)
		return outDir, stdout, stderr, code
	}
	good := writeFile(t, filepath.Join(mappings, "good.yaml"), `
tasks:
  - name: good
    source:
      registry: `+reg.Host+`
    mappings:
      - from: spaceone/console
        to: e/console
        tags: ['1.11.0']
`)

	t.Run("wrong password", func(t *testing.T) {
		dir, stdout, stderr, code := export(t, ferryEnv(t, "FERRY_PASSWORD=Wr0ng-pa55"), good)
		if code != 1 {
			t.Fatalf("exit %d, want 1\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, reg.Host) || !strings.Contains(strings.ToLower(stderr), "authentication") {
			t.Errorf("stderr should name the registry %s and say \"authentication\":\n%s", reg.Host, stderr)
		}
		if strings.Contains(stderr+stdout, "Wr0ng-pa55") {
			t.Errorf("the password is printed:\n%s%s", stdout, stderr)
		}
		if names := dirEntries(t, dir); len(names) != 0 {
			t.Errorf("files left in the output directory: %v", names)
		}
	})

	t.Run("unknown filter", func(t *testing.T) {
		bad := writeFile(t, filepath.Join(mappings, "filter.yaml"), `
tasks:
  - name: badfilter
    source:
      registry: `+reg.Host+`
    mappings:
      - from: spaceone/console
        to: e/console
        tags:
          - 'latest'
          - 'foo: bar'
`)
		dir, stdout, stderr, code := export(t, env, bad)
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, `foo: bar`) {
			t.Errorf("stderr does not name the item 'foo: bar':\n%s", stderr)
		}
		if !strings.Contains(stderr, "filter.yaml") {
			t.Errorf("stderr does not name the file:\n%s", stderr)
		}
		if names := dirEntries(t, dir); len(names) != 0 {
			t.Errorf("files left in the output directory: %v", names)
		}
	})

	t.Run("bad YAML", func(t *testing.T) {
		// A tab starts line 6: YAML forbids it.
		bad := writeFile(t, filepath.Join(mappings, "broken.yaml"), "tasks:\n  - name: x\n    source:\n      registry: "+reg.Host+"\n    mappings:\n\t- from: a\n")
		dir, stdout, stderr, code := export(t, env, bad)
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, "broken.yaml:6:") {
			t.Errorf("stderr does not name the file and line (broken.yaml:6):\n%s", stderr)
		}
		if names := dirEntries(t, dir); len(names) != 0 {
			t.Errorf("files left in the output directory: %v", names)
		}
	})

	// One layer of plugin-b:1.1.0 (its own app layer, shared with nothing)
	// vanishes from the registry's storage, so every GET of it fails.
	victim := fixtureByRef(t, fixtures, "spaceone/plugin-b:1.1.0")
	lost := victim.Layers[len(victim.Layers)-1]
	hexd := strings.TrimPrefix(lost, "sha256:")
	if err := os.Remove(filepath.Join(reg.Dir, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")); err != nil {
		t.Fatalf("removing blob %s from the registry storage: %v", lost, err)
	}
	some := writeFile(t, filepath.Join(mappings, "some.yaml"), `
tasks:
  - name: some
    source:
      registry: `+reg.Host+`
    mappings:
      - from: spaceone/plugin-b
        to: e/plugin-b
      - from: library/busybox
        to: e/busybox
        tags: ['1.36']
`)

	t.Run("lost blob", func(t *testing.T) {
		dir, stdout, stderr, code := export(t, env, some, "--jobs", "2")
		if code != 1 {
			t.Fatalf("exit %d, want 1\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, hexd[:12]) {
			t.Errorf("stderr does not name the blob %s:\n%s", lost, stderr)
		}
		if names := dirEntries(t, dir); len(names) != 0 {
			t.Errorf("files left in the output directory: %v", names)
		}
	})

	t.Run("lost blob with --keep-going", func(t *testing.T) {
		dir, stdout, stderr, code := export(t, env, some, "--keep-going", "--json")
		if code != 1 {
			t.Fatalf("exit %d, want 1\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		sum := parseSummary(t, stdout)
		want := "e/busybox:1.36 e/plugin-b:1.0.0"
		if got := strings.Join(summaryRefs(sum), " "); got != want {
			t.Errorf("summary lists %s, want %s", got, want)
		}
		if len(sum.Failures) != 1 {
			t.Fatalf("want one failure, got %+v", sum.Failures)
		}
		f := sum.Failures[0]
		if !strings.Contains(f.Source+f.Error, "plugin-b") || !strings.Contains(f.Source, "1.1.0") && !strings.Contains(f.Error, "1.1.0") {
			t.Errorf("failure does not name the image plugin-b:1.1.0: %+v", f)
		}
		if !strings.Contains(f.Error, lost) {
			t.Errorf("failure does not name the blob %s: %+v", lost, f)
		}
		if !strings.Contains(stderr, "plugin-b") || !strings.Contains(stderr, hexd[:12]) {
			t.Errorf("stderr does not list the failure:\n%s", stderr)
		}
		if names := dirEntries(t, dir); strings.Join(names, " ") != "bundle.tar bundle.tar.sha256" {
			t.Errorf("output directory holds %v, want the bundle and its sidecar only", names)
		}
		tc := readBundle(t, filepath.Join(dir, "bundle.tar"))
		if _, ok := tc.Blobs[blobName(lost)]; ok {
			t.Errorf("the bundle holds the lost blob %s", lost)
		}
		rec := tc.record(t)
		if len(tc.Blobs) != len(rec.Blobs) || len(tc.Dups) > 0 {
			t.Errorf("%d blob entries (dups %v), ferry.json lists %d", len(tc.Blobs), tc.Dups, len(rec.Blobs))
		}
		got := map[string]string{}
		for _, im := range rec.Images {
			for _, tag := range im.Tags {
				got[im.Target+":"+tag] = im.Digest
			}
		}
		digests := fixtureDigests(fixtures)
		if len(got) != 2 || got["e/busybox:1.36"] != digests["library/busybox:1.36"] || got["e/plugin-b:1.0.0"] != digests["spaceone/plugin-b:1.0.0"] {
			t.Errorf("ferry.json images %v, want busybox:1.36 and plugin-b:1.0.0 with their source digests", got)
		}
		for _, d := range tc.index(t).Manifests {
			if n := d.Annotations["org.opencontainers.image.ref.name"]; got[n] != d.Digest {
				t.Errorf("index.json names %s → %s, not an exported image", n, d.Digest)
			}
		}
		stdout, stderr, code = harness.Run(t, bin, "verify", filepath.Join(dir, "bundle.tar"))
		if code != 0 {
			t.Errorf("ferry verify of the partial bundle: exit %d\n%s%s", code, stdout, stderr)
		}
	})
}
