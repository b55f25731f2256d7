package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/test/harness"
)

// s3Tree is a bucket of the test binary's SeaweedFS that a static tree is
// unpacked into, readable by anyone, and reached as a registry at host.
type s3Tree struct {
	sw     *harness.Seaweed
	bucket string
	st     *objstore.Store
	host   string // BUCKET.s3.ferry.test:PORT
	hosts  []string
}

func newS3Tree(t *testing.T) *s3Tree {
	t.Helper()
	sw := harness.StartSeaweed(t)
	b := sw.Bucket(t)
	sw.PublicRead(t, b)
	st, err := sw.Store(t, b)
	if err != nil {
		t.Fatal(err)
	}
	host, line := sw.VirtualHost(b)
	return &s3Tree{sw: sw, bucket: b, st: st, host: host, hosts: []string{line}}
}

// unpack runs ferry unpack --static s3://BUCKET[/PREFIX] --json and returns
// the summary, the error output and the exit code.
func (s *s3Tree) unpack(t *testing.T, bin, prefix string, args ...string) (map[string]any, string, int) {
	t.Helper()
	loc := "s3://" + s.bucket + "/" + prefix
	all := append([]string{"unpack", "-q", "--json", "--static", loc, "--s3-endpoint", s.sw.Endpoint}, args...)
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: s.sw.Env()}, bin, all...)
	var sum map[string]any
	if code == 0 {
		if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
			t.Fatalf("ferry unpack --json: %v\n%s", err, stdout)
		}
	}
	return sum, stderr, code
}

func (s *s3Tree) mustUnpack(t *testing.T, bin string, args ...string) map[string]any {
	t.Helper()
	sum, stderr, code := s.unpack(t, bin, "", args...)
	if code != 0 {
		t.Fatalf("ferry unpack to %s: exit %d\n%s", s.bucket, code, stderr)
	}
	return sum
}

// tool runs a registry client that resolves the bucket's virtual host.
func (s *s3Tree) tool(t *testing.T, home, bin string, args ...string) string {
	t.Helper()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Hosts: s.hosts,
		Env: []string{"HOME=" + home, "REGCTL_CONFIG=" + filepath.Join(home, "regctl.json"), "DOCKER_CONFIG=" + filepath.Join(home, ".docker"), "XDG_RUNTIME_DIR=" + home, "TMPDIR=" + home},
	}, bin, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// get fetches path from the bucket's virtual host, unsigned, as a client
// of the published tree does.
func (s *s3Tree) get(t *testing.T, method, path string) httpAnswer {
	t.Helper()
	return doHTTPHost(t, method, s.sw.Endpoint+path, s.host)
}

// checkObjects hashes every blob and manifest object under v2/ against the
// digest in its key, and checks every fixture's tag: manifest bytes and
// Content-Type.
func (s *s3Tree) checkObjects(t *testing.T, fixtures []harness.Fixture) {
	t.Helper()
	tags := s.hashTree(t, "")
	if len(tags) == 0 {
		t.Fatal("no tag in the tree")
	}
	for _, fx := range fixtures {
		a := s.get(t, "HEAD", "/v2/proj/"+fx.Repo+"/manifests/"+fx.Tag)
		if d := tags["proj/"+fx.Ref()]; a.status != 200 || d != fx.Digest || a.header.Get("Content-Type") != fx.MediaType {
			t.Errorf("tag %s: %d %s %s, want %s %s", fx.Ref(), a.status, a.header.Get("Content-Type"), d, fx.MediaType, fx.Digest)
		}
	}
}

// smallS3Setup exports the small fixture set into a bundle (names under
// proj/) and makes a public bucket for it.
func smallS3Setup(t *testing.T) (bin string, fixtures []harness.Fixture, dir, bundlePath string, s *s3Tree) {
	t.Helper()
	bin = harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures = harness.Seed(t, reg, "", harness.SmallSet())
	dir = t.TempDir()
	return bin, fixtures, dir, exportAll(t, bin, reg, fixtures, dir), newS3Tree(t)
}

// TestStaticS3E2E: a bundle unpacked with --static s3://BUCKET and served
// by the real SeaweedFS S3 gateway (virtual-hosted, public read, plain
// HTTP on loopback) is a registry that crane, skopeo and regctl pull
// every image from with its source digest; tags never appear before what
// they reference; a rerun writes nothing.
func TestStaticS3E2E(t *testing.T) {
	bin, fixtures, dir, bundlePath, s := smallS3Setup(t)

	watch := watchTagOrder(t, s)
	sum := s.mustUnpack(t, bin, bundlePath)
	watch()
	if sum["treeTags"] != float64(len(fixtures)) || sum["blobsWritten"].(float64) == 0 || sum["tagsChanged"] != float64(len(fixtures)) || sum["dir"] != "s3://"+s.bucket {
		t.Errorf("first unpack: %v, want %d tags", sum, len(fixtures))
	}
	s.checkObjects(t, fixtures)
	// Headers: the manifest's media type, the digest as metadata, JSON
	// lists, and the API base answering 200.
	fx := fixtures[0]
	a := s.get(t, "HEAD", "/v2/proj/"+fx.Repo+"/manifests/"+fx.Tag)
	if a.status != 200 || a.header.Get("Content-Type") != fx.MediaType || a.header.Get("X-Amz-Meta-Docker-Content-Digest") != fx.Digest {
		t.Errorf("HEAD tag: %d %v", a.status, a.header)
	}
	if a := s.get(t, "GET", "/v2/"); a.status != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /v2/: %d %v", a.status, a.header)
	}
	if a := s.get(t, "GET", "/v2/_catalog"); a.status != 200 || !strings.Contains(a.body, `"proj/spaceone/console"`) {
		t.Errorf("GET /v2/_catalog: %d %s", a.status, a.body)
	}
	pullS3(t, s, dir, fixtures)

	// A rerun lists the prefix and writes nothing.
	sum = s.mustUnpack(t, bin, bundlePath)
	if sum["blobsWritten"] != float64(0) || sum["filesWritten"] != float64(0) || sum["tagsChanged"] != float64(0) || sum["bytesWritten"] != float64(0) {
		t.Errorf("rerun: %v", sum)
	}
}

// pullS3 pulls every image through the bucket's virtual host with the
// three clients and compares digests with the source's.
func pullS3(t *testing.T, s *s3Tree, dir string, fixtures []harness.Fixture) {
	t.Helper()
	crane, skopeo, regctl := cranePath(t), skopeoPath(t), regctlPath(t)
	home := t.TempDir()
	s.tool(t, home, regctl, "registry", "set", s.host, "--tls", "disabled")
	pulled := map[string]bool{}
	for i, fx := range fixtures {
		ref := s.host + "/proj/" + fx.Repo + ":" + fx.Tag
		// No Docker-Content-Digest on an S3 answer: crane's HEAD falls back
		// to GET; regctl computes the digest of what it got.
		if got := strings.TrimSpace(s.tool(t, home, crane, "digest", "--insecure", ref)); got != fx.Digest {
			t.Errorf("crane digest %s: %s, want %s", ref, got, fx.Digest)
		}
		if got := strings.TrimSpace(s.tool(t, home, regctl, "image", "digest", ref)); got != fx.Digest {
			t.Errorf("regctl image digest %s: %s, want %s", ref, got, fx.Digest)
		}
		raw := s.tool(t, home, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
		if "sha256:"+sha256Hex([]byte(raw)) != fx.Digest {
			t.Errorf("skopeo inspect --raw %s: sha256:%s, want %s", ref, sha256Hex([]byte(raw)), fx.Digest)
		}
		if pulled[fx.Digest] {
			continue
		}
		pulled[fx.Digest] = true
		cdir := filepath.Join(dir, "crane", strconv.Itoa(i))
		s.tool(t, home, crane, "pull", "--insecure", "--format", "oci", ref, cdir)
		if got := ociLayoutDigest(t, cdir); got != fx.Digest {
			t.Errorf("crane pull %s: %s, want %s", ref, got, fx.Digest)
		}
		checkLayoutBlobs(t, cdir)
		rdir := filepath.Join(dir, "regctl", strconv.Itoa(i))
		s.tool(t, home, regctl, "image", "copy", ref, "ocidir://"+rdir+":"+fx.Tag)
		if got := ociLayoutDigest(t, rdir); got != fx.Digest {
			t.Errorf("regctl image copy %s: %s, want %s", ref, got, fx.Digest)
		}
		checkLayoutBlobs(t, rdir)
		skopeoCopy(t, func(a ...string) string { return s.tool(t, home, skopeo, a...) },
			filepath.Join(dir, "skopeo", strconv.Itoa(i)), s.host+"/proj/"+fx.Repo, fx.Digest, fx.MediaType, raw)
	}
}

// watchTagOrder lists the bucket over and over until the returned stop is
// called: every tag object it sees must have its manifest's blobs (or an
// index's manifests) already in the same repository, since ferry writes
// tags last. It fails the test on a tag seen before what it references.
func watchTagOrder(t *testing.T, s *s3Tree) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	seen := map[string]bool{}
	rounds := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			rounds++
			err := s.st.List(ctx, "v2/", func(info objstore.Info) error {
				rest := strings.TrimPrefix(info.Key, "v2/")
				i := strings.LastIndex(rest, "/manifests/")
				if i < 0 || strings.HasPrefix(rest[i+len("/manifests/"):], "sha256:") || seen[info.Key] {
					return nil
				}
				seen[info.Key] = true
				if missing := missingRefs(ctx, s.st, rest[:i], info.Key); missing != "" && ctx.Err() == nil {
					mu.Lock()
					bad = append(bad, info.Key+" before "+missing)
					mu.Unlock()
				}
				return nil
			})
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				bad = append(bad, "listing: "+err.Error())
				mu.Unlock()
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		for _, b := range bad {
			t.Errorf("tag listed before what it references: %s", b)
		}
		t.Logf("tag order watched over %d listings, %d tags", rounds, len(seen))
	}
}

// missingRefs reads the manifest at key and returns the first key it
// references in repository name that does not exist, or "".
func missingRefs(ctx context.Context, st *objstore.Store, name, key string) string {
	data, _, err := st.Get(ctx, key, 4<<20)
	if err != nil {
		return key + " (" + err.Error() + ")"
	}
	var m struct {
		Config    struct{ Digest string }
		Layers    []struct{ Digest string }
		Manifests []struct{ Digest string }
	}
	if json.Unmarshal(data, &m) != nil {
		return key + " (not JSON)"
	}
	var keys []string
	if m.Config.Digest != "" {
		keys = append(keys, "v2/"+name+"/blobs/"+m.Config.Digest)
	}
	for _, l := range m.Layers {
		keys = append(keys, "v2/"+name+"/blobs/"+l.Digest)
	}
	for _, c := range m.Manifests {
		keys = append(keys, "v2/"+name+"/manifests/"+c.Digest)
	}
	for _, k := range keys {
		if _, err := st.Stat(ctx, k); err != nil {
			return k
		}
	}
	return ""
}

// TestStaticS3RerunRepairs breaks the premise a rerun trusts (an object
// whose size and ETag are those ferry recorded holds the bytes it checked)
// every way it can break: an object deleted, overwritten in place with
// other bytes of the same size and the right digest metadata, truncated, a
// tag pointed at another manifest, and the journal lost. Each rerun puts
// back exactly what is wrong, uploads from the bundle only what no checked
// object holds, and every object then hashes to its name.
func TestStaticS3RerunRepairs(t *testing.T) {
	bin, fixtures, dir, bundlePath, s := smallS3Setup(t)
	s.mustUnpack(t, bin, bundlePath)
	ctx := context.Background()
	fx := fixtureByRef(t, fixtures, "spaceone/console:1.11.0")
	layer := "v2/proj/" + fx.Repo + "/blobs/" + fx.Layers[len(fx.Layers)-1]
	info, err := s.st.Stat(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, data []byte, meta map[string]string) {
		t.Helper()
		if _, err := s.st.Put(ctx, key, strings.NewReader(string(data)), int64(len(data)), objstore.PutOptions{ContentType: "application/octet-stream", Metadata: meta}); err != nil {
			t.Fatal(err)
		}
	}
	other := fixtureByRef(t, fixtures, "spaceone/console:1.10.3")
	otherManifest := s.get(t, "GET", "/v2/proj/"+other.Repo+"/manifests/"+other.Tag).body
	for _, c := range []struct {
		name      string
		breakIt   func()
		uploads   float64 // blobs the rerun must take from the bundle
		wantFiles bool
	}{
		// The layer is only in this repository: a broken copy is the only
		// copy, so the bundle's bytes go up again.
		{"deleted", func() { mustDo(t, s.st.Remove(ctx, layer)) }, 1, true},
		{"same size, other bytes, right metadata", func() {
			put(layer, []byte(strings.Repeat("x", int(info.Size))), map[string]string{"docker-content-digest": fx.Layers[len(fx.Layers)-1]})
		}, 1, true},
		{"truncated", func() { put(layer, []byte("short"), nil) }, 1, true},
		{"tag moved", func() {
			put("v2/proj/"+fx.Repo+"/manifests/"+fx.Tag, []byte(otherManifest), nil)
		}, 0, true},
		// Without the journal every blob is hashed once (its first copy) and
		// copied on the server to its other keys: nothing is uploaded.
		{"journal lost", func() { mustDo(t, s.st.Remove(ctx, ".ferry/s3-journal.json")) }, 0, true},
		{"journal lost and a layer changed", func() {
			mustDo(t, s.st.Remove(ctx, ".ferry/s3-journal.json"))
			put(layer, []byte(strings.Repeat("y", int(info.Size))), nil)
		}, 1, true},
	} {
		c.breakIt()
		sum := s.mustUnpack(t, bin, bundlePath)
		if sum["blobsWritten"] != c.uploads || (sum["filesWritten"].(float64) > 0) != c.wantFiles {
			t.Errorf("%s: rerun %v, want %v blobs uploaded, objects written: %v", c.name, sum, c.uploads, c.wantFiles)
		}
		s.checkObjects(t, fixtures)
		if sum := s.mustUnpack(t, bin, bundlePath); sum["filesWritten"] != float64(0) || sum["blobsWritten"] != float64(0) {
			t.Errorf("%s: the run after the repair wrote again: %v", c.name, sum)
		}
	}
	// Every copy of a blob gone (all repositories): it comes from the
	// bundle again, once, and is copied on the server to the others.
	shared := fx.Layers[0]
	n := 0
	mustDo(t, s.st.List(ctx, "v2/", func(info objstore.Info) error {
		if strings.HasSuffix(info.Key, "/blobs/"+shared) {
			n++
			return s.st.Remove(ctx, info.Key)
		}
		return nil
	}))
	if sum := s.mustUnpack(t, bin, bundlePath); sum["blobsWritten"] != float64(1) || sum["filesWritten"] != float64(n) {
		t.Errorf("all %d copies of %s gone: %v, want 1 upload and %d objects", n, shared, sum, n)
	}
	s.checkObjects(t, fixtures)
	pullS3(t, s, dir, fixtures[:1])
}

// TestStaticS3Refusals: a damaged bundle, a prefix holding other objects,
// options that belong to a directory tree, and a delta without its base
// are refused, and none leaves a tag (or a damaged object) in the bucket.
func TestStaticS3Refusals(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
	}})
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)
	s := newS3Tree(t)
	ctx := context.Background()

	// A layer damaged inside the bundle: exit 1 naming it, no object at
	// its key, no tag.
	damaged := filepath.Join(dir, "damaged.tar")
	copyFile(t, bundlePath, damaged)
	bad := fixtures[0].Layers[len(fixtures[0].Layers)-1]
	flipInBundle(t, damaged, bad)
	_, stderr, code := s.unpack(t, bin, "", damaged)
	if code != 1 || !strings.Contains(stderr, strings.TrimPrefix(bad, "sha256:")[:12]) {
		t.Errorf("damaged bundle: exit %d\n%s", code, stderr)
	}
	if _, err := s.st.Stat(ctx, "v2/proj/app/web/blobs/"+bad); err == nil {
		t.Error("the damaged layer's object exists")
	}
	if _, err := s.st.Stat(ctx, "v2/proj/app/web/manifests/1.0.0"); err == nil {
		t.Error("the tag exists after a failed unpack")
	}

	// Usage: exit 2, nothing written.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--prune"}, "--prune"},
		{[]string{"--listen", "8080"}, "--listen"},
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert"},
	} {
		if _, stderr, code := s.unpack(t, bin, "other", append(c.args, bundlePath)...); code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d\n%s", c.args, code, stderr)
		}
	}
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: s.sw.Env()}, bin, "unpack", "-q", "--static", "s3://x", bundlePath)
	if code != 2 || !strings.Contains(stderr, "bucket") {
		t.Errorf("bad bucket name: exit %d\n%s%s", code, stdout, stderr)
	}
	// A wrong secret key: exit 1, an error naming the bucket and what the
	// server said, and never the secret; nothing written.
	stdout, stderr, code = harness.RunWith(t, harness.RunOptions{Env: []string{"AWS_ACCESS_KEY_ID=" + s.sw.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-key-xyz"}},
		bin, "unpack", "-q", "--static", "s3://"+s.bucket+"/wrongkey", "--s3-endpoint", s.sw.Endpoint, bundlePath)
	if code != 1 || !strings.Contains(stderr, s.bucket) || strings.Contains(stdout+stderr, "wrong-secret-key-xyz") {
		t.Errorf("wrong secret key: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("wrong secret key: %s", strings.TrimSpace(stderr))
	// A prefix holding objects ferry did not write.
	if _, err := s.st.Put(ctx, "site/index.html", strings.NewReader("<html>"), 6, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := s.unpack(t, bin, "site", bundlePath); code != 2 || !strings.Contains(stderr, "did not write") {
		t.Errorf("foreign prefix: exit %d\n%s", code, stderr)
	}
	for prefix, want := range map[string]int{"other/": 0, "site/": 1, "wrongkey/": 0} {
		n := 0
		mustDo(t, s.st.List(ctx, prefix, func(info objstore.Info) error { n++; return nil }))
		if n != want {
			t.Errorf("refused runs left %d objects under %s, want %d", n, prefix, want)
		}
	}
	// With the good bundle, the same bucket works.
	s.mustUnpack(t, bin, bundlePath)
	s.checkObjects(t, fixtures)
}

// TestStaticS3Delta: a delta unpacks on top of its base in the bucket (the
// blobs it leaves out are found there, checked); alone, into an empty
// prefix, it is refused before anything is written.
func TestStaticS3Delta(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	base := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/api", Tag: "1.0.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/web\n        to: proj/app/web\n      - from: app/api\n        to: proj/app/api\n")
	baseOut, deltaOut := filepath.Join(dir, "base.tar"), filepath.Join(dir, "delta.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", baseOut); code != 0 {
		t.Fatalf("base export: %s %s", stdout, stderr)
	}
	added := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.1.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 2500 << 10},
	}})
	// The delta in 1 MiB volumes: unpack reads blobs that span them.
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", deltaOut, "--since", baseOut, "--split", "1MiB"); code != 0 {
		t.Fatalf("delta export: %s %s", stdout, stderr)
	}
	if _, err := os.Stat(deltaOut + ".002"); err != nil {
		t.Fatalf("the delta is not in three or more volumes: %v", err)
	}
	s := newS3Tree(t)
	if _, stderr, code := s.unpack(t, bin, "", deltaOut); code != 1 || !strings.Contains(stderr, "unpack the base bundle into the same place first") {
		t.Errorf("delta alone: exit %d\n%s", code, stderr)
	}
	n := 0
	mustDo(t, s.st.List(context.Background(), "", func(objstore.Info) error { n++; return nil }))
	if n > 1 { // the journal at most
		t.Errorf("the refused delta left %d objects", n)
	}
	s.mustUnpack(t, bin, baseOut)
	// The journal lost, and the first listed copy of a base layer the
	// delta leaves out (app/api's) truncated: the delta finds a good copy
	// (app/web's) by hashing, not by the first copy's size.
	ctx := context.Background()
	shared := base[0].Layers[0]
	if base[1].Layers[0] != shared {
		t.Fatalf("the fixtures share no first layer: %v %v", base[0].Layers, base[1].Layers)
	}
	mustDo(t, s.st.Remove(ctx, ".ferry/s3-journal.json"))
	if _, err := s.st.Put(ctx, "v2/proj/app/api/blobs/"+shared, strings.NewReader("cut"), 3, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sum := s.mustUnpack(t, bin, deltaOut)
	if sum["tagsChanged"] != float64(1) || sum["treeTags"] != float64(3) {
		t.Errorf("delta: %v, want 1 tag changed and 3 in the tree", sum)
	}
	pullS3(t, s, dir, added)
	s.mustUnpack(t, bin, baseOut) // puts app/api's copy back
	s.checkObjects(t, append(base, added...))
}

// TestStaticS3CrashRerun kills ferry unpack --static s3:// with SIGKILL at
// seeded random points (10 runs, each into a prefix of its own; half on a
// fresh prefix, half while a later bundle moves tags of a finished one;
// one or two kills each), then reruns it to the end. Afterwards every
// blob and manifest object hashes to the digest it is named by, and the
// tags are exactly the bundle's, each with its manifest.
func TestStaticS3CrashRerun(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	firstSet, laterSet := crashSets()
	first := harness.Seed(t, reg, "", firstSet)
	dir := t.TempDir()
	mustDo(t, os.MkdirAll(filepath.Join(dir, "first"), 0o755))
	mustDo(t, os.MkdirAll(filepath.Join(dir, "later"), 0o755))
	bundleFirst := exportAll(t, bin, reg, first, filepath.Join(dir, "first"))
	later := harness.Seed(t, reg, "", laterSet)
	bundleLater := exportAll(t, bin, reg, later, filepath.Join(dir, "later"))
	wantFirst, wantLater := crashWants(first, later)
	s := newS3Tree(t)
	unpackTo := func(prefix, bundlePath string) {
		t.Helper()
		if _, stderr, code := s.unpack(t, bin, prefix, bundlePath); code != 0 {
			t.Fatalf("unpack to %s: exit %d\n%s", prefix, code, stderr)
		}
	}
	// The bucket's first write makes its volumes (seconds on SeaweedFS):
	// a first run pays for that before the one that is timed.
	unpackTo("warm", bundleFirst)
	start := time.Now()
	unpackTo("calibrate", bundleFirst)
	span := time.Since(start) + 20*time.Millisecond
	t.Logf("seed %d; a whole unpack takes %s", crashSeed, span.Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(crashSeed, 1))
	mid := 0
	for run := range 10 {
		prefix := "run-" + strconv.Itoa(run)
		bundlePath, want := bundleFirst, wantFirst
		if run%2 == 1 {
			unpackTo(prefix, bundleFirst)
			bundlePath, want = bundleLater, wantLater
		}
		for range 1 + rng.IntN(2) {
			args := []string{"unpack", "-q", "--static", "s3://" + s.bucket + "/" + prefix, "--s3-endpoint", s.sw.Endpoint, bundlePath}
			if killAfter(t, s.sw.Env(), bin, args, time.Duration(rng.Int64N(int64(span)))) {
				mid++
			}
		}
		unpackTo(prefix, bundlePath)
		tags := s.hashTree(t, prefix)
		for ref, d := range want {
			if tags[ref] != d {
				t.Errorf("run %d (seed %d): tag %s holds %q, want %s", run, crashSeed, ref, tags[ref], d)
			}
		}
		if len(tags) != len(want) {
			t.Errorf("run %d (seed %d): tags %v, want %v", run, crashSeed, tags, want)
		}
		if t.Failed() {
			t.Fatalf("run %d (seed %d) left a tree that does not hold what it should", run, crashSeed)
		}
	}
	if mid < 3 {
		t.Errorf("only %d of the kills stopped an unpack before it finished", mid)
	}
	t.Logf("%d kills stopped an unpack midway", mid)
}

// killAfter starts bin with args (and env added) and sends it SIGKILL
// after delay; it reports whether the kill stopped it.
func killAfter(t *testing.T, env []string, bin string, args []string, delay time.Duration) bool {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s before the kill: %v", args[0], err)
		}
		return false
	case <-time.After(delay):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("ferry %s did not stop after SIGKILL", args[0])
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// objectDigest hashes the object at key: "sha256:HEX".
func objectDigest(ctx context.Context, st *objstore.Store, key string) (string, error) {
	obj, _, err := st.Open(ctx, key)
	if err != nil {
		return "", err
	}
	defer obj.Close()
	h := sha256.New()
	if _, err := io.Copy(h, obj); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// hashTree hashes every object under [prefix/]v2/ whose key names a digest
// (a wrong one fails the test) and returns the tags: "name:tag" → the
// digest of the manifest the tag object holds.
func (s *s3Tree) hashTree(t *testing.T, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	tags := map[string]string{}
	base := "v2/"
	if prefix != "" {
		base = prefix + "/v2/"
	}
	err := s.st.List(ctx, base, func(info objstore.Info) error {
		got, err := objectDigest(ctx, s.st, info.Key)
		if err != nil {
			return err
		}
		rest := strings.TrimPrefix(info.Key, base)
		if i := strings.LastIndex(rest, "/sha256:"); i >= 0 {
			if got != rest[i+1:] {
				t.Errorf("%s holds %s", info.Key, got)
			}
		} else if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
			tags[rest[:i]+":"+rest[i+len("/manifests/"):]] = got
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tags
}
