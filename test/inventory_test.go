package test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/test/harness"
)

// inventorySummary is the part of `ferry inventory --json` the tests read.
type inventorySummary struct {
	Output       string `json:"output"`
	ID           string `json:"id"`
	Target       string `json:"target"`
	Repositories int    `json:"repositories"`
	Tags         int    `json:"tags"`
	Manifests    int    `json:"manifests"`
	Blobs        int    `json:"blobs"`
	Signed       bool   `json:"signed"`
}

// TestInventoryHandshake: after a new upstream tag, an inventory of the
// internal registry (manifests only: one tag list per repository, one
// HEAD per tag, one GET per distinct manifest, no blob) lets export carry
// only the new image's new blobs; importing that bundle makes every tag
// exact. The same bundle is refused, before any push and naming the blob,
// when the registry lost a blob the inventory claimed, and refused as bad
// input when imported into another registry.
func TestInventoryHandshake(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/data", Tag: "1.0.0", Kind: harness.OCIIndex, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	mf := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/web\n      - from: app/data\n")
	full := filepath.Join(dir, "full.tar")
	if _, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mf, "-o", full); code != 0 {
		t.Fatalf("full export: %s", stderr)
	}
	ca := harness.NewCA(t)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, CA: ca, Users: map[string]string{robot: robotPW}})
	front, counter := harness.CountingProxy(t, dst)
	to := front.Host + "/mirror"
	auth := []string{"--ca-cert", front.CAFile, "--username", robot, "--password-stdin"}
	if _, stderr, code := runImport(t, bin, robotPW+"\n", append([]string{full, "--to", to}, auth...)...); code != 0 {
		t.Fatalf("full import: %s", stderr)
	}

	// Upstream moves on: a new tag sharing the base layers.
	added := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.1.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
	}})

	// The inventory: manifests only, and what they cost.
	keyFile := filepath.Join(dir, "ferry.key")
	if _, stderr, code := harness.Run(t, bin, "keygen", "-o", keyFile); code != 0 {
		t.Fatalf("keygen: %s", stderr)
	}
	have := filepath.Join(dir, "have.json")
	counter.Reset()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t), Stdin: []byte(robotPW + "\n")}, bin,
		append([]string{"inventory", "-f", mf, "--to", to, "-o", have, "--json", "--sign-key", keyFile}, auth...)...)
	if code != 0 {
		t.Fatalf("inventory: exit %d\n%s", code, stderr)
	}
	var isum inventorySummary
	if err := json.Unmarshal([]byte(stdout), &isum); err != nil {
		t.Fatalf("inventory --json: %v\n%s", err, stdout)
	}
	t.Logf("inventory of 2 repositories: %s", counter)
	// app/web:1.0.0 (1 manifest) and app/data:1.0.0 (an index of 2): 2
	// tags, 4 distinct manifests.
	if isum.Repositories != 2 || isum.Tags != 2 || isum.Manifests != 4 || !isum.Signed || isum.Target != to {
		t.Errorf("inventory summary: %+v", isum)
	}
	for _, c := range []struct {
		method, kind string
		want         int
	}{{"GET", harness.KindTags, 2}, {"HEAD", harness.KindManifest, 2}, {"GET", harness.KindManifest, 4}, {"", harness.KindBlob, 0}, {"", harness.KindUpload, 0}} {
		if got := counter.Count(c.method, c.kind); got != c.want {
			t.Errorf("inventory: %d %s %s requests, want %d", got, c.method, c.kind, c.want)
		}
	}
	data, err := os.ReadFile(have)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), robotPW) || strings.Contains(string(data), "password") {
		t.Fatalf("the inventory holds a credential:\n%s", data)
	}

	// export --have carries only the new image's new blobs.
	delta := filepath.Join(dir, "delta.tar")
	if _, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mf, "-o", delta, "--have", have, "--trust-key", keyFile+".pub"); code != 0 {
		t.Fatalf("export --have: %s", stderr)
	}
	rec, err := bundle.ReadRecord(delta)
	if err != nil {
		t.Fatal(err)
	}
	if stdout, _, code := harness.Run(t, bin, "inspect", delta); code != 0 || !strings.Contains(stdout, "cut against inventory "+rec.Have[0].ID) {
		t.Errorf("inspect does not name the inventory the bundle was cut against: exit %d\n%s", code, stdout)
	}
	if len(rec.Images) != 1 || rec.Images[0].Digest != added[0].Digest {
		t.Fatalf("bundle images: %+v", rec.Images)
	}
	if len(rec.Blobs) != 3 || len(rec.BaseBlobs) != 2 {
		t.Fatalf("bundle stores %d blobs (want 3: manifest, config, new layer) and leaves %d to the registry (want 2)", len(rec.Blobs), len(rec.BaseBlobs))
	}
	if len(rec.Have) != 1 || rec.Have[0].ID != isum.ID || rec.Have[0].Target() != to || rec.FormatVersion != 2 {
		t.Fatalf("bundle records inventories %+v (format %d), want %s of %s", rec.Have, rec.FormatVersion, isum.ID, to)
	}

	// Into another registry: refused as bad input, nothing pushed.
	other := harness.StartRegistry(t, harness.RegistryOptions{})
	stdout, stderr, code = harness.Run(t, bin, "import", delta, "--to", other.Host+"/mirror")
	if code != 2 || !strings.Contains(stderr, "cut for another registry") || !strings.Contains(stderr, isum.ID) {
		t.Fatalf("import into another registry: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if repos := catalog(t, other); len(repos) != 0 {
		t.Fatalf("a refused import left repositories: %v", repos)
	}

	// The registry loses a blob the inventory claimed: refused before any
	// push, naming the blob.
	lost := rec.BaseBlobs[0].Digest
	for _, repo := range []string{"mirror/app/web", "mirror/app/data"} {
		deleteBlob(t, dst, repo, lost)
	}
	counter.Reset()
	_, stderr, code = runImport(t, bin, robotPW+"\n", append([]string{delta, "--to", to}, auth...)...)
	if code != 1 || !strings.Contains(stderr, lost) || !strings.Contains(stderr, "nothing was pushed") {
		t.Fatalf("import after a lost blob: exit %d\n%s", code, stderr)
	}
	if n := counter.Count("", harness.KindUpload) + counter.Count("PUT", harness.KindManifest); n != 0 {
		t.Fatalf("a refused import sent %d upload or manifest PUT requests: %s", n, counter)
	}
	if tags := listTagsAuth(t, dst, "mirror/app/web"); strings.Join(tags, ",") != "1.0.0" {
		t.Fatalf("a refused import moved tags: %v", tags)
	}

	// The blob comes back (pushed again from upstream): the import goes
	// through and every tag is exact.
	img, err := remote.Image(src.Ref(t, "app/web:1.0.0"), src.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(lost)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := img.LayerByDigest(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"mirror/app/web", "mirror/app/data"} {
		if err := remote.WriteLayer(dst.Ref(t, repo+":x").Context(), layer, dst.RemoteOptions(robot)...); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, code := runImport(t, bin, robotPW+"\n", append([]string{delta, "--to", to}, auth...)...); code != 0 {
		t.Fatalf("import --have bundle: exit %d\n%s", code, stderr)
	}
	for _, repo := range []string{"app/web", "app/data"} {
		srcTags := listTags(t, src, repo)
		if got := listTagsAuth(t, dst, "mirror/"+repo); strings.Join(got, ",") != strings.Join(srcTags, ",") {
			t.Fatalf("%s: target tags %v, source %v", repo, got, srcTags)
		}
		for _, tag := range srcTags {
			sd, err := remote.Head(src.Ref(t, repo+":"+tag), src.RemoteOptions("")...)
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(dst.Ref(t, "mirror/"+repo+":"+tag), dst.RemoteOptions(robot)...)
			if err != nil {
				t.Fatal(err)
			}
			if err := pullImage(img); err != nil {
				t.Fatalf("pulling %s:%s from the target: %v", repo, tag, err)
			}
			dd, err := remote.Head(dst.Ref(t, "mirror/"+repo+":"+tag), dst.RemoteOptions(robot)...)
			if err != nil {
				t.Fatal(err)
			}
			if dd.Digest != sd.Digest {
				t.Errorf("%s:%s: target %s, source %s", repo, tag, dd.Digest, sd.Digest)
			}
		}
	}
}

// TestInventoryHostileInput: a tampered, unsigned, malformed or foreign
// inventory, or one of another selection, is refused with a clear message
// and exit status 2, and no bundle is written.
func TestInventoryHostileInput(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	dir := t.TempDir()
	mf := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/web\n")
	otherMf := writeFile(t, filepath.Join(dir, "other.yaml"), "tasks:\n  - name: o\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: other/thing\n")
	keyFile := filepath.Join(dir, "ferry.key")
	if _, stderr, code := harness.Run(t, bin, "keygen", "-o", keyFile); code != 0 {
		t.Fatalf("keygen: %s", stderr)
	}
	have := filepath.Join(dir, "have.json")
	if _, stderr, code := harness.Run(t, bin, "inventory", "-f", mf, "--to", dst.Host, "-o", have, "--sign-key", keyFile); code != 0 {
		t.Fatalf("inventory: %s", stderr)
	}
	// openssl checks the signature as docs/inventory.md says.
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl not found: install it with `apt-get install -y openssl` (the standard-tool check of a signature needs it)")
	}
	sig64, err := os.ReadFile(have + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig64)))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "have.sig"), string(sig))
	runOK(t, dir, openssl, "pkeyutl", "-verify", "-pubin", "-inkey", keyFile+".pub", "-rawin", "-in", have, "-sigfile", filepath.Join(dir, "have.sig"))
	otherHave := filepath.Join(dir, "other.json")
	if _, stderr, code := harness.Run(t, bin, "inventory", "-f", otherMf, "--to", dst.Host, "-o", otherHave); code != 0 {
		t.Fatalf("inventory of another selection: %s", stderr)
	}
	good, err := os.ReadFile(have)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Repositories) != 1 || len(inv.Repositories[0].Tags) != 0 {
		t.Fatalf("inventory of an empty registry: %+v", inv.Repositories)
	}
	tampered := filepath.Join(dir, "tampered.json")
	writeFile(t, tampered, strings.Replace(string(good), `"tags": {}`, `"tags": {"1.0.0": "sha256:`+strings.Repeat("a", 64)+`"}`, 1))
	copyFile(t, have+".sig", tampered+".sig")
	fullBundle := filepath.Join(dir, "full.tar")
	if _, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mf, "-o", fullBundle); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	record := filepath.Join(dir, "ferry.json")
	rec, err := bundle.ReadRecord(fullBundle)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := json.Marshal(rec)
	writeFile(t, record, string(rb))
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"tampered, signature checked", []string{"--have", tampered, "--trust-key", keyFile + ".pub"}, "signature does not verify"},
		{"tampered, id checked", []string{"--have", tampered}, "changed after it was taken"},
		{"unsigned", []string{"--have", otherHave, "--trust-key", keyFile + ".pub"}, "is unsigned"},
		{"malformed", []string{"--have", writeFile(t, filepath.Join(dir, "bad.json"), `{"kind": "ferry-inventory", `)}, "not valid inventory JSON"},
		{"a bundle record", []string{"--have", record}, "is it a ferry inventory"},
		{"missing", []string{"--have", filepath.Join(dir, "nope.json")}, "nope.json"},
		{"another selection", []string{"--have", otherHave}, "lists none of the 1 target repositories"},
		{"with --since", []string{"--have", have, "--since", fullBundle}, "choose one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b.tar")
			stdout, stderr, code := harness.Run(t, bin, append([]string{"export", "-q", "-f", mf, "-o", out}, c.args...)...)
			if code != 2 || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, want 2 and %q\n%s\n%s", code, c.want, stdout, stderr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatal("a bundle was written")
			}
		})
	}
	// Bad --to and -o over an input are bad usage too.
	for _, args := range [][]string{
		{"inventory", "-f", mf, "--to", "https://" + dst.Host, "-o", have},
		{"inventory", "-f", mf, "--to", dst.Host, "-o", mf},
		{"inventory", "-f", mf, "-o", have},
	} {
		if _, stderr, code := harness.Run(t, bin, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, stderr)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}

// deleteBlob removes blob d from repository repo of r (its link: HEAD then
// answers 404 there), as an operator's clean-up would.
func deleteBlob(t *testing.T, r *harness.Registry, repo, d string) {
	t.Helper()
	ref := r.Ref(t, repo+":x").Context()
	var a authn.Authenticator = authn.Anonymous
	for u, pw := range r.Users {
		a = &authn.Basic{Username: u, Password: pw}
	}
	tr, err := transport.NewWithContext(context.Background(), ref.Registry, a, r.Transport(), []string{ref.Scope("delete"), ref.Scope("pull")})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodDelete, r.URL+"/v2/"+repo+"/blobs/"+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deleting %s from %s: %s", d, repo, resp.Status)
	}
}

func listTagsAuth(t *testing.T, r *harness.Registry, repo string) []string {
	t.Helper()
	var user string
	for u := range r.Users {
		user = u
	}
	tags, err := remote.List(r.Ref(t, repo+":x").Context(), r.RemoteOptions(user)...)
	if err != nil {
		t.Fatalf("listing %s: %v", repo, err)
	}
	sort.Strings(tags)
	return tags
}
