package bundle

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// testKey is a fixed Ed25519 key (seed n repeated), so bundles are
// reproducible.
func testKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

func trusted(name string, k ed25519.PrivateKey) TrustedKey {
	return TrustedKey{Name: name, Key: k.Public().(ed25519.PublicKey)}
}

// writeSigned writes a small bundle signed with key (unsigned when nil).
func writeSigned(t *testing.T, dir string, key ed25519.PrivateKey) (string, *Result) {
	t.Helper()
	out := filepath.Join(dir, "b.tar")
	opts := []WriteOption{WithClock(fixedClock), WithID("signed")}
	if key != nil {
		opts = append(opts, WithSigner(key))
	}
	res, err := Write(context.Background(), out, planFor(t, map[string]v1.Image{"proj/a": testImage(t, "base", "app a")}, nil), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

func TestSignRoundTrip(t *testing.T) {
	dir := t.TempDir()
	key := testKey(1)
	out, res := writeSigned(t, dir, key)

	// The tar: ferry.sig right after ferry.json, 64 bytes, the signature of
	// ferry.json's exact bytes.
	entries := readEntries(t, out)
	i := find(entries, RecordFile)
	if i < 0 || i+1 >= len(entries) || entries[i+1].hdr.Name != SigFile {
		t.Fatalf("entry order %v: want %s right after %s", entryNames(entries), SigFile, RecordFile)
	}
	rec, sig := entries[i].data, entries[i+1].data
	if len(sig) != 64 || !ed25519.Verify(key.Public().(ed25519.PublicKey), rec, sig) {
		t.Fatalf("ferry.sig (%d bytes) does not verify ferry.json's bytes", len(sig))
	}
	if !bytes.Equal(res.Signature, sig) || res.SigSidecar != out+".sig" {
		t.Errorf("result signature %x sidecar %q", res.Signature, res.SigSidecar)
	}
	// The sidecar: one line of base64 of the same 64 bytes.
	side, err := os.ReadFile(out + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(sig) + "\n"; string(side) != want {
		t.Errorf("sidecar %q, want %q", side, want)
	}

	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Signed() || !bytes.Equal(r.RecordBytes(), rec) || !bytes.Equal(r.Signature(), sig) {
		t.Fatal("reader does not expose the signature and the signed bytes")
	}
	got, err := r.CheckSignature([]TrustedKey{trusted("other.pub", testKey(2)), trusted("good.pub", key)})
	if err != nil || got.Name != "good.pub" {
		t.Fatalf("CheckSignature = %v, %v; want good.pub", got.Name, err)
	}
	if got.ID() == "" || got.ID() == trusted("other.pub", testKey(2)).ID() {
		t.Errorf("key id %q", got.ID())
	}
	if rep, err := Verify(context.Background(), r, 2, nil); err != nil || !rep.OK() {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}

	// The same bundle is reproducible: Ed25519 signatures are deterministic.
	dir2 := t.TempDir()
	out2, _ := writeSigned(t, dir2, key)
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two signed writes of the same plan differ")
	}
}

func TestSignWrongKeyAndUnsigned(t *testing.T) {
	dir := t.TempDir()
	out, _ := writeSigned(t, dir, testKey(1))
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.CheckSignature([]TrustedKey{trusted("/keys/wrong.pub", testKey(2))})
	r.Close()
	if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), out) || !strings.Contains(err.Error(), "/keys/wrong.pub") {
		t.Fatalf("wrong key: %v (want ErrBadSignature naming the bundle and the key file)", err)
	}

	// Rewriting the same path unsigned leaves no stale signature sidecar.
	out, res := writeSigned(t, dir, nil)
	if res.Signature != nil || res.SigSidecar != "" {
		t.Errorf("unsigned result has a signature")
	}
	if _, err := os.Stat(out + ".sig"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale %s.sig left beside an unsigned bundle: %v", out, err)
	}
	if i := find(readEntries(t, out), SigFile); i >= 0 {
		t.Errorf("unsigned bundle has %s", SigFile)
	}
	r, err = Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Signed() {
		t.Error("unsigned bundle reports Signed")
	}
	_, err = r.CheckSignature([]TrustedKey{trusted("trust.pub", testKey(1))})
	if !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), out) || !strings.Contains(err.Error(), "trust.pub") {
		t.Fatalf("unsigned: %v (want ErrUnsigned naming the bundle and the key file)", err)
	}
	if _, err := r.CheckSignature(nil); err == nil {
		t.Error("CheckSignature with no key succeeded")
	}
}

// TestSignTamperedRecord edits ferry.json so that it stays valid JSON and
// consistent with the rest of the bundle: Open and Verify accept it (only
// the .sha256 sidecar would notice), the signature does not.
func TestSignTamperedRecord(t *testing.T) {
	dir := t.TempDir()
	key := testKey(1)
	out, _ := writeSigned(t, dir, key)
	entries := readEntries(t, out)
	i := find(entries, RecordFile)
	before := entries[i].data
	entries[i].data = bytes.Replace(before, []byte("src.example"), []byte("src.exbmple"), 1)
	if bytes.Equal(before, entries[i].data) {
		t.Fatal("nothing replaced")
	}
	path := filepath.Join(dir, "tampered.tar")
	if err := os.WriteFile(path, buildTar(t, entries), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatalf("Open refused a self-consistent edit (it cannot know): %v", err)
	}
	defer r.Close()
	if rep, err := Verify(context.Background(), r, 1, nil); err != nil || !rep.OK() {
		t.Fatalf("Verify: %v", err)
	}
	if _, err := r.CheckSignature([]TrustedKey{trusted("k.pub", key)}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered ferry.json: CheckSignature = %v, want ErrBadSignature", err)
	}
}

func TestSignBadSignatureEntry(t *testing.T) {
	dir := t.TempDir()
	out, _ := writeSigned(t, dir, testKey(1))
	entries := readEntries(t, out)
	i := find(entries, SigFile)
	entries[i].data = entries[i].data[:63]
	path := filepath.Join(dir, "short.tar")
	if err := os.WriteFile(path, buildTar(t, entries), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := Open(path); err == nil {
		r.Close()
		t.Fatal("Open accepted a 63-byte ferry.sig")
	} else if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "ferry.sig is 63 bytes") {
		t.Fatalf("error %v", err)
	}
}

func TestSignRefusesNonEd25519(t *testing.T) {
	dir := t.TempDir()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b.tar")
	_, err = Write(context.Background(), out, planFor(t, map[string]v1.Image{"proj/a": testImage(t, "x")}, nil), WithSigner(ec))
	if err == nil || !strings.Contains(err.Error(), "only Ed25519") {
		t.Fatalf("ECDSA signer: %v", err)
	}
	if names := dirEntryNames(t, dir); len(names) != 0 {
		t.Errorf("files left after a refused signer: %v", names)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key := testKey(3)
	privPEM, err := MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(privPEM, []byte("-----BEGIN PRIVATE KEY-----")) || !bytes.HasPrefix(pubPEM, []byte("-----BEGIN PUBLIC KEY-----")) {
		t.Fatalf("PEM types:\n%s\n%s", privPEM, pubPEM)
	}
	priv := writeFile(t, dir, "k", privPEM)
	pub := writeFile(t, dir, "k.pub", pubPEM)
	gotPriv, err := LoadPrivateKey(priv)
	if err != nil || !gotPriv.Equal(key) {
		t.Fatalf("LoadPrivateKey: %v", err)
	}
	gotPub, err := LoadPublicKey(pub)
	if err != nil || gotPub.Name != pub || !gotPub.Key.Equal(key.Public()) {
		t.Fatalf("LoadPublicKey: %+v %v", gotPub, err)
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(ec.Public())
	bad := []struct {
		name, file string
		data       []byte
		load       func(string) error
		want       string
	}{
		{"public key given as private", "a", pubPEM, loadPriv, `PEM block is "PUBLIC KEY"`},
		{"private key given as public", "b", privPEM, loadPub, `PEM block is "PRIVATE KEY"`},
		{"not PEM", "c", []byte("hello"), loadPub, "no PEM block"},
		{"ECDSA private", "d", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), loadPriv, "Ed25519 keys only"},
		{"ECDSA public", "e", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPubDER}), loadPub, "Ed25519 keys only"},
		{"trailing data", "f", append(append([]byte(nil), pubPEM...), "junk"...), loadPub, "trailing data"},
		{"garbage DER", "g", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}), loadPub, "not a PKIX public key"},
	}
	for _, c := range bad {
		p := writeFile(t, dir, c.file, c.data)
		err := c.load(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v (want %q and the file name)", c.name, err, c.want)
		}
	}
	if err := loadPub(filepath.Join(dir, "missing.pub")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func loadPriv(p string) error { _, err := LoadPrivateKey(p); return err }
func loadPub(p string) error  { _, err := LoadPublicKey(p); return err }

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readEntries(t *testing.T, path string) []tarEntry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tarEntries(t, data)
}

func entryNames(entries []tarEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.hdr.Name
	}
	return out
}

func dirEntryNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}
