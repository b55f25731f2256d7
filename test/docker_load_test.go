package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// dockerLoadMapping exports a Docker image under two tags, an OCI image,
// an OCI index (two tags) and a Docker manifest list, all under mirror/.
func dockerLoadMapping(t *testing.T, host string) string {
	t.Helper()
	m := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(m, []byte(`
tasks:
  - name: load
    source:
      registry: `+host+`
    mappings:
      - from: spaceone/console
        to: mirror/console
        tags: ['1.11.0', '1.11.5']
      - from: spaceone/plugin-a
        to: mirror/plugin-a
        tags: ['1.4.1']
      - from: library/redis
        to: mirror/redis
        tags: ['7.2.4', 'latest']
      - from: library/alpine
        to: mirror/alpine
        tags: ['3.19']
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return m
}

// expectedDockerImage is what docker must show for one TARGET:TAG: the
// image ID is the config digest of the image (of the linux/amd64 manifest
// for an index), and its layers are the config's diff_ids.
type expectedDockerImage struct {
	id      string
	diffIDs []string
}

// expectDocker works out, from the bundle's own bytes (not through ferry),
// what docker load must show for each TARGET:TAG.
func expectDocker(t *testing.T, tc *tarContents) map[string]expectedDockerImage {
	t.Helper()
	out := map[string]expectedDockerImage{}
	for _, im := range tc.record(t).Images {
		digest := im.Digest
		var m struct {
			Manifests []struct {
				Digest   string `json:"digest"`
				Platform struct {
					OS           string `json:"os"`
					Architecture string `json:"architecture"`
				} `json:"platform"`
			} `json:"manifests"`
			Config struct {
				Digest string `json:"digest"`
			} `json:"config"`
		}
		if err := json.Unmarshal(tc.Blobs[blobName(digest)], &m); err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Manifests {
			if c.Platform.OS == "linux" && c.Platform.Architecture == "amd64" {
				if err := json.Unmarshal(tc.Blobs[blobName(c.Digest)], &m); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		var cfg struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(tc.Blobs[blobName(m.Config.Digest)], &cfg); err != nil || m.Config.Digest == "" {
			t.Fatalf("config of %s: %v", im.Target, err)
		}
		for _, tag := range im.Tags {
			out[im.Target+":"+tag] = expectedDockerImage{id: m.Config.Digest, diffIDs: cfg.RootFS.DiffIDs}
		}
	}
	return out
}

// TestDockerLoad: `docker load -i BUNDLE.tar` into a real dockerd
// (Debian's docker.io, classic image store) loads every image of an
// export with its tags: single-platform Docker and OCI images and the
// linux/amd64 image of an OCI index and of a Docker manifest list. Each
// image's ID is its config digest and its layers are the config's
// diff_ids; RepoDigests stay empty, as for any docker load (only a pull
// records where an image came from).
func TestDockerLoad(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.SmallSet())
	out := filepath.Join(t.TempDir(), "bundle.tar")
	env := harness.RunOptions{Env: append(impEnv(t), "SOURCE_DATE_EPOCH=1700000000")}
	if stdout, stderr, code := harness.RunWith(t, env, bin, "export", "-f", dockerLoadMapping(t, reg.Host), "-o", out, "--plain-http", "-q"); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	tc := readBundle(t, out)
	if i := slices.Index(tc.Names, "manifest.json"); i < 0 || i > 4 || len(tc.Dups) > 0 {
		t.Fatalf("entries %v: want manifest.json among the first, no duplicates", tc.Names[:min(6, len(tc.Names))])
	}
	want := expectDocker(t, tc)
	if stdout, _, code := harness.Run(t, bin, "inspect", out); code != 0 || !strings.Contains(stdout, "docker load: 5 images, 6 tags (linux/amd64 from multi-platform images)") {
		t.Fatalf("inspect: exit %d\n%s", code, stdout)
	}

	d := harness.StartDockerd(t)
	loaded := d.DockerOK(t, "load", "-i", out)
	refs := make([]string, 0, len(want))
	for ref := range want {
		refs = append(refs, ref)
		if !strings.Contains(loaded, "Loaded image: "+ref+"\n") {
			t.Errorf("docker load did not report %s:\n%s", ref, loaded)
		}
	}
	sort.Strings(refs)
	if len(refs) != 6 {
		t.Fatalf("expected 6 tags, got %v", refs)
	}
	for _, ref := range refs {
		var got []struct {
			ID          string   `json:"Id"`
			RepoTags    []string `json:"RepoTags"`
			RepoDigests []string `json:"RepoDigests"`
			Os          string   `json:"Os"`
			RootFS      struct {
				Layers []string `json:"Layers"`
			} `json:"RootFS"`
		}
		if err := json.Unmarshal([]byte(d.DockerOK(t, "image", "inspect", ref)), &got); err != nil || len(got) != 1 {
			t.Fatalf("docker image inspect %s: %v", ref, err)
		}
		g, w := got[0], want[ref]
		if g.ID != w.id {
			t.Errorf("%s: image ID %s, want the config digest %s", ref, g.ID, w.id)
		}
		if !slices.Contains(g.RepoTags, ref) {
			t.Errorf("%s: RepoTags %v", ref, g.RepoTags)
		}
		if !slices.Equal(g.RootFS.Layers, w.diffIDs) || len(w.diffIDs) == 0 {
			t.Errorf("%s: layers %v, want the diff_ids %v", ref, g.RootFS.Layers, w.diffIDs)
		}
		if len(g.RepoDigests) != 0 || g.Os != "linux" {
			t.Errorf("%s: RepoDigests %v, os %q; want none, linux", ref, g.RepoDigests, g.Os)
		}
	}
	// Every image ID docker holds is one the bundle names: nothing else was loaded.
	ids := strings.Fields(d.DockerOK(t, "images", "-q", "--no-trunc"))
	for _, id := range ids {
		found := false
		for _, w := range want {
			found = found || w.id == id
		}
		if !found {
			t.Errorf("docker holds image %s, which the bundle does not name", id)
		}
	}
}

// TestDockerPlatformFlag: a malformed --docker-platform, or deep limits
// without --deep, are bad usage (exit 2), found before any request.
func TestDockerPlatformFlag(t *testing.T) {
	bin := harness.BuildFerry(t)
	m := dockerLoadMapping(t, "127.0.0.1:1") // nothing listens: any request would fail with exit 1
	out := filepath.Join(t.TempDir(), "b.tar")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--docker-platform", "linux"}, "want os/arch[/variant]"},
		{[]string{"--docker-platform", "linux/../x"}, "want os/arch[/variant]"},
		{[]string{"--deep-max-size", "1GiB"}, "--deep-max-size needs --deep"},
		{[]string{"--deep", "--deep-max-ratio", "0"}, "--deep-max-ratio 0"},
	} {
		args := append([]string{"export", "-f", m, "-o", out, "--plain-http"}, c.args...)
		if _, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, args...); code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, want 2 saying %q\n%s", c.args, code, c.want, stderr)
		}
	}
}
