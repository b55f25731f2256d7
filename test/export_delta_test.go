package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// TestDeltaAndVolumes: a delta bundle holds only what changed, imports on
// top of its base (and refuses to import without it), and both bundles
// work when split into volumes smaller than their largest layer.
func TestDeltaAndVolumes(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	const big = 3 << 20
	base := harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/web", Tag: "1.1.0", Kind: harness.DockerImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/data", Tag: "1.0.0", Kind: harness.OCIImage, LargeLayer: big},
	}}
	harness.Seed(t, src, "", base)
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/web\n      - from: app/data\n")
	baseOut := filepath.Join(dir, "base.tar")
	// Volumes of 1 MiB: below the 3 MiB layer, which spans several.
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", baseOut, "--split", "1MiB"); code != 0 {
		t.Fatalf("base export: %s %s", stdout, stderr)
	}
	vols, _ := filepath.Glob(baseOut + ".*")
	var volumes []string
	for _, v := range vols {
		if !strings.HasSuffix(v, ".sha256") {
			volumes = append(volumes, v)
		}
	}
	if len(volumes) < 4 {
		t.Fatalf("volumes: %v", volumes)
	}
	for _, v := range volumes {
		if st, _ := os.Stat(v); st.Size() >= 1<<20 {
			t.Errorf("volume %s is %d bytes, not below 1 MiB", v, st.Size())
		}
	}
	if _, err := os.Stat(baseOut); !os.IsNotExist(err) {
		t.Fatal("a split export also wrote the single file")
	}
	// sha256sum -c checks every volume.
	if out, errOut, code := harness.RunWith(t, harness.RunOptions{Dir: dir}, "sha256sum", "-c", filepath.Base(baseOut)+".sha256"); code != 0 {
		t.Fatalf("sha256sum -c: %s %s", out, errOut)
	}
	// verify and inspect read across volumes, by base name and first volume.
	for _, name := range []string{baseOut, baseOut + ".000"} {
		if stdout, stderr, code := harness.Run(t, bin, "verify", name); code != 0 || !strings.Contains(stdout, "OK") {
			t.Fatalf("verify %s: %s %s", name, stdout, stderr)
		}
	}

	// Upstream moves on: one new tag with one new layer, the rest unchanged.
	added := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.2.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
	}})
	deltaOut := filepath.Join(dir, "delta.tar")
	stdout, stderr, code := harness.Run(t, bin, "export", "-q", "--json", "-f", mapping, "-o", deltaOut, "--since", baseOut, "--split", "1MiB")
	if code != 0 {
		t.Fatalf("delta export: %s %s", stdout, stderr)
	}
	r, err := bundle.Open(deltaOut)
	if err != nil {
		t.Fatal(err)
	}
	rec := r.Record()
	r.Close()
	baseRec, err := bundle.ReadRecord(baseOut)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Base != baseRec.ID {
		t.Fatalf("delta base %q, want %q", rec.Base, baseRec.ID)
	}
	if len(rec.Images) != 1 || rec.Images[0].Digest != added[0].Digest {
		t.Fatalf("delta images: %+v", rec.Images)
	}
	// Only the new tag's own manifest, config and layer are stored; the
	// shared base layers are left to the base bundle.
	if len(rec.Blobs) != 3 {
		t.Fatalf("delta stores %d blobs, want 3 (manifest, config, new layer): %+v", len(rec.Blobs), rec.Blobs)
	}
	if len(rec.BaseBlobs) != 2 {
		t.Fatalf("delta leaves %d blobs to the base, want 2", len(rec.BaseBlobs))
	}
	stdout, _, code = harness.Run(t, bin, "inspect", deltaOut)
	if code != 0 || !strings.Contains(stdout, "delta of bundle "+baseRec.ID) {
		t.Fatalf("inspect does not show the chain:\n%s", stdout)
	}
	if stdout, stderr, code := harness.Run(t, bin, "verify", deltaOut); code != 0 {
		t.Fatalf("verify delta: %s %s", stdout, stderr)
	}

	// Importing the delta alone fails before anything is pushed, naming the base.
	empty := harness.StartRegistry(t, harness.RegistryOptions{})
	stdout, stderr, code = harness.Run(t, bin, "import", deltaOut, "--to", empty.Host)
	if code != 1 || !strings.Contains(stderr, baseRec.ID) || !strings.Contains(stderr, "import bundle") {
		t.Fatalf("delta without base: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if repos := catalog(t, empty); len(repos) != 0 {
		t.Fatalf("a refused delta import left repositories: %v", repos)
	}

	// Base then delta: the target matches the source exactly.
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	for _, b := range []string{baseOut + ".000", deltaOut} {
		if stdout, stderr, code := harness.Run(t, bin, "import", b, "--to", dst.Host); code != 0 {
			t.Fatalf("import %s: %s %s", b, stdout, stderr)
		}
	}
	for _, repo := range []string{"app/web", "app/data"} {
		srcTags := listTags(t, src, repo)
		dstTags := listTags(t, dst, repo)
		if strings.Join(srcTags, ",") != strings.Join(dstTags, ",") {
			t.Fatalf("%s: source tags %v, target %v", repo, srcTags, dstTags)
		}
		for _, tag := range srcTags {
			sd, err := remote.Head(src.Ref(t, repo+":"+tag), src.RemoteOptions("")...)
			if err != nil {
				t.Fatal(err)
			}
			dd, err := remote.Head(dst.Ref(t, repo+":"+tag), dst.RemoteOptions("")...)
			if err != nil {
				t.Fatal(err)
			}
			if sd.Digest != dd.Digest {
				t.Errorf("%s:%s: target %s, source %s", repo, tag, dd.Digest, sd.Digest)
			}
		}
	}

	// ferry serve takes the base (as volumes) and the delta and serves them
	// as one registry: every tag pulls with its source digest, the new tag's
	// shared layers coming from the base.
	srv := startServe(t, bin, baseOut+".000", deltaOut)
	served := &harness.Registry{Host: srv.addr, URL: "http://" + srv.addr}
	for _, repo := range []string{"app/web", "app/data"} {
		for _, tag := range listTags(t, src, repo) {
			sd, err := remote.Head(src.Ref(t, repo+":"+tag), src.RemoteOptions("")...)
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(served.Ref(t, repo+":"+tag), served.RemoteOptions("")...)
			if err != nil {
				t.Fatalf("serve %s:%s: %v", repo, tag, err)
			}
			if err := pullImage(img); err != nil {
				t.Fatalf("serve %s:%s: %v", repo, tag, err)
			}
			if d, _ := img.Digest(); d != sd.Digest {
				t.Errorf("serve %s:%s: %s, source %s", repo, tag, d, sd.Digest)
			}
		}
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exit %d", code)
	}

	// Nothing changed since the delta: a further delta writes nothing, exit 0.
	again := filepath.Join(dir, "again.tar")
	stdout, stderr, code = harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", again, "--since", deltaOut)
	if code != 0 {
		t.Fatalf("empty delta: exit %d %s %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "nothing new") {
		t.Errorf("empty delta does not say so: %s", stderr)
	}
	if _, err := os.Stat(again); !os.IsNotExist(err) {
		t.Error("an empty delta wrote a bundle")
	}
}

func listTags(t *testing.T, r *harness.Registry, repo string) []string {
	t.Helper()
	tags, err := remote.List(r.Ref(t, repo+":x").Context(), r.RemoteOptions("")...)
	if err != nil {
		t.Fatalf("listing %s: %v", repo, err)
	}
	sort.Strings(tags)
	return tags
}

func catalog(t *testing.T, r *harness.Registry) []string {
	t.Helper()
	resp, err := r.Transport().RoundTrip(mustRequest(t, r.URL+"/v2/_catalog"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c.Repositories
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
