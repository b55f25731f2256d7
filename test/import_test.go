package test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/test/harness"
)

// robot is a Harbor-style robot account name: the '$' and '+' must survive
// the trip from the command line to the registry.
const (
	robot    = "robot$proj+ci"
	robotPW  = "R0bot-Secret"
	impAlice = "alice"
	impAPW   = "s3cret"
)

// importSummary is the part of `ferry import --json` the tests read.
type importSummary struct {
	Target string `json:"target"`
	Images []struct {
		Repository string `json:"repository"`
		Digest     string `json:"digest"`
		Status     string `json:"status"`
		Tags       []struct {
			Tag      string `json:"tag"`
			Status   string `json:"status"`
			Previous string `json:"previous"`
		} `json:"tags"`
	} `json:"images"`
	Pushed        int   `json:"pushed"`
	UpToDate      int   `json:"upToDate"`
	Failed        int   `json:"failed"`
	BlobsUploaded int   `json:"blobsUploaded"`
	BlobsMounted  int   `json:"blobsMounted"`
	BytesUploaded int64 `json:"bytesUploaded"`
	BytesSkipped  int64 `json:"bytesSkipped"`
	BytesToUpload int64 `json:"bytesToUpload"`
	Failures      []struct {
		Image string `json:"image"`
		Blob  string `json:"blob"`
		Error string `json:"error"`
	} `json:"failures"`
}

func impEnv(t *testing.T, extra ...string) []string {
	home := t.TempDir()
	return append([]string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"REGISTRY_AUTH_FILE=" + filepath.Join(home, "auth.json")}, extra...)
}

// impExport seeds a TLS+htpasswd source registry with harness.SmallSet and
// exports OCI and Docker images, an OCI index and a Docker manifest list
// into a bundle. It returns the bundle path, the source and its fixtures.
func impExport(t *testing.T, bin string) (string, *harness.Registry, []harness.Fixture) {
	t.Helper()
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{impAlice: impAPW}})
	fixtures := harness.Seed(t, src, impAlice, harness.SmallSet())
	dir := t.TempDir()
	m := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(m, []byte(`
tasks:
  - name: cloudforet
    source:
      registry: `+src.Host+`
    mappings:
      - from: spaceone/console
        to: spaceone/console
        tags: ['1.11.0', '1.11.5']
      - from: spaceone/plugin-a
        to: spaceone/plugin-a
        tags: ['1.4.1']
      - from: library/redis
        to: library/redis
        tags: ['7.2.4', 'latest']
      - from: library/alpine
        to: library/alpine
        tags: ['3.19']
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle.tar")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice, "-q")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	return out, src, fixtures
}

// impRefs are the repo:tag pairs the export above selects.
var impRefs = []string{
	"spaceone/console:1.11.0", "spaceone/console:1.11.5", "spaceone/plugin-a:1.4.1",
	"library/redis:7.2.4", "library/redis:latest", "library/alpine:3.19",
}

func runImport(t *testing.T, bin string, stdin string, args ...string) (*importSummary, string, int) {
	t.Helper()
	o := harness.RunOptions{Env: impEnv(t)}
	if stdin != "" {
		o.Stdin = []byte(stdin)
	}
	stdout, stderr, code := harness.RunWith(t, o, bin, append([]string{"import", "--json", "-q"}, args...)...)
	var sum importSummary
	if strings.TrimSpace(stdout) != "" {
		if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
			t.Fatalf("import --json: %v\n%s\nstderr:\n%s", err, stdout, stderr)
		}
	}
	return &sum, stderr, code
}

// checkPulledBack asserts that every ref pulls from dst under prefix with
// exactly the source digest, and indexes keep their children.
func checkPulledBack(t *testing.T, src, dst *harness.Registry, user, prefix string, fixtures []harness.Fixture, refs []string) {
	t.Helper()
	byRef := map[string]harness.Fixture{}
	for _, f := range fixtures {
		byRef[f.Ref()] = f
	}
	for _, ref := range refs {
		f := byRef[ref]
		desc, err := remote.Get(dst.Ref(t, prefix+"/"+ref), dst.RemoteOptions(user)...)
		if err != nil {
			t.Errorf("pulling %s/%s back: %v", prefix, ref, err)
			continue
		}
		if desc.Digest.String() != f.Digest {
			t.Errorf("%s: digest %s in the target, %s at the source", ref, desc.Digest, f.Digest)
		}
		if oci.KindOf(desc.MediaType) != oci.KindIndex {
			continue
		}
		want, err := remote.Get(src.Ref(t, ref), src.RemoteOptions(impAlice)...)
		if err != nil {
			t.Fatal(err)
		}
		gotIdx, err := oci.Index(desc.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		wantIdx, _ := oci.Index(want.Manifest)
		if len(gotIdx.Manifests) != len(wantIdx.Manifests) || len(gotIdx.Manifests) < 2 {
			t.Errorf("%s: %d children, source has %d", ref, len(gotIdx.Manifests), len(wantIdx.Manifests))
			continue
		}
		for i, c := range gotIdx.Manifests {
			if c.Digest != wantIdx.Manifests[i].Digest {
				t.Errorf("%s: child %d is %s, source has %s", ref, i, c.Digest, wantIdx.Manifests[i].Digest)
			}
			// The child itself is in the target, pullable by digest.
			if _, err := remote.Head(dst.Ref(t, prefix+"/"+strings.Split(ref, ":")[0]+"@"+c.Digest.String()), dst.RemoteOptions(user)...); err != nil {
				t.Errorf("%s: child %s missing in the target: %v", ref, c.Digest, err)
			}
		}
	}
}

// TestImportEndToEnd exports from one real registry and imports into a
// second one (TLS + htpasswd) as a Harbor-style robot user given on stdin.
// Every tag comes back with its source digest, indexes keep their
// children, shared layers are mounted, and a second import uploads nothing.
func TestImportEndToEnd(t *testing.T) {
	bin := harness.BuildFerry(t)
	bundlePath, src, fixtures := impExport(t, bin)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	front, counter := harness.CountingProxy(t, dst)

	args := []string{bundlePath, "--to", front.Host + "/mirror", "--ca-cert", dst.CAFile,
		"--username", robot, "--password-stdin"}
	sum, stderr, code := runImport(t, bin, robotPW+"\n", args...)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s\n%+v", code, stderr, sum)
	}
	if sum.Pushed != 5 || sum.Failed != 0 || sum.UpToDate != 0 {
		t.Errorf("first import: pushed %d, failed %d, up to date %d; want 5/0/0", sum.Pushed, sum.Failed, sum.UpToDate)
	}
	checkPulledBack(t, src, dst, robot, "mirror", fixtures, impRefs)
	t.Logf("first import: %d uploaded (%d bytes), %d mounted; requests: %s", sum.BlobsUploaded, sum.BytesUploaded, sum.BlobsMounted, counter)

	// The "os" base layer is in every repository: uploaded once, mounted
	// into the others.
	var mounts int
	for _, r := range counter.Requests() {
		if r.Method == http.MethodPost && strings.Contains(r.Path, "mount=") && r.Status == http.StatusCreated {
			mounts++
		}
	}
	if mounts == 0 || mounts != sum.BlobsMounted {
		t.Errorf("%d mounts answered 201, summary says %d mounted", mounts, sum.BlobsMounted)
	}
	if got := counter.Count(http.MethodPut, harness.KindUpload); got != sum.BlobsUploaded {
		t.Errorf("%d blob PUTs, summary says %d uploaded", got, sum.BlobsUploaded)
	}

	// Second import: nothing moves.
	counter.Reset()
	sum, stderr, code = runImport(t, bin, robotPW+"\n", args...)
	if code != 0 {
		t.Fatalf("second import: exit %d\n%s", code, stderr)
	}
	if sum.BytesUploaded != 0 || sum.BlobsUploaded != 0 || sum.UpToDate != 5 || sum.Pushed != 0 {
		t.Errorf("second import: uploaded %d bytes in %d blobs, %d up to date, %d pushed", sum.BytesUploaded, sum.BlobsUploaded, sum.UpToDate, sum.Pushed)
	}
	if sum.BytesSkipped == 0 {
		t.Error("second import reports no skipped bytes")
	}
	for _, k := range []string{"POST upload", "PATCH upload", "PUT upload", "PUT manifest"} {
		if n := counter.Snapshot()[k]; n != 0 {
			t.Errorf("second import sent %d × %s (%s)", n, k, counter)
		}
	}

	// A dry run now says every image is up to date.
	sum, stderr, code = runImport(t, bin, robotPW+"\n", append(args, "--dry-run")...)
	if code != 0 || sum.UpToDate != 5 || sum.BytesToUpload != 0 {
		t.Errorf("dry run: exit %d, %d up to date, %d bytes to upload\n%s", code, sum.UpToDate, sum.BytesToUpload, stderr)
	}
}

// TestImportWrongPassword: a wrong password fails before any upload, names
// the registry, and the target stays empty.
func TestImportWrongPassword(t *testing.T) {
	bin := harness.BuildFerry(t)
	bundlePath, _, _ := impExport(t, bin)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	front, counter := harness.CountingProxy(t, dst)
	sum, stderr, code := runImport(t, bin, "wrong\n", bundlePath, "--to", front.Host+"/mirror",
		"--ca-cert", dst.CAFile, "--username", robot, "--password-stdin")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	if !strings.Contains(stderr, front.Host) || !strings.Contains(stderr, "authentication failed") || !strings.Contains(stderr, robot) {
		t.Errorf("stderr does not name registry, user and the failure:\n%s", stderr)
	}
	if strings.Contains(stderr, "wrong") {
		t.Errorf("the password leaked into the output:\n%s", stderr)
	}
	if sum.Pushed != 0 {
		t.Errorf("summary claims pushes: %+v", sum)
	}
	for _, r := range counter.Requests() {
		if harness.Kind(r.Path) == harness.KindUpload || r.Method == http.MethodPut {
			t.Errorf("request after a failed login: %s %s", r.Method, r.Path)
		}
	}
	// Nothing in the target.
	tr := dst.Transport()
	req, _ := http.NewRequest(http.MethodGet, dst.URL+"/v2/_catalog", nil)
	req.SetBasicAuth(robot, robotPW)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(body, &cat); err != nil || len(cat.Repositories) != 0 {
		t.Errorf("target catalog after a failed import: %s (%v)", body, err)
	}
}

// TestImportCorruptLayer: one flipped byte in a layer used by one image
// fails that image (exit 1, blob named, no tag) while the rest import.
func TestImportCorruptLayer(t *testing.T) {
	bin := harness.BuildFerry(t)
	bundlePath, src, fixtures := impExport(t, bin)

	// Find a layer only spaceone/console:1.11.0 uses; flip a byte in it.
	r, err := bundle.Open(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	users := map[v1.Hash][]string{}
	var victim bundle.Image
	for _, im := range r.Record().Images {
		h, _ := v1.NewHash(im.Digest)
		tree, err := r.Tree(h)
		if err != nil {
			t.Fatal(err)
		}
		_ = tree.Walk(func(n *bundle.Node) error {
			if n.Data == nil {
				users[n.Digest] = append(users[n.Digest], im.Target+":"+strings.Join(im.Tags, ","))
			}
			return nil
		})
		if im.Target == "spaceone/console" && im.Tags[0] == "1.11.0" {
			victim = im
		}
	}
	var bad v1.Hash
	var badOff, badLen int64
	h, _ := v1.NewHash(victim.Digest)
	tree, _ := r.Tree(h)
	for _, layer := range tree.Children[1:] { // [0] is the config
		if len(users[layer.Digest]) == 1 {
			bad = layer.Digest
			sr, err := r.Section(bad)
			if err != nil {
				t.Fatal(err)
			}
			_, badOff, badLen = sr.Outer()
			break
		}
	}
	_ = r.Close()
	if bad.Hex == "" {
		t.Fatal("no layer unique to spaceone/console:1.11.0")
	}
	f, err := os.OpenFile(bundlePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, badOff+badLen/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, badOff+badLen/2); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	sum, stderr, code := runImport(t, bin, robotPW+"\n", bundlePath, "--to", dst.Host+"/mirror",
		"--ca-cert", dst.CAFile, "--username", robot, "--password-stdin")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	if !strings.Contains(stderr, bad.String()) || !strings.Contains(stderr, "spaceone/console:1.11.0") {
		t.Errorf("stderr does not name the image and the blob %s:\n%s", bad, stderr)
	}
	if sum.Failed != 1 || sum.Pushed != 4 || len(sum.Failures) != 1 || sum.Failures[0].Blob != bad.String() {
		t.Errorf("summary: failed %d pushed %d failures %+v", sum.Failed, sum.Pushed, sum.Failures)
	}
	// No tag and no manifest for the victim.
	if _, err := remote.Head(dst.Ref(t, "mirror/spaceone/console:1.11.0"), dst.RemoteOptions(robot)...); err == nil {
		t.Error("the image with the corrupt layer got its tag")
	}
	if _, err := remote.Head(dst.Ref(t, "mirror/spaceone/console@"+victim.Digest), dst.RemoteOptions(robot)...); err == nil {
		t.Error("the image with the corrupt layer got its manifest")
	}
	// The layer is hashed as it streams: its upload is cut, and the
	// registry holds nothing under its digest.
	req, _ := http.NewRequest(http.MethodHead, dst.URL+"/v2/mirror/spaceone/console/blobs/"+bad.String(), nil)
	req.SetBasicAuth(robot, robotPW)
	resp, err := (&http.Client{Transport: dst.Transport()}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of the corrupt layer in the target: %s, want 404", resp.Status)
	}
	var others []string
	for _, ref := range impRefs {
		if ref != "spaceone/console:1.11.0" {
			others = append(others, ref)
		}
	}
	checkPulledBack(t, src, dst, robot, "mirror", fixtures, others)
}

// TestImportTokenAuth imports through a registry in Bearer-token mode,
// the flow Harbor uses, as the robot user.
func TestImportTokenAuth(t *testing.T) {
	bin := harness.BuildFerry(t)
	bundlePath, src, fixtures := impExport(t, bin)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, Users: map[string]string{robot: robotPW}})
	sum, stderr, code := runImport(t, bin, robotPW+"\n", bundlePath, "--to", dst.Host,
		"--ca-cert", dst.CAFile, "--username", robot, "--password-stdin")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	if sum.Pushed != 5 || sum.BlobsMounted == 0 {
		t.Errorf("pushed %d, mounted %d", sum.Pushed, sum.BlobsMounted)
	}
	var asRobot int
	for _, tr := range dst.TokenRequests() {
		if tr.User == robot && tr.Status == http.StatusOK {
			asRobot++
		}
	}
	if asRobot == 0 {
		t.Errorf("no token issued to %s: %+v", robot, dst.TokenRequests())
	}
	// Pull back with the token flow too.
	opts := dst.RemoteOptionsAuth(&authn.Basic{Username: robot, Password: robotPW})
	for _, ref := range impRefs {
		desc, err := remote.Head(dst.Ref(t, ref), opts...)
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			continue
		}
		for _, f := range fixtures {
			if f.Ref() == ref && f.Digest != desc.Digest.String() {
				t.Errorf("%s: %s, source %s", ref, desc.Digest, f.Digest)
			}
		}
	}
	_ = src

	// A wrong password is refused by the token service before any upload.
	sum, stderr, code = runImport(t, bin, "nope\n", bundlePath, "--to", dst.Host+"/other",
		"--ca-cert", dst.CAFile, "--username", robot, "--password-stdin")
	if code != 1 || !strings.Contains(stderr, dst.Host) || sum.Pushed != 0 {
		t.Errorf("wrong password through token auth: exit %d\n%s", code, stderr)
	}
}

// TestImportUsage: bad invocations exit 2.
func TestImportUsage(t *testing.T) {
	bin := harness.BuildFerry(t)
	for _, args := range [][]string{
		{"import", "b.tar"},                                    // no --to
		{"import", "--to", "127.0.0.1:5000"},                   // no bundle
		{"import", "a.tar", "b.tar", "--to", "127.0.0.1:5000"}, // two bundles
		{"import", "b.tar", "--to", "https://127.0.0.1:5000"},  // scheme
		{"import", "b.tar", "--to", "127.0.0.1:5000", "--public"},
		{"import", "b.tar", "--to", "127.0.0.1:5000", "--bogus"},
	} {
		_, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t)}, bin, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, stderr)
		}
	}
}
