package test

import (
	"archive/tar"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/test/harness"
)

// targetDigest returns the digest repoTag has in reg, read as the robot.
func targetDigest(t *testing.T, reg *harness.Registry, repoTag string) string {
	t.Helper()
	desc, err := remote.Head(reg.Ref(t, repoTag), reg.RemoteOptions(robot)...)
	if err != nil {
		t.Fatalf("HEAD %s on %s: %v", repoTag, reg.Host, err)
	}
	return desc.Digest.String()
}

// Bodies cut mid-way are the most common transient fault there is: through
// a proxy that closes, resets or shortens them, export, sync and import
// must complete with exact digests, and bytes that never match their
// digest must fail naming image, blob, registry and bytes received.

// faultSource starts a TLS+htpasswd source registry with one 1 MiB layer
// image (large/blob:latest) and the small set, behind a fault proxy.
func faultSource(t *testing.T) (src, front *harness.Registry, counter *harness.Counter, faults *harness.Faults, large, console harness.Fixture) {
	t.Helper()
	src = harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{impAlice: impAPW}})
	large = harness.Seed(t, src, impAlice, harness.LargeLayerSet(1<<20))[0]
	console = fixtureByRef(t, harness.Seed(t, src, impAlice, harness.SmallSet()), "spaceone/console:1.11.5")
	front, counter, faults = harness.FaultProxy(t, src)
	return src, front, counter, faults, large, console
}

// armBodyFaults arms one fault of each kind on the source's GETs: a reset
// 200 KiB into the large layer, a close one byte before the end of the
// console's app layer, a short body for its base layer, and a close in the
// middle of a manifest.
func armBodyFaults(faults *harness.Faults, large, console harness.Fixture) {
	get := http.MethodGet
	faults.Add(harness.Fault{Method: get, Kind: harness.KindBlob, Match: large.Layers[0], Mode: harness.FaultReset, Offset: 200 << 10, Times: 1})
	faults.Add(harness.Fault{Method: get, Kind: harness.KindBlob, Match: console.Layers[len(console.Layers)-1], Mode: harness.FaultClose, Offset: -1, Times: 1})
	faults.Add(harness.Fault{Method: get, Kind: harness.KindBlob, Match: console.Layers[0], Mode: harness.FaultShort, Offset: 10, Times: 1})
	faults.Add(harness.Fault{Method: get, Kind: harness.KindManifest, Match: "/large/blob/manifests/", Mode: harness.FaultClose, Offset: 40, Times: 1})
}

func faultMapping(t *testing.T, dir, host, target string) string {
	t.Helper()
	extra := ""
	if target != "" {
		auth := base64.StdEncoding.EncodeToString([]byte(`{"username": "` + robot + `", "password": "` + robotPW + `"}`))
		extra = "\n    target:\n      registry: " + target + "\n      auth: " + auth
	}
	return writeFile(t, filepath.Join(dir, "m.yaml"), `
tasks:
  - name: faults
    source:
      registry: `+host+extra+`
    mappings:
      - from: large/blob
        tags: ['latest']
      - from: spaceone/console
        tags: ['1.11.5']
`)
}

// checkHits asserts that every fault armed fired exactly once.
func checkHits(t *testing.T, faults *harness.Faults) {
	t.Helper()
	for i, n := range faults.Hits() {
		if n != 1 {
			t.Errorf("fault %d hit %d requests, want 1 (the test did not test what it says)", i, n)
		}
	}
}

// checkBundleExact asserts that the bundle holds both images with their
// source digests, every layer, and only blobs whose content matches their
// name; `ferry verify` agrees.
func checkBundleExact(t *testing.T, bin, path string, fixtures ...harness.Fixture) {
	t.Helper()
	tc := readBundle(t, path)
	for name, data := range tc.Blobs {
		if got := "blobs/sha256/" + sha256Hex(data); got != name {
			t.Errorf("bundle blob %s holds content %s", name, got)
		}
	}
	images := map[string]string{}
	for _, im := range tc.record(t).Images {
		images[im.Source[strings.Index(im.Source, "/")+1:]] = im.Digest
	}
	for _, f := range fixtures {
		if images[f.Ref()] != f.Digest {
			t.Errorf("%s: digest %q in the bundle, %s at the source (images %v)", f.Ref(), images[f.Ref()], f.Digest, images)
		}
		for _, l := range f.Layers {
			if _, ok := tc.Blobs[blobName(l)]; !ok {
				t.Errorf("%s: layer %s missing from the bundle", f.Ref(), l)
			}
		}
	}
	if stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, "verify", path); code != 0 {
		t.Errorf("ferry verify: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestExportSurvivesCutBodies(t *testing.T) {
	bin := harness.BuildFerry(t)
	src, front, counter, faults, large, console := faultSource(t)
	armBodyFaults(faults, large, console)
	dir := t.TempDir()
	m := faultMapping(t, dir, front.Host, "")
	out := filepath.Join(dir, "bundle.tar")
	cache := filepath.Join(dir, "cache")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice, "--cache", cache, "--json")
	if code != 0 {
		t.Fatalf("export through cut bodies: exit %d\nstdout:\n%s\nstderr:\n%s\nrequests: %s", code, stdout, stderr, counter)
	}
	checkHits(t, faults)
	checkBundleExact(t, bin, out, large, console)
	// The cache holds only verified bytes.
	entries, err := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(cache, "blobs", "sha256", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(data); got != e.Name() {
			t.Errorf("cache entry %s holds content %s", e.Name(), got)
		}
	}
	// A cut is resumed with Range, not fetched again whole: the large
	// layer's bytes crossed the proxy about once.
	var largeGETs int
	for _, r := range counter.Requests() {
		if r.Method == http.MethodGet && strings.Contains(r.Path, large.Layers[0]) {
			largeGETs++
		}
	}
	if largeGETs != 2 {
		t.Errorf("%d GETs of the large layer, want 2 (the cut one and its resume)", largeGETs)
	}

	// Damaged bytes the cache could copy from are never copied into the
	// next bundle: the first bundle (the cache's copy of the layer) has a
	// byte flipped inside the large layer, and a whole-file cache entry of
	// the layer (as an older ferry kept them) is damaged too. The next
	// export fetches the layer again, and forgets the damaged entry.
	entry := filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(large.Layers[0], "sha256:"))
	data := mustRead(t, filepath.Join(src.Dir, "docker/registry/v2/blobs/sha256", large.Layers[0][7:9], large.Layers[0][7:], "data"))
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(entry, data, 0o644); err != nil {
		t.Fatal(err)
	}
	flipInBundle(t, out, large.Layers[0])
	counter.Reset()
	again := filepath.Join(dir, "again.tar")
	if stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", again, "--ca-cert", src.CAFile, "--username", impAlice, "--cache", cache, "-q"); code != 0 {
		t.Fatalf("export over damaged cached bytes: exit %d\n%s\n%s", code, stdout, stderr)
	}
	checkBundleExact(t, bin, again, large, console)
	if _, err := os.Stat(entry); !os.IsNotExist(err) {
		t.Errorf("the damaged cache entry was kept (%v)", err)
	}
}

// flipInBundle flips one byte in the middle of blob digest inside the
// bundle at path.
func flipInBundle(t *testing.T, path, digest string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var off int64
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("blob %s not found in %s: %v", digest, path, err)
		}
		if h.Name == "blobs/sha256/"+strings.TrimPrefix(digest, "sha256:") {
			pos, _ := f.Seek(0, io.SeekCurrent)
			off = pos + h.Size/2
			break
		}
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestExportPersistentMismatchFails(t *testing.T) {
	bin := harness.BuildFerry(t)
	src, front, _, faults, large, _ := faultSource(t)
	faults.Add(harness.Fault{Method: http.MethodGet, Kind: harness.KindBlob, Match: large.Layers[0], Mode: harness.FaultCorrupt, Offset: 300 << 10})
	dir := t.TempDir()
	m := faultMapping(t, dir, front.Host, "")
	out := filepath.Join(dir, "bundle.tar")
	cache := filepath.Join(dir, "cache")
	_, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice, "--cache", cache, "-q")
	if code != 1 {
		t.Fatalf("export of corrupted bytes: exit %d, want 1\n%s", code, stderr)
	}
	if n := faults.Hits()[0]; n != 2 {
		t.Errorf("the corrupted layer was fetched %d times, want 2 (once more from scratch)", n)
	}
	for _, want := range []string{"large/blob", "blob " + large.Layers[0] + " from " + front.Host, "after 1048576 bytes", "content does not match its digest"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
	// With --cache the unfinished bundle stays (hidden, noted in the cache)
	// for the next run to take its complete layers from; nothing else.
	var left []string
	for _, n := range dirEntries(t, dir) {
		if !strings.HasPrefix(n, ".bundle.tar.tmp-") {
			left = append(left, n)
		}
	}
	if strings.Join(left, ",") != "cache,m.yaml" {
		t.Errorf("files left beside the output: %v", left)
	}
	if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(large.Layers[0], "sha256:"))); !os.IsNotExist(err) {
		t.Errorf("the corrupted layer reached the cache (%v)", err)
	}
}

func TestSyncSurvivesCutBodies(t *testing.T) {
	bin := harness.BuildFerry(t)
	src, front, counter, faults, large, console := faultSource(t)
	armBodyFaults(faults, large, console)
	// Bytes that do not match once: the upload they feed restarts.
	faults.Add(harness.Fault{Method: http.MethodGet, Kind: harness.KindBlob, Match: console.Layers[1], Mode: harness.FaultCorrupt, Offset: 5, Times: 1})
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: src.CA, Users: map[string]string{robot: robotPW}})
	m := faultMapping(t, t.TempDir(), front.Host, dst.Host+"/mirror")
	r, stderr := runSync(t, bin, "-f", m, "--ca-cert", src.CAFile)
	if r.Failed != 0 || r.Copied != 2 {
		t.Fatalf("sync: %d copied, %d failed (%s)\n%s\nrequests: %s", r.Copied, r.Failed, r.Error, stderr, counter)
	}
	checkHits(t, faults)
	for _, f := range []harness.Fixture{large, console} {
		if got := targetDigest(t, dst, "mirror/"+f.Ref()); got != f.Digest {
			t.Errorf("%s: %s in the target, %s at the source", f.Ref(), got, f.Digest)
		}
	}
}

func TestImportSurvivesCutUploads(t *testing.T) {
	bin := harness.BuildFerry(t)
	src, _, _, _, large, console := faultSource(t)
	dir := t.TempDir()
	m := faultMapping(t, dir, src.Host, "")
	out := filepath.Join(dir, "bundle.tar")
	if stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice, "-q"); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	front, counter, faults := harness.FaultProxy(t, dst)
	put := http.MethodPut
	faults.Add(harness.Fault{Method: put, Kind: harness.KindUpload, Match: strings.TrimPrefix(large.Layers[0], "sha256:"), Mode: harness.FaultReset, Offset: 200 << 10, Times: 1, Request: true})
	faults.Add(harness.Fault{Method: put, Kind: harness.KindUpload, Mode: harness.FaultClose, Offset: 10, Times: 1, Request: true})

	sum, stderr, code := runImport(t, bin, robotPW+"\n", out, "--to", front.Host+"/mirror", "--ca-cert", dst.CAFile,
		"--username", robot, "--password-stdin", "--jobs", "1")
	if code != 0 || sum.Failed != 0 || sum.Pushed != 2 {
		t.Fatalf("import through cut uploads: exit %d, pushed %d, failed %d\n%s\nrequests: %s", code, sum.Pushed, sum.Failed, stderr, counter)
	}
	checkHits(t, faults)
	for _, f := range []harness.Fixture{large, console} {
		if got := targetDigest(t, dst, "mirror/"+f.Ref()); got != f.Digest {
			t.Errorf("%s: %s in the target, %s at the source", f.Ref(), got, f.Digest)
		}
	}
	// Each cut upload started over in a new session: no session got two PUTs.
	sessions := map[string]bool{}
	puts := 0
	for _, r := range counter.Requests() {
		if r.Method == put && harness.Kind(r.Path) == harness.KindUpload {
			puts++
			sessions[strings.SplitN(r.Path, "?", 2)[0]] = true
		}
	}
	if puts != sum.BlobsUploaded+2 || len(sessions) != puts {
		t.Errorf("%d blob PUTs in %d sessions for %d blobs uploaded; want two PUTs more than blobs, each in its own session (%s)", puts, len(sessions), sum.BlobsUploaded, counter)
	}
}
