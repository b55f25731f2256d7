package test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/test/harness"
)

// Helpers shared by the export_*_test.go files.

// bundleRecord is the part of ferry.json the tests read.
type bundleRecord struct {
	Images []struct {
		Source         string   `json:"source"`
		Target         string   `json:"target"`
		Tags           []string `json:"tags"`
		Digest         string   `json:"digest"`
		MediaType      string   `json:"mediaType"`
		Platforms      []string `json:"platforms"`
		UpstreamDigest string   `json:"upstreamDigest"`
	} `json:"images"`
	Blobs []struct {
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
		MediaType string `json:"mediaType"`
	} `json:"blobs"`
}

// ociIndex is the bundle's index.json.
type ociIndex struct {
	Manifests []struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
}

// tarContents is a bundle read with archive/tar.
type tarContents struct {
	Names []string          // every entry, in order
	Files map[string][]byte // contents of the non-blob entries
	Blobs map[string][]byte // blobs/sha256/<hex> → content
	Dups  []string          // names seen more than once
}

func readBundle(t *testing.T, path string) *tarContents {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tc := &tarContents{Files: map[string][]byte{}, Blobs: map[string][]byte{}}
	seen := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading %s as tar: %v", path, err)
		}
		if seen[h.Name] {
			tc.Dups = append(tc.Dups, h.Name)
		}
		seen[h.Name] = true
		tc.Names = append(tc.Names, h.Name)
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s in %s: %v", h.Name, path, err)
		}
		if strings.HasPrefix(h.Name, "blobs/") {
			tc.Blobs[h.Name] = data
		} else {
			tc.Files[h.Name] = data
		}
	}
	return tc
}

func (tc *tarContents) record(t *testing.T) *bundleRecord {
	t.Helper()
	var rec bundleRecord
	if err := json.Unmarshal(tc.Files["ferry.json"], &rec); err != nil {
		t.Fatalf("ferry.json: %v\n%s", err, tc.Files["ferry.json"])
	}
	return &rec
}

func (tc *tarContents) index(t *testing.T) *ociIndex {
	t.Helper()
	var idx ociIndex
	if err := json.Unmarshal(tc.Files["index.json"], &idx); err != nil {
		t.Fatalf("index.json: %v\n%s", err, tc.Files["index.json"])
	}
	return &idx
}

func blobName(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

// summaryRefs returns TARGET:TAG for every tag in an export summary, sorted.
func summaryRefs(sum *exportSummary) []string {
	var refs []string
	for _, im := range sum.Images {
		for _, tag := range im.Tags {
			refs = append(refs, im.Target+":"+tag)
		}
	}
	sort.Strings(refs)
	return refs
}

func parseSummary(t *testing.T, stdout string) *exportSummary {
	t.Helper()
	var sum exportSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("export --json summary: %v\n%s", err, stdout)
	}
	return &sum
}

// fixtureDigests maps "repo:tag" to the digest Seed pushed.
func fixtureDigests(fs []harness.Fixture) map[string]string {
	m := map[string]string{}
	for _, f := range fs {
		m[f.Ref()] = f.Digest
	}
	return m
}

func fixtureByRef(t *testing.T, fs []harness.Fixture, ref string) harness.Fixture {
	t.Helper()
	for _, f := range fs {
		if f.Ref() == ref {
			return f
		}
	}
	t.Fatalf("no fixture %s", ref)
	return harness.Fixture{}
}

// dirEntries lists a directory's names, sorted.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// regctlPath finds regctl on PATH or in $(go env GOPATH)/bin and fails the
// test (it does not skip) when it is missing.
func regctlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("regctl"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "regctl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("regctl not found on PATH or in $(go env GOPATH)/bin: install it with `go install github.com/regclient/regclient/cmd/regctl@latest`")
	return ""
}

func skopeoPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("skopeo not found: install it with `apt-get install -y skopeo`")
	}
	return p
}

// runTool runs an external tool with HOME and config dirs in a temp
// directory and fails the test on a non-zero exit.
func runTool(t *testing.T, home string, bin string, args ...string) string {
	t.Helper()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{
		Env: []string{"HOME=" + home, "REGCTL_CONFIG=" + filepath.Join(home, "regctl.json"), "DOCKER_CONFIG=" + filepath.Join(home, ".docker"), "XDG_RUNTIME_DIR=" + home, "TMPDIR=" + home},
	}, bin, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// remoteDigest returns the digest a registry serves for repo:tag.
func remoteDigest(t *testing.T, reg *harness.Registry, repoTag string) string {
	t.Helper()
	desc, err := remote.Head(reg.Ref(t, repoTag), reg.RemoteOptions("")...)
	if err != nil {
		t.Fatalf("HEAD %s on %s: %v", repoTag, reg.Host, err)
	}
	return desc.Digest.String()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ferryEnv keeps the host's docker credentials out of the binary's way.
func ferryEnv(t *testing.T, extra ...string) []string {
	home := t.TempDir()
	return append([]string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker"), "REGISTRY_AUTH_FILE=" + filepath.Join(home, "auth.json")}, extra...)
}

// rawIndex is a manifest pushed as its exact bytes.
type rawIndex struct{ data []byte }

func (r rawIndex) RawManifest() ([]byte, error) { return r.data, nil }
func (r rawIndex) MediaType() (types.MediaType, error) {
	return types.OCIImageIndex, nil
}

// seedPlainOCIIndex copies the children of the OCI index at fromRef into
// toRepo and tags there an OCI index of them written by hand, without the
// artifactType fields go-containerregistry adds to descriptors (skopeo 1.9
// refuses to copy such an index with --preserve-digests, from a registry as
// from an OCI layout). It returns the new index's digest.
func seedPlainOCIIndex(t *testing.T, reg *harness.Registry, user, fromRef, toRepo, tag string) string {
	t.Helper()
	opts := reg.RemoteOptions(user)
	idx, err := remote.Index(reg.Ref(t, fromRef), opts...)
	if err != nil {
		t.Fatalf("reading %s: %v", fromRef, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(reg.Ref(t, toRepo+"@"+d.Digest.String()), img, opts...); err != nil {
			t.Fatalf("copying child %s: %v", d.Digest, err)
		}
		entries = append(entries, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":%q,"os":%q}}`,
			d.MediaType, d.Digest, d.Size, d.Platform.Architecture, d.Platform.OS))
	}
	data := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(entries, ",") + `]}`)
	if err := remote.Put(reg.Ref(t, toRepo+":"+tag), rawIndex{data}, opts...); err != nil {
		t.Fatalf("pushing index %s:%s: %v", toRepo, tag, err)
	}
	return "sha256:" + sha256Hex(data)
}
