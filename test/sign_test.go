package test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestSignedBundle: keygen, export --sign-key, ferry verify --trust-key and
// openssl both accept the bundle; a byte flipped in ferry.json (still valid
// JSON) makes both refuse it; a flipped blob byte fails ferry verify; import
// with a wrong key or of an unsigned bundle pushes nothing.
func TestSignedBundle(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl not found: install it with `apt-get install -y openssl` (the standard-tool check of a signature needs it)")
	}
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "app/data", Tag: "2.0.0", Kind: harness.DockerImage, LargeLayer: 2 << 20},
	}})
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/web\n      - from: app/data\n")

	// keygen: PKCS#8 private key 0600, PKIX public key, no overwrite.
	key := filepath.Join(dir, "ferry.key")
	if stdout, stderr, code := harness.Run(t, bin, "keygen", "-o", key); code != 0 || !strings.Contains(stdout, "key id sha256:") {
		t.Fatalf("keygen: exit %d %s %s", code, stdout, stderr)
	}
	pub := key + ".pub"
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", st.Mode(), err)
	}
	privBefore, _ := os.ReadFile(key)
	if !bytes.HasPrefix(privBefore, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatalf("private key is not PKCS#8 PEM:\n%s", privBefore)
	}
	if _, stderr, code := harness.Run(t, bin, "keygen", "-o", key); code != 2 || !strings.Contains(stderr, "--force") {
		t.Fatalf("keygen over an existing key: exit %d %s", code, stderr)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(after, privBefore) {
		t.Fatal("keygen without --force changed the key")
	}
	other := filepath.Join(dir, "other.key")
	if _, stderr, code := harness.Run(t, bin, "keygen", "-o", other); code != 0 {
		t.Fatal(stderr)
	}
	// openssl reads ferry's key files (and the reverse is shown by the
	// signature checks below).
	runOK(t, dir, openssl, "pkey", "-in", key, "-noout")
	runOK(t, dir, openssl, "pkey", "-pubin", "-in", pub, "-noout")

	// export --sign-key
	out := filepath.Join(dir, "b.tar")
	stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", out, "--sign-key", key)
	if code != 0 || !strings.Contains(stdout, "signed:") {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	names := tarNames(t, out)
	if len(names) < 4 || strings.Join(names[:4], " ") != "oci-layout index.json ferry.json ferry.sig" {
		t.Fatalf("entries %v: want oci-layout index.json ferry.json ferry.sig first", names)
	}
	if stdout, _, code := harness.Run(t, bin, "inspect", "--json", out); code != 0 || !strings.Contains(stdout, `"signed": true`) {
		t.Errorf("inspect --json of a signed bundle: exit %d\n%s", code, stdout)
	}

	// ferry verify --trust-key: OK; any of several keys may match.
	stdout, stderr, code = harness.Run(t, bin, "verify", out, "--trust-key", other+".pub", "--trust-key", pub)
	if code != 0 || !strings.Contains(stdout, "signed by "+pub) {
		t.Fatalf("verify --trust-key: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// Only the other key: refused, naming the bundle and the key file.
	_, stderr, code = harness.Run(t, bin, "verify", out, "--trust-key", other+".pub")
	if code != 1 || !strings.Contains(stderr, out) || !strings.Contains(stderr, other+".pub") || !strings.Contains(stderr, "does not verify") {
		t.Fatalf("verify with the wrong key: exit %d\n%s", code, stderr)
	}

	// The standard tool, exactly as docs/signing.md says.
	x := extractDir(t)
	runOK(t, x, "tar", "-xf", out, "ferry.json", "ferry.sig")
	if o := runOK(t, x, openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", "ferry.json", "-sigfile", "ferry.sig"); !strings.Contains(o, "Signature Verified Successfully") {
		t.Fatalf("openssl: %s", o)
	}
	// The sidecar holds the same signature.
	runOK(t, x, "sh", "-c", "base64 -d "+out+".sig > sidecar.sig")
	runOK(t, x, openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", "ferry.json", "-sigfile", "sidecar.sig")
	if _, code := run(t, x, openssl, "pkeyutl", "-verify", "-pubin", "-inkey", other+".pub", "-rawin", "-in", "ferry.json", "-sigfile", "ferry.sig"); code == 0 {
		t.Fatal("openssl accepted the signature with another key")
	}
	// With standard tools, the blobs against the signed ferry.json.
	runOK(t, x, "tar", "-xf", out, "blobs")
	runOK(t, x, "sh", "-c", `jq -r '.blobs[] | (.digest | ltrimstr("sha256:")) + "  blobs/sha256/" + (.digest | ltrimstr("sha256:"))' ferry.json | sha256sum -c --quiet`)

	// Volumes: the signature is checked on the concatenation.
	vout := filepath.Join(dir, "v.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", vout, "--split", "1MiB", "--sign-key", key); code != 0 {
		t.Fatalf("split export: %s %s", stdout, stderr)
	}
	if _, err := os.Stat(vout + ".001"); err != nil {
		t.Fatalf("no volumes: %v", err)
	}
	xv := extractDir(t)
	runOK(t, xv, "sh", "-c", "cat "+vout+".[0-9][0-9][0-9] | tar -x ferry.json ferry.sig")
	runOK(t, xv, openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", "ferry.json", "-sigfile", "ferry.sig")
	if stdout, stderr, code := harness.Run(t, bin, "verify", vout, "--trust-key", pub); code != 0 {
		t.Fatalf("verify volumes: %s %s", stdout, stderr)
	}

	// Import with a wrong key, or of an unsigned bundle: nothing pushed.
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	_, stderr, code = harness.Run(t, bin, "import", out, "--to", dst.Host, "--trust-key", other+".pub")
	if code != 1 || !strings.Contains(stderr, other+".pub") || !strings.Contains(stderr, out) {
		t.Fatalf("import with the wrong key: exit %d\n%s", code, stderr)
	}
	unsigned := filepath.Join(dir, "unsigned.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", unsigned); code != 0 {
		t.Fatalf("unsigned export: %s %s", stdout, stderr)
	}
	if _, err := os.Stat(unsigned + ".sig"); !os.IsNotExist(err) {
		t.Fatalf("unsigned export wrote a .sig: %v", err)
	}
	if stdout, _, code := harness.Run(t, bin, "inspect", unsigned); code != 0 || !strings.Contains(stdout, "not signed") {
		t.Errorf("inspect of an unsigned bundle: exit %d\n%s", code, stdout)
	}
	_, stderr, code = harness.Run(t, bin, "import", unsigned, "--to", dst.Host, "--trust-key", pub)
	if code != 1 || !strings.Contains(stderr, "unsigned") || !strings.Contains(stderr, unsigned) {
		t.Fatalf("import of an unsigned bundle: exit %d\n%s", code, stderr)
	}
	if repos := catalog(t, dst); len(repos) != 0 {
		t.Fatalf("a refused import pushed %v", repos)
	}
	// The right key imports.
	if stdout, stderr, code := harness.Run(t, bin, "import", out, "--to", dst.Host, "--trust-key", pub); code != 0 {
		t.Fatalf("import with the right key: %s %s", stdout, stderr)
	}
	if repos := catalog(t, dst); strings.Join(repos, ",") != "app/data,app/web" {
		t.Fatalf("imported %v", repos)
	}

	// Flip one byte of the bundle id inside ferry.json, in place: still
	// valid JSON, still consistent with index.json and the blobs.
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	off, size := entryOffset(t, data, "ferry.json")
	rec := data[off : off+size]
	i := bytes.Index(rec, []byte(`"id": "`))
	if i < 0 {
		t.Fatalf("no id in ferry.json:\n%s", rec)
	}
	tampered := append([]byte(nil), data...)
	tampered[off+int64(i+len(`"id": "`))] ^= 1
	if !json.Valid(tampered[off : off+size]) {
		t.Fatal("the edit broke the JSON")
	}
	bad := filepath.Join(dir, "tampered.tar")
	if err := os.WriteFile(bad, tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = harness.Run(t, bin, "verify", bad, "--trust-key", pub)
	if code != 1 || !strings.Contains(stderr, "signature does not verify") || !strings.Contains(stderr, bad) || !strings.Contains(stderr, pub) {
		t.Fatalf("verify of a tampered ferry.json: exit %d\n%s", code, stderr)
	}
	xt := extractDir(t)
	runOK(t, xt, "tar", "-xf", bad, "ferry.json", "ferry.sig")
	if o, code := run(t, xt, openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", "ferry.json", "-sigfile", "ferry.sig"); code == 0 {
		t.Fatalf("openssl accepted a tampered ferry.json: %s", o)
	}
	// Without a trusted key the edit is self-consistent: ferry verify
	// cannot see it; the .sha256 sidecar does.
	if stdout, stderr, code := harness.Run(t, bin, "verify", bad); code != 0 {
		t.Fatalf("verify without a key: exit %d %s %s", code, stdout, stderr)
	}

	// Flip one byte of a blob: ferry verify --trust-key fails (the signature
	// still verifies; the blob's digest does not).
	blobbed := append([]byte(nil), data...)
	boff, _ := entryOffset(t, data, lastBlob(t, data))
	blobbed[boff+100] ^= 1
	badBlob := filepath.Join(dir, "badblob.tar")
	if err := os.WriteFile(badBlob, blobbed, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = harness.Run(t, bin, "verify", badBlob, "--trust-key", pub)
	if code != 1 || !strings.Contains(stdout, "digest mismatch") {
		t.Fatalf("verify of a flipped blob: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// entryOffset finds where the named entry's content lies in a tar.
func entryOffset(t *testing.T, data []byte, name string) (int64, int64) {
	t.Helper()
	r := bytes.NewReader(data)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %s not found: %v", name, err)
		}
		if h.Name == name {
			return int64(len(data)) - int64(r.Len()), h.Size
		}
	}
}

func lastBlob(t *testing.T, data []byte) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var last string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return last
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(h.Name, "blobs/") && h.Size > 200 {
			last = h.Name
		}
	}
}

func tarNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func extractDir(t *testing.T) string {
	t.Helper()
	return t.TempDir()
}

func run(t *testing.T, dir, name string, args ...string) (string, int) {
	t.Helper()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Dir: dir}, name, args...)
	return stdout + stderr, code
}

func runOK(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out, code := run(t, dir, name, args...)
	if code != 0 {
		t.Fatalf("%s %v: exit %d\n%s", name, args, code, out)
	}
	return out
}
