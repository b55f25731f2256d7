package test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestExportTokenAuthAndPlatform exports from a registry with Harbor-like
// Bearer-token auth over TLS. Without --platform the multi-arch index and
// manifest list keep their upstream digests; with --platform linux/arm64 the
// bundle holds a rewritten index with only the arm64 child, and ferry.json
// records the upstream digest.
func TestExportTokenAuthAndPlatform(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, Users: map[string]string{"robot$ci": "t0ken"}})
	var set harness.FixtureSet
	for _, sp := range harness.SmallSet().Specs {
		if sp.Repo == "library/redis" || sp.Repo == "library/alpine" || sp.Repo == "spaceone/console" && sp.Tag == "1.11.0" {
			set.Specs = append(set.Specs, sp)
		}
	}
	set.Name = "token"
	fixtures := harness.Seed(t, reg, "robot$ci", set)
	digests := fixtureDigests(fixtures)

	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), `
tasks:
  - name: harbor
    source:
      registry: `+reg.Host+`
    mappings:
      - from: library/redis
        to: p/redis
        tags: ['7.2.4']
      - from: library/alpine
        to: p/alpine
        tags: ['3.19']
      - from: spaceone/console
        to: p/console
        tags: ['1.11.0']
`)
	export := func(t *testing.T, name string, extra ...string) (string, *exportSummary, *tarContents) {
		t.Helper()
		out := filepath.Join(dir, name)
		args := append([]string{"export", "-f", mapping, "-o", out, "--ca-cert", reg.CAFile, "--username", "robot$ci", "--password-stdin", "--json"}, extra...)
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t), Stdin: []byte("t0ken\n")}, bin, args...)
		if code != 0 {
			t.Fatalf("export exit %d\nstdout:%s\nstderr:%s", code, stdout, stderr)
		}
		return stdout, parseSummary(t, stdout), readBundle(t, out)
	}
	src := map[string]string{"p/redis": "library/redis", "p/alpine": "library/alpine", "p/console": "spaceone/console"}

	t.Run("all platforms keep upstream digests", func(t *testing.T) {
		_, sum, tc := export(t, "all.tar")
		if got := strings.Join(summaryRefs(sum), " "); got != "p/alpine:3.19 p/console:1.11.0 p/redis:7.2.4" {
			t.Fatalf("exported %s", got)
		}
		rec := tc.record(t)
		for _, im := range rec.Images {
			want := digests[src[im.Target]+":"+im.Tags[0]]
			if im.Digest != want || im.UpstreamDigest != "" {
				t.Errorf("%s: digest %s (upstream %q), source has %s", im.Target, im.Digest, im.UpstreamDigest, want)
			}
		}
		for _, f := range fixtures {
			for _, l := range f.Layers {
				if _, ok := tc.Blobs[blobName(l)]; !ok {
					t.Errorf("layer %s of %s missing", l, f.Ref())
				}
			}
		}
		var ok int
		for _, tr := range reg.TokenRequests() {
			if tr.User == "robot$ci" && tr.Status == 200 {
				ok++
			}
		}
		if ok == 0 {
			t.Errorf("no token was issued to robot$ci: %+v", reg.TokenRequests())
		}
	})

	t.Run("--platform linux/arm64 rewrites the index", func(t *testing.T) {
		stdout, sum, tc := export(t, "arm64.tar", "--platform", "linux/arm64")
		rec := tc.record(t)
		byTarget := map[string]int{}
		for i, im := range rec.Images {
			byTarget[im.Target] = i
		}
		for _, c := range []struct{ target, ref string }{{"p/redis", "library/redis:7.2.4"}, {"p/alpine", "library/alpine:3.19"}} {
			i, ok := byTarget[c.target]
			if !ok {
				t.Errorf("%s missing from ferry.json", c.target)
				continue
			}
			im := rec.Images[i]
			up := fixtureByRef(t, fixtures, c.ref)
			if im.UpstreamDigest != up.Digest {
				t.Errorf("%s: upstreamDigest %q, want the source's %s", c.target, im.UpstreamDigest, up.Digest)
			}
			if im.Digest == up.Digest {
				t.Errorf("%s: digest %s unchanged although a platform was dropped", c.target, im.Digest)
			}
			if im.MediaType != up.MediaType {
				t.Errorf("%s: media type %s, source %s", c.target, im.MediaType, up.MediaType)
			}
			if strings.Join(im.Platforms, ",") != "linux/arm64" {
				t.Errorf("%s: platforms %v, want linux/arm64", c.target, im.Platforms)
			}
			data, ok := tc.Blobs[blobName(im.Digest)]
			if !ok {
				t.Errorf("%s: the rewritten index %s is not in the bundle", c.target, im.Digest)
				continue
			}
			if "sha256:"+sha256Hex(data) != im.Digest {
				t.Errorf("%s: index bytes hash to sha256:%s, recorded %s", c.target, sha256Hex(data), im.Digest)
			}
			var idx v1.IndexManifest
			if err := json.Unmarshal(data, &idx); err != nil {
				t.Fatalf("%s: rewritten index: %v", c.target, err)
			}
			upIdx, err := remote.Index(reg.Ref(t, c.ref), reg.RemoteOptions("robot$ci")...)
			if err != nil {
				t.Fatal(err)
			}
			upMan, err := upIdx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var arm, amd v1.Descriptor
			for _, d := range upMan.Manifests {
				switch d.Platform.Architecture {
				case "arm64":
					arm = d
				case "amd64":
					amd = d
				}
			}
			if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != arm.Digest || idx.Manifests[0].Platform == nil || idx.Manifests[0].Platform.Architecture != "arm64" {
				t.Errorf("%s: rewritten index lists %+v, want only the arm64 child %s", c.target, idx.Manifests, arm.Digest)
			}
			if string(idx.MediaType) != up.MediaType {
				t.Errorf("%s: rewritten index says mediaType %q, want %s", c.target, idx.MediaType, up.MediaType)
			}
			if _, ok := tc.Blobs[blobName(arm.Digest.String())]; !ok {
				t.Errorf("%s: arm64 child %s missing", c.target, arm.Digest)
			}
			if _, ok := tc.Blobs[blobName(amd.Digest.String())]; ok {
				t.Errorf("%s: amd64 child %s stored although only arm64 was asked for", c.target, amd.Digest)
			}
			if _, ok := tc.Blobs[blobName(up.Digest)]; ok {
				t.Errorf("%s: the upstream index %s is stored too", c.target, up.Digest)
			}
		}
		// A single-platform image is left alone.
		if i, ok := byTarget["p/console"]; !ok || rec.Images[i].Digest != digests["spaceone/console:1.11.0"] {
			t.Errorf("p/console: %+v, want the source digest %s", rec.Images, digests["spaceone/console:1.11.0"])
		}
		var raw struct {
			Images []struct {
				Target, Digest, UpstreamDigest string
			}
		}
		if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
			t.Fatal(err)
		}
		for _, im := range raw.Images {
			if im.Target == "p/redis" && im.UpstreamDigest != digests["library/redis:7.2.4"] {
				t.Errorf("--json summary: p/redis upstreamDigest %q, want %s", im.UpstreamDigest, digests["library/redis:7.2.4"])
			}
		}
		if len(sum.Images) != 3 {
			t.Errorf("summary lists %d images, want 3", len(sum.Images))
		}
		stdout, stderr, code := harness.Run(t, bin, "verify", filepath.Join(dir, "arm64.tar"))
		if code != 0 {
			t.Errorf("ferry verify: exit %d\n%s%s", code, stdout, stderr)
		}
	})
}
