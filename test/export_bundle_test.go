package test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestExportBundle exports harness.SmallSet() from a real distribution
// registry (TLS from a test CA, htpasswd) with a mapping file that uses every
// tag-filter form, then checks the bundle with archive/tar, sha256sum, and
// two tools nobody here wrote (regctl and skopeo), and, in a second export
// through a counting proxy, the request budget. One source registry serves
// every subtest.
func TestExportBundle(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{"alice": "s3cret"}})
	fixtures := harness.Seed(t, reg, "alice", harness.SmallSet())
	digests := fixtureDigests(fixtures)
	pinB1 := digests["spaceone/plugin-b:1.0.0"]
	pinB2 := digests["spaceone/plugin-b:1.1.0"]
	// An OCI index without artifactType in its descriptors, for skopeo 1.9.
	nginx := seedPlainOCIIndex(t, reg, "alice", "library/redis:7.2.4", "library/nginx", "1.25")
	digests["library/nginx:1.25"] = nginx

	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "filters.yaml"), `
tasks:
  - name: filters
    source:
      registry: `+reg.Host+`
    mappings:
      - from: spaceone/console
        to: f/console-literal
        tags: ['1.10.3', 'latest']
      - from: spaceone/plugin-b
        to: f/plugin-b
        tags:
          - '1.0.0@`+pinB1+`'
          - '`+pinB2+`'
      - from: spaceone/console
        to: f/console-regex
        tags:
          - 'regex: 1\.11\.(?:[0-9]?[0-9]).*'
      - from: spaceone/plugin-a
        to: f/plugin-a-notregex
        tags:
          - 'regex: !1\..*'
      - from: spaceone/plugin-a
        to: f/plugin-a-semver
        tags:
          - 'semver: >=1.0.0 <1.99.0'
      - from: spaceone/plugin-a
        to: f/plugin-a-latest2
        tags:
          - 'semver: >=1.0.0 <1.99.0'
          - 'keep: latest 2'
      - from: spaceone/console
        to: f/console-keep
        tags:
          - 'regex: 1\..*'
          - 'keep: [0-9.]+'
      - from: spaceone/console
        to: f/console-latest
        tags:
          - 'regex: .*'
          - 'keep: latest 5'
          - 'keep: latest 2'
      - from: library/redis
        to: f/redis
      - from: library/alpine
        to: f/alpine
      - from: library/busybox
        to: f/busybox
        tags: ['1.36']
      - from: library/nginx
        to: f/nginx
        tags: ['1.25']
`)
	out := filepath.Join(dir, "bundle.tar")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t, "FERRY_PASSWORD=s3cret")}, bin,
		"export", "-f", mapping, "-o", out, "--ca-cert", reg.CAFile, "--username", "alice", "--json")
	if code != 0 {
		t.Fatalf("export exit %d\nstdout:%s\nstderr:%s", code, stdout, stderr)
	}
	sum := parseSummary(t, stdout)

	// Expected refs, worked out by hand from SmallSet's tags:
	//   console:  1.10.3 1.11.0 1.11.5 1.11.12 1.11.12-rc1 1.12.0 latest(=1.12.0)
	//   plugin-a: 1.0.0 1.2.0 1.4.1 1.4.2-rc1 2.0.0 v1.3.0 latest(=2.0.0)
	//   plugin-b: 1.0.0 1.1.0; redis: 7.2.4 latest; alpine: 3.19 latest; busybox: 1.36
	want := []string{
		"f/alpine:3.19", "f/alpine:latest", // no tags: every tag
		"f/busybox:1.36",
		"f/console-keep:1.10.3", "f/console-keep:1.11.0", "f/console-keep:1.11.12", "f/console-keep:1.11.5", "f/console-keep:1.12.0", // keep: drops -rc1
		"f/console-latest:1.11.12", "f/console-latest:1.12.0", "f/console-latest:latest", // last keep: latest wins; non-versions kept
		"f/console-literal:1.10.3", "f/console-literal:latest",
		"f/console-regex:1.11.0", "f/console-regex:1.11.12", "f/console-regex:1.11.12-rc1", "f/console-regex:1.11.5",
		"f/plugin-a-latest2:1.4.1", "f/plugin-a-latest2:1.4.2-rc1", // pre-release ranks above 1.4.1
		"f/plugin-a-notregex:2.0.0", "f/plugin-a-notregex:latest", "f/plugin-a-notregex:v1.3.0",
		"f/plugin-a-semver:1.0.0", "f/plugin-a-semver:1.2.0", "f/plugin-a-semver:1.4.1", "f/plugin-a-semver:1.4.2-rc1", "f/plugin-a-semver:v1.3.0",
		"f/plugin-b:1.0.0", "f/plugin-b:sha256-" + strings.TrimPrefix(pinB2, "sha256:"),
		"f/nginx:1.25",
		"f/redis:7.2.4", "f/redis:latest",
	}
	sort.Strings(want)
	if got := summaryRefs(sum); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("exported refs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(sum.Failures) != 0 {
		t.Fatalf("failures: %+v", sum.Failures)
	}
	// Every tag keeps its upstream digest (the whole index is kept by default).
	srcRepo := map[string]string{"f/console-literal": "spaceone/console", "f/console-regex": "spaceone/console",
		"f/console-keep": "spaceone/console", "f/console-latest": "spaceone/console", "f/plugin-b": "spaceone/plugin-b",
		"f/plugin-a-notregex": "spaceone/plugin-a", "f/plugin-a-semver": "spaceone/plugin-a", "f/plugin-a-latest2": "spaceone/plugin-a",
		"f/redis": "library/redis", "f/alpine": "library/alpine", "f/busybox": "library/busybox", "f/nginx": "library/nginx"}
	targetDigest := map[string]string{} // TO_PATH:TAG → digest
	for _, im := range sum.Images {
		for _, tag := range im.Tags {
			targetDigest[im.Target+":"+tag] = im.Digest
			src := srcRepo[im.Target] + ":" + tag
			if strings.HasPrefix(tag, "sha256-") {
				if im.Digest != pinB2 {
					t.Errorf("%s:%s: digest %s, pinned %s", im.Target, tag, im.Digest, pinB2)
				}
				continue
			}
			if digests[src] != im.Digest {
				t.Errorf("%s:%s: digest %s, source %s has %s", im.Target, tag, im.Digest, src, digests[src])
			}
		}
	}

	tc := readBundle(t, out)
	rec := tc.record(t)

	t.Run("index.json names every tag", func(t *testing.T) {
		var names []string
		for _, d := range tc.index(t).Manifests {
			n := d.Annotations["org.opencontainers.image.ref.name"]
			names = append(names, n)
			if d.Digest != targetDigest[n] {
				t.Errorf("index.json %s → %s, summary says %s", n, d.Digest, targetDigest[n])
			}
		}
		sort.Strings(names)
		if strings.Join(names, "\n") != strings.Join(want, "\n") {
			t.Errorf("index.json ref names:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("each blob stored once", func(t *testing.T) {
		if len(tc.Dups) > 0 {
			t.Fatalf("tar entries stored more than once: %v", tc.Dups)
		}
		if len(tc.Names) < 4 || tc.Names[0] != "oci-layout" || tc.Names[1] != "index.json" || tc.Names[2] != "ferry.json" || tc.Names[3] != "manifest.json" {
			t.Errorf("first entries %v, want oci-layout, index.json, ferry.json, manifest.json", tc.Names[:min(4, len(tc.Names))])
		}
		if len(tc.Blobs) != len(rec.Blobs) || len(tc.Names) != len(rec.Blobs)+4 {
			t.Errorf("%d blob entries (%d entries in all), ferry.json lists %d blobs", len(tc.Blobs), len(tc.Names), len(rec.Blobs))
		}
		mt := map[string]string{}
		for _, b := range rec.Blobs {
			mt[blobName(b.Digest)] = b.MediaType
			data, ok := tc.Blobs[blobName(b.Digest)]
			if !ok {
				t.Errorf("ferry.json blob %s has no tar entry", b.Digest)
				continue
			}
			if "sha256:"+sha256Hex(data) != b.Digest || int64(len(data)) != b.Size {
				t.Errorf("blob %s: content is sha256:%s, %d bytes (ferry.json: %d)", b.Digest, sha256Hex(data), len(data), b.Size)
			}
		}
		// Manifests and configs first, then layers.
		seenLayer := false
		for _, n := range tc.Names[4:] {
			isLayer := !strings.Contains(mt[n], "manifest") && !strings.Contains(mt[n], "index") &&
				!strings.Contains(mt[n], "config") && mt[n] != "application/vnd.docker.container.image.v1+json"
			if seenLayer && !isLayer {
				t.Errorf("%s (%s) comes after a layer", n, mt[n])
			}
			seenLayer = seenLayer || isLayer
		}
		// Base layers shared across repositories appear, once each.
		repos := map[string]map[string]bool{}
		for _, f := range fixtures {
			for _, l := range f.Layers {
				if repos[l] == nil {
					repos[l] = map[string]bool{}
				}
				repos[l][f.Repo] = true
			}
		}
		shared := 0
		for l, rs := range repos {
			if len(rs) < 2 {
				continue
			}
			shared++
			n := 0
			for _, name := range tc.Names {
				if name == blobName(l) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("shared base layer %s (in %d repositories) stored %d times", l, len(rs), n)
			}
		}
		if shared < 3 {
			t.Errorf("only %d shared base layers found in the fixtures; the check proves nothing", shared)
		}
		if sum.Blobs != len(rec.Blobs) {
			t.Errorf("summary says %d blobs, ferry.json lists %d", sum.Blobs, len(rec.Blobs))
		}
	})

	t.Run("sha256sum -c", func(t *testing.T) {
		cmd := exec.Command("sha256sum", "-c", "bundle.tar.sha256")
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(b), "bundle.tar: OK") {
			t.Fatalf("sha256sum -c bundle.tar.sha256 in %s: %v\n%s", dir, err, b)
		}
	})

	// A third registry (plain HTTP, no auth) receives what other tools read
	// out of the bundle.
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	home := t.TempDir()

	t.Run("regctl image import", func(t *testing.T) {
		regctl := regctlPath(t)
		runTool(t, home, regctl, "registry", "set", "--tls", "disabled", dst.Host)
		for _, ref := range []string{
			"f/console-literal:1.10.3", // Docker manifest
			"f/busybox:1.36",           // OCI manifest
			"f/redis:7.2.4",            // OCI index
			"f/alpine:3.19",            // Docker manifest list
			"f/plugin-b:1.0.0",         // Docker manifest, pinned by digest
			"f/nginx:1.25",             // OCI index written by hand
		} {
			to := "regctl/" + ref
			runTool(t, home, regctl, "image", "import", dst.Host+"/"+to, out, "--name", ref)
			if got := remoteDigest(t, dst, to); got != targetDigest[ref] {
				t.Errorf("regctl import of %s: pushed %s, source digest %s", ref, got, targetDigest[ref])
			}
		}
	})

	t.Run("skopeo copy oci-archive", func(t *testing.T) {
		skopeo := skopeoPath(t)
		for _, ref := range []string{
			"f/busybox:1.36",              // OCI manifest
			"f/plugin-a-semver:1.4.2-rc1", // OCI manifest
			"f/nginx:1.25",                // OCI index (hand-written, see seedPlainOCIIndex)
		} {
			to := "skopeo/" + ref
			runTool(t, home, skopeo, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
				"oci-archive:"+out+":"+ref, "docker://"+dst.Host+"/"+to)
			if got := remoteDigest(t, dst, to); got != targetDigest[ref] {
				t.Errorf("skopeo copy of %s: pushed %s, source digest %s", ref, got, targetDigest[ref])
			}
			raw := runTool(t, home, skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+dst.Host+"/"+to)
			if "sha256:"+sha256Hex([]byte(raw)) != targetDigest[ref] {
				t.Errorf("skopeo inspect --raw of %s: bytes hash to sha256:%s, want %s", to, sha256Hex([]byte(raw)), targetDigest[ref])
			}
		}
	})

	t.Run("request budget", func(t *testing.T) {
		testRequestBudget(t, bin, reg, fixtures)
	})
}

// testRequestBudget exports all of SmallSet through a counting proxy: one
// GET per unique blob, one GET per unique manifest, tags listed once per
// repository, nothing fetched twice.
func testRequestBudget(t *testing.T, bin string, reg *harness.Registry, fixtures []harness.Fixture) {
	proxy, counter := harness.CountingProxy(t, reg)
	dir := t.TempDir()
	repos := harness.Repos(fixtures)
	var m strings.Builder
	fmt.Fprintf(&m, "tasks:\n  - name: all\n    source:\n      registry: %s\n    mappings:\n", proxy.Host)
	for _, r := range repos {
		fmt.Fprintf(&m, "      - from: %s\n        to: budget/%s\n", r, r)
	}
	mapping := writeFile(t, filepath.Join(dir, "all.yaml"), m.String())
	out := filepath.Join(dir, "all.tar")
	counter.Reset()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t, "FERRY_PASSWORD=s3cret")}, bin,
		"export", "-f", mapping, "-o", out, "--ca-cert", proxy.CAFile, "--username", "alice", "--json")
	if code != 0 {
		t.Fatalf("export exit %d\nstdout:%s\nstderr:%s", code, stdout, stderr)
	}
	sum := parseSummary(t, stdout)
	if got, want := len(summaryRefs(sum)), len(fixtures); got != want {
		t.Errorf("exported %d refs, SmallSet has %d tags", got, want)
	}
	rec := readBundle(t, out).record(t)
	t.Logf("requests: %s", counter)

	// Unique manifests by hand: one per (repository, digest), plus the
	// children of the two indexes (two platforms each).
	type rd struct{ repo, digest string }
	manifests := map[rd]bool{}
	for _, f := range fixtures {
		manifests[rd{f.Repo, f.Digest}] = true
	}
	wantManifests := len(manifests) + 2*2

	getPaths := map[string]int{}
	var manifestGETs, blobGETs, tagLists int
	tagsByRepo := map[string]int{}
	for _, r := range counter.Requests() {
		if r.Method != "GET" {
			continue
		}
		p, _, _ := strings.Cut(r.Path, "?")
		switch harness.Kind(r.Path) {
		case harness.KindManifest:
			manifestGETs++
			getPaths[p]++
		case harness.KindBlob:
			blobGETs++
			getPaths[p]++
		case harness.KindTags:
			tagLists++
			tagsByRepo[strings.TrimSuffix(strings.TrimPrefix(p, "/v2/"), "/tags/list")]++
		}
	}
	for p, n := range getPaths {
		if n != 1 {
			t.Errorf("GET %s %d times", p, n)
		}
	}
	if manifestGETs != wantManifests {
		t.Errorf("%d manifest GETs, want %d (one per unique manifest)", manifestGETs, wantManifests)
	}
	// Blobs: every config and layer of ferry.json, each GET once (from one
	// repository, even when several share it).
	wantBlobs := map[string]bool{}
	for _, b := range rec.Blobs {
		if !strings.Contains(b.MediaType, "manifest") && !strings.Contains(b.MediaType, "index") {
			wantBlobs[strings.TrimPrefix(b.Digest, "sha256:")] = true
		}
	}
	gotBlobs := map[string]int{}
	for p, n := range getPaths {
		if i := strings.Index(p, "/blobs/sha256:"); i >= 0 {
			gotBlobs[p[i+len("/blobs/sha256:"):]] += n
		}
	}
	for h := range wantBlobs {
		if gotBlobs[h] != 1 {
			t.Errorf("blob sha256:%s fetched %d times, want 1", h, gotBlobs[h])
		}
	}
	for h := range gotBlobs {
		if !wantBlobs[h] {
			t.Errorf("blob sha256:%s fetched but not a config or layer of the bundle", h)
		}
	}
	if blobGETs != len(wantBlobs) {
		t.Errorf("%d blob GETs, want %d (one per unique config and layer)", blobGETs, len(wantBlobs))
	}
	for _, f := range fixtures {
		for _, l := range f.Layers {
			if !wantBlobs[strings.TrimPrefix(l, "sha256:")] {
				t.Errorf("layer %s of %s missing from the bundle", l, f.Ref())
			}
		}
	}
	if tagLists != len(repos) {
		t.Errorf("%d tag listings, want %d (one per repository): %v", tagLists, len(repos), tagsByRepo)
	}
	for _, r := range repos {
		if tagsByRepo[r] != 1 {
			t.Errorf("tags of %s listed %d times, want 1", r, tagsByRepo[r])
		}
	}
}
