package test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/ferry-airgap/ferry/test/harness"
)

// rawLayer is a layer pushed as it is: its bytes, media type, and the
// diff_id its config lists.
type rawLayer struct {
	data   []byte
	mt     types.MediaType
	diffID string
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// layerTar is a tar of one file.
func layerTar(t *testing.T, name string, content []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipRaw(t *testing.T, tb []byte) rawLayer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(tb); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return rawLayer{buf.Bytes(), types.OCILayer, sha256Digest(tb)}
}

func zstdRaw(t *testing.T, tb []byte) rawLayer {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return rawLayer{enc.EncodeAll(tb, nil), types.OCILayerZStd, sha256Digest(tb)}
}

// pushRaw pushes an OCI image of the layers, as they are, to reg as
// repoTag, with a config listing each layer's diffID.
func pushRaw(t *testing.T, reg *harness.Registry, repoTag string, layers ...rawLayer) {
	t.Helper()
	ref := reg.Ref(t, repoTag)
	opts := reg.RemoteOptions("")
	var ids []string
	type desc struct {
		MediaType types.MediaType `json:"mediaType"`
		Digest    string          `json:"digest"`
		Size      int64           `json:"size"`
	}
	var ls []desc
	for _, l := range layers {
		if err := remote.WriteLayer(ref.Context(), static.NewLayer(l.data, l.mt), opts...); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.diffID)
		ls = append(ls, desc{l.mt, sha256Digest(l.data), int64(len(l.data))})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	if err := remote.WriteLayer(ref.Context(), static.NewLayer(cfg, types.OCIConfigJSON), opts...); err != nil {
		t.Fatal(err)
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
		"config": desc{types.OCIConfigJSON, sha256Digest(cfg), int64(len(cfg))}, "layers": ls})
	if err := remote.Put(ref, rawManifest{man, types.OCIManifestSchema1}, opts...); err != nil {
		t.Fatal(err)
	}
}

// deepSource seeds a registry with images whose layers are gzip, zstd and
// plain tar, a gzip bomb (64 MiB of zeros in about 64 KiB), and one image
// whose layer is intact but whose config lists another diff_id. It
// returns the registry and a mapping file of them all, and the bad
// image's layer with the diff_ids involved.
func deepSource(t *testing.T) (m string, bad rawLayer, badActual string) {
	t.Helper()
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	pushRaw(t, reg, "deep/gzip:1", gzipRaw(t, layerTar(t, "g", []byte("gzip"))), gzipRaw(t, layerTar(t, "g2", bytes.Repeat([]byte("x"), 100000))))
	pushRaw(t, reg, "deep/zstd:1", zstdRaw(t, layerTar(t, "z", bytes.Repeat([]byte("zstd "), 10000))))
	plain := layerTar(t, "p", []byte("plain"))
	pushRaw(t, reg, "deep/plain:1", rawLayer{plain, types.OCIUncompressedLayer, sha256Digest(plain)})
	pushRaw(t, reg, "deep/bomb:1", gzipRaw(t, layerTar(t, "zeros", make([]byte, 64<<20))))
	badTar := layerTar(t, "b", []byte("bad"))
	bad = gzipRaw(t, badTar)
	bad.diffID = sha256Digest([]byte("another layer"))
	pushRaw(t, reg, "deep/bad:1", gzipRaw(t, layerTar(t, "ok", []byte("fine"))), bad)
	m = filepath.Join(t.TempDir(), "m.yaml")
	var b strings.Builder
	b.WriteString("tasks:\n  - name: deep\n    source:\n      registry: " + reg.Host + "\n    mappings:\n")
	for _, r := range []string{"gzip", "zstd", "plain", "bomb", "bad"} {
		b.WriteString("      - from: deep/" + r + "\n        to: mirror/" + r + "\n        tags: ['1']\n")
	}
	if err := os.WriteFile(m, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return m, bad, sha256Digest(badTar)
}

// TestVerifyDeep: a layer whose diff_id does not match passes verify and
// fails verify --deep, which names the image, the layer, the expected and
// the actual diff_id (exit 1, kind bundle); gzip, zstd and plain layers
// pass; a gzip bomb beyond --deep-max-size is refused with both limits
// in the message.
func TestVerifyDeep(t *testing.T) {
	bin := harness.BuildFerry(t)
	m, bad, actual := deepSource(t)
	out := filepath.Join(t.TempDir(), "bundle.tar")
	env := harness.RunOptions{Env: impEnv(t)}
	if stdout, stderr, code := harness.RunWith(t, env, bin, "export", "-f", m, "-o", out, "--plain-http", "-q"); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if stdout, stderr, code := harness.Run(t, bin, "verify", out); code != 0 {
		t.Fatalf("verify without --deep: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, stderr, code := harness.Run(t, bin, "verify", "--deep", out)
	if code != 1 {
		t.Fatalf("verify --deep: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"mirror/bad:1", sha256Digest(bad.data), bad.diffID, actual, "does not match its diff_id"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("verify --deep does not name %s:\n%s", want, stdout)
		}
	}
	if n := strings.Count(strings.TrimSpace(stdout), "\n") + 1; n != 1 {
		t.Errorf("verify --deep: %d problems, want only the bad layer's:\n%s", n, stdout)
	}

	stdout, _, code = harness.Run(t, bin, "verify", "--deep", "--json", out)
	var rep struct {
		Deep     bool `json:"deep"`
		Layers   int  `json:"layersChecked"`
		Problems []struct {
			Entry   string   `json:"entry"`
			Images  []string `json:"images"`
			Message string   `json:"message"`
		} `json:"problems"`
		Error struct {
			Kind     string `json:"kind"`
			ExitCode int    `json:"exitCode"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 1 {
		t.Fatalf("verify --deep --json: exit %d, %v\n%s", code, err, stdout)
	}
	if rep.Error.Kind != "bundle" || rep.Error.ExitCode != 1 || !rep.Deep || len(rep.Problems) != 1 ||
		rep.Problems[0].Entry != "blobs/sha256/"+strings.TrimPrefix(sha256Digest(bad.data), "sha256:") || rep.Problems[0].Images[0] != "mirror/bad:1" {
		t.Errorf("verify --deep --json: %+v", rep)
	}
	// Every layer was decompressed: gzip (2), zstd, plain, the bomb and
	// both of the bad image's.
	if rep.Layers != 7 {
		t.Errorf("%d layers checked, want 7", rep.Layers)
	}

	stdout, _, code = harness.Run(t, bin, "verify", "--deep", "--deep-max-size", "1MiB", "--deep-max-ratio", "500", out)
	if code != 1 || !strings.Contains(stdout, "mirror/bomb:1") || !strings.Contains(stdout, "decompresses beyond the limits") ||
		!strings.Contains(stdout, "500×") || !strings.Contains(stdout, "1048576 bytes in all") || !strings.Contains(stdout, "--deep-max-size 1.0 MiB") {
		t.Errorf("verify --deep with a 1 MiB cap: exit %d\n%s", code, stdout)
	}
	if _, stderr, code := harness.Run(t, bin, "verify", "--deep-max-ratio", "5", out); code != 2 || !strings.Contains(stderr, "needs --deep") {
		t.Errorf("--deep-max-ratio without --deep: exit %d\n%s", code, stderr)
	}
}

// TestExportDeep: export --deep refuses the source image whose layer does
// not match its diff_id, naming it, and writes nothing; with --keep-going
// the bundle holds every other image and passes verify --deep.
func TestExportDeep(t *testing.T) {
	bin := harness.BuildFerry(t)
	m, bad, actual := deepSource(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "bundle.tar")
	env := harness.RunOptions{Env: impEnv(t)}
	stdout, stderr, code := harness.RunWith(t, env, bin, "export", "-f", m, "-o", out, "--plain-http", "--deep", "-q")
	if code != 1 {
		t.Fatalf("export --deep: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"mirror/bad:1", sha256Digest(bad.data), bad.diffID, actual} {
		if !strings.Contains(stdout+stderr, want) {
			t.Errorf("export --deep does not name %s:\n%s\n%s", want, stdout, stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("export --deep left files: %v", entries)
	}
	stdout, stderr, code = harness.RunWith(t, env, bin, "export", "-f", m, "-o", out, "--plain-http", "--deep", "--keep-going", "-q")
	if code != 1 {
		t.Fatalf("export --deep --keep-going: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = harness.Run(t, bin, "verify", "--deep", out)
	if code != 0 || !strings.Contains(stdout, "OK: 4 images") || !strings.Contains(stdout, "5 layers decompressed") {
		t.Fatalf("verify --deep of the kept images: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// wordText is n bytes of seeded word-salad lines: it compresses about 2×,
// with short matches between many literals.
func wordText(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	var b bytes.Buffer
	for b.Len() < n {
		w := make([]byte, 3+rng.IntN(8))
		for i := range w {
			w[i] = byte('a' + rng.IntN(26))
		}
		b.Write(w)
		b.WriteByte(" \n"[rng.IntN(2)])
	}
	return b.Bytes()[:n]
}

// gnuGzip is tb compressed by GNU gzip, a writer ferry did not write.
func gnuGzip(t *testing.T, tb []byte) rawLayer {
	t.Helper()
	cmd := exec.Command("gzip", "-6", "-c")
	cmd.Stdin = bytes.NewReader(tb)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	return rawLayer{out, types.OCILayer, sha256Digest(tb)}
}

// TestVerifyDeepVolumes: layers of 2 MiB and more, from compress/gzip and
// GNU gzip, decode across 1 MiB volumes in export --deep --split --cache,
// in verify --deep of the volumes, and in a delta (--since) and a bundle
// cut against an inventory (--have) that leave the shared layer out. A layer compress/gzip refuses (a wrong CRC-32 in
// its trailer, its content and diff_id right) is refused by both, naming
// the image and the gzip error.
func TestVerifyDeepVolumes(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	pushRaw(t, reg, "deep/text:1", gzipRaw(t, layerTar(t, "a", wordText(1, 5<<20))), gnuGzip(t, layerTar(t, "b", wordText(2, 4<<20))))
	crc := gzipRaw(t, layerTar(t, "c", wordText(3, 1<<20)))
	crc.data[len(crc.data)-8] ^= 0xff // the CRC-32 of the trailer
	pushRaw(t, reg, "deep/crc:1", crc)
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+reg.Host+"\n    mappings:\n      - from: deep/text\n")
	cache := filepath.Join(dir, "cache")
	env := harness.RunOptions{Env: impEnv(t)}
	base := filepath.Join(dir, "base.tar")
	if stdout, stderr, code := harness.RunWith(t, env, bin, "export", "-f", m, "-o", base, "--plain-http", "--split", "1MiB", "--cache", cache, "--deep", "-q"); code != 0 {
		t.Fatalf("export --deep --split --cache: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if vols, _ := filepath.Glob(base + ".00[3-9]"); len(vols) == 0 {
		t.Fatalf("the layers do not span volumes: %v", vols)
	}
	if stdout, stderr, code := harness.Run(t, bin, "verify", "--deep", base); code != 0 || !strings.Contains(stdout, "2 layers decompressed") {
		t.Fatalf("verify --deep of the volumes: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// What the site holds (the same registry, read as the target), then
	// a new tag: a --since delta and a --have bundle carry its new layer
	// alone, and the deep check decodes that one.
	have := filepath.Join(dir, "have.json")
	if _, stderr, code := harness.RunWith(t, env, bin, "inventory", "-f", m, "--to", reg.Host, "--plain-http", "-o", have); code != 0 {
		t.Fatalf("inventory: exit %d\n%s", code, stderr)
	}
	pushRaw(t, reg, "deep/text:2", gzipRaw(t, layerTar(t, "a", wordText(1, 5<<20))), gnuGzip(t, layerTar(t, "d", wordText(4, 3<<20))))
	for _, extra := range [][]string{{"--since", base}, {"--have", have}} {
		out := filepath.Join(dir, strings.TrimPrefix(extra[0], "--")+".tar")
		args := append([]string{"export", "-f", m, "-o", out, "--plain-http", "--split", "1MiB", "--cache", cache, "--deep", "-q"}, extra...)
		if stdout, stderr, code := harness.RunWith(t, env, bin, args...); code != 0 {
			t.Fatalf("export --deep %v: exit %d\n%s\n%s", extra, code, stdout, stderr)
		}
		if stdout, stderr, code := harness.Run(t, bin, "verify", "--deep", out); code != 0 || !strings.Contains(stdout, "1 layer decompressed") {
			t.Fatalf("verify --deep of the %v bundle: exit %d\n%s\n%s", extra, code, stdout, stderr)
		}
	}

	mc := writeFile(t, filepath.Join(dir, "mc.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+reg.Host+"\n    mappings:\n      - from: deep/crc\n        to: mirror/crc\n")
	stdout, stderr, code := harness.RunWith(t, env, bin, "export", "-f", mc, "-o", filepath.Join(dir, "crc-deep.tar"), "--plain-http", "--deep", "-q")
	if code != 1 || !strings.Contains(stdout+stderr, "mirror/crc:1") || !strings.Contains(stdout+stderr, "gzip: invalid checksum") {
		t.Errorf("export --deep of a layer with a wrong CRC-32: exit %d\n%s\n%s", code, stdout, stderr)
	}
	crcOut := filepath.Join(dir, "crc.tar")
	if stdout, stderr, code := harness.RunWith(t, env, bin, "export", "-f", mc, "-o", crcOut, "--plain-http", "-q"); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = harness.Run(t, bin, "verify", "--deep", crcOut)
	if code != 1 || !strings.Contains(stdout, "mirror/crc:1") || !strings.Contains(stdout, "layer cannot be decompressed: gzip: after") || !strings.Contains(stdout, "gzip: invalid checksum") {
		t.Errorf("verify --deep of a layer with a wrong CRC-32: exit %d\n%s\n%s", code, stdout, stderr)
	}
}
