package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// addHandIndex adds an OCI index of one linux/amd64 and one linux/arm64
// image (one gzip layer each) under target:tag, and returns the configs of
// both platforms.
func addHandIndex(t testing.TB, plan *Plan, target, tag string) (amd64, arm64 v1.Hash) {
	t.Helper()
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	var blobs []v1.Hash
	var cfgs []v1.Hash
	for _, arch := range []string{"amd64", "arm64"} {
		l := gzipLayer(t, tarOf(t, arch, []byte(target+" "+arch)))
		mh, ch, bs := handManifest(t, plan, arch, []v1.Hash{l.diffID}, l)
		size := int64(0)
		for _, b := range plan.Blobs {
			if b.Digest == mh {
				size = b.Size
			}
		}
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: size, Platform: &v1.Platform{OS: "linux", Architecture: arch}})
		blobs = append(blobs, bs...)
		cfgs = append(cfgs, ch)
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	addPlanBlob(plan, PlannedBlob{Digest: sha(raw), Size: int64(len(raw)), MediaType: types.OCIImageIndex, Kind: KindManifest, Data: raw, Origin: "test"})
	plan.Images = append(plan.Images, PlannedImage{Image: Image{Source: "src.example/" + target + ":" + tag, Target: target, Tags: []string{tag},
		Digest: sha(raw).String(), MediaType: string(types.OCIImageIndex), Platforms: []string{"linux/amd64", "linux/arm64"}},
		Blobs: append([]v1.Hash{sha(raw)}, blobs...)})
	return cfgs[0], cfgs[1]
}

// dockerPlan is a bundle's worth of images of every kind manifest.json
// treats differently: a single-platform image with two tags, the same
// image at a second target, an index, a zstd image and a chart.
func dockerPlan(t testing.TB) (plan *Plan, single, amd64, arm64 v1.Hash, singleLayer v1.Hash) {
	t.Helper()
	plan = &Plan{}
	l := gzipLayer(t, tarOf(t, "s", []byte("single")))
	_, single = addHandImage(t, plan, "proj/single", "v1", l, plainLayer(tarOf(t, "p", []byte("plain"))))
	plan.Images[0].Tags = []string{"v2", "v1"}
	addHandImage(t, plan, "other/single", "latest", l, plainLayer(tarOf(t, "p", []byte("plain"))))
	amd64, arm64 = addHandIndex(t, plan, "proj/multi", "1.0")
	addHandImage(t, plan, "proj/zstd", "1", zstdLayer(t, tarOf(t, "z", []byte("zstd"))))
	addHandImage(t, plan, "charts/app", "0.1.0", plainLayer(tarOf(t, "c", []byte("chart"))))
	plan.Images[len(plan.Images)-1].Kind = "helm-chart"
	return plan, single, amd64, arm64, sha(l.data)
}

func readDockerManifest(t testing.TB, path string) []DockerImage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries := tarEntries(t, data)
	i := find(entries, DockerManifestFile)
	if i < 0 {
		return nil
	}
	if entries[i-1].hdr.Name != RecordFile {
		t.Errorf("%s follows %s, want it right after %s", DockerManifestFile, entries[i-1].hdr.Name, RecordFile)
	}
	var out []DockerImage
	if err := json.Unmarshal(entries[i].data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDockerManifest: manifest.json lists every single-platform image and
// the chosen platform of each index, with RepoTags TARGET:TAG, pointing at
// the bundle's own blob entries; zstd images and charts are left out with
// a reason; the same image at two targets is one entry.
func TestDockerManifest(t *testing.T) {
	plan, single, amd64, arm64, singleLayer := dockerPlan(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "b.tar")
	if _, err := Write(context.Background(), out, plan, WithClock(fixedClock)); err != nil {
		t.Fatal(err)
	}
	got := readDockerManifest(t, out)
	want := []DockerImage{
		{Config: BlobName(single), RepoTags: []string{"other/single:latest", "proj/single:v1", "proj/single:v2"}},
		{Config: BlobName(amd64), RepoTags: []string{"proj/multi:1.0"}},
	}
	if len(got) != len(want) {
		t.Fatalf("manifest.json = %+v", got)
	}
	for i := range want {
		if got[i].Config != want[i].Config || !slices.Equal(got[i].RepoTags, want[i].RepoTags) {
			t.Errorf("entry %d = %+v, want config %s, tags %v", i, got[i], want[i].Config, want[i].RepoTags)
		}
	}
	if len(got[0].Layers) != 2 || got[0].Layers[0] != BlobName(singleLayer) {
		t.Errorf("layers %v, want %s first", got[0].Layers, BlobName(singleLayer))
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Record().DockerPlatform != DefaultDockerPlatform {
		t.Errorf("ferry.json dockerPlatform = %q", r.Record().DockerPlatform)
	}
	for _, p := range append(got[0].Layers, got[1].Layers...) {
		h, _ := ParseDigest("sha256:" + strings.TrimPrefix(p, BlobPrefix))
		if !r.Has(h) {
			t.Errorf("%s is not a blob of the bundle", p)
		}
	}
	_, skips, err := r.DockerImages()
	if err != nil {
		t.Fatal(err)
	}
	if len(skips) != 2 || skips[0].Image != "charts/app:0.1.0" || !strings.Contains(skips[0].Reason, "helm-chart") ||
		skips[1].Image != "proj/zstd:1" || !strings.Contains(skips[1].Reason, "zstd") {
		t.Errorf("skipped %+v", skips)
	}
	if rep, err := Verify(context.Background(), r, 2, nil); err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}

	// Another platform, and none.
	out2 := filepath.Join(dir, "arm.tar")
	if _, err := Write(context.Background(), out2, plan, WithClock(fixedClock), WithDockerPlatform("linux/arm64")); err != nil {
		t.Fatal(err)
	}
	if got := readDockerManifest(t, out2); len(got) != 2 || got[1].Config != BlobName(arm64) {
		t.Errorf("linux/arm64: %+v", got)
	}
	out3 := filepath.Join(dir, "s390x.tar")
	if _, err := Write(context.Background(), out3, plan, WithClock(fixedClock), WithDockerPlatform("linux/s390x")); err != nil {
		t.Fatal(err)
	}
	r3, err := Open(out3)
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	if _, skips, _ := r3.DockerImages(); len(skips) != 3 || !strings.Contains(skips[1].Reason, "no linux/s390x manifest") {
		t.Errorf("linux/s390x skipped %+v", skips)
	}
	out4 := filepath.Join(dir, "none.tar")
	if _, err := Write(context.Background(), out4, plan, WithClock(fixedClock), WithDockerPlatform("")); err != nil {
		t.Fatal(err)
	}
	if got := readDockerManifest(t, out4); got != nil {
		t.Errorf("no docker platform, yet manifest.json %+v", got)
	}
	if _, err := Write(context.Background(), out4, plan, WithDockerPlatform("linux")); err == nil || !strings.Contains(err.Error(), "os/arch") {
		t.Errorf("bad platform: %v", err)
	}
}

// TestDockerManifestReproducible: the plan's order leaves no trace in
// manifest.json (nor anywhere else).
func TestDockerManifestReproducible(t *testing.T) {
	plan, _, _, _, _ := dockerPlan(t)
	rev := *plan
	rev.Images = slices.Clone(plan.Images)
	slices.Reverse(rev.Images)
	rev.Blobs = slices.Clone(plan.Blobs)
	slices.Reverse(rev.Blobs)
	dir := t.TempDir()
	var files [][]byte
	for i, p := range []*Plan{plan, &rev} {
		out := filepath.Join(dir, string(rune('a'+i))+".tar")
		if _, err := Write(context.Background(), out, p, WithClock(fixedClock), WithJobs(i+1)); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, data)
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Fatal("equal plans in another order gave different bundles")
	}
}

// TestHostileDockerManifest: an edited manifest.json is refused by Open
// when its shape is wrong, and by Verify when it is well-formed but not
// what ferry.json and the manifests imply.
func TestHostileDockerManifest(t *testing.T) {
	plan := &Plan{}
	addHandImage(t, plan, "proj/a", "v1", gzipLayer(t, tarOf(t, "a", []byte("a"))), gzipLayer(t, tarOf(t, "b", []byte("b"))))
	addHandImage(t, plan, "proj/b", "v1", gzipLayer(t, tarOf(t, "c", []byte("c"))))
	out := filepath.Join(t.TempDir(), "good.tar")
	if _, err := Write(context.Background(), out, plan, WithClock(fixedClock)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	good := tarEntries(t, data)
	var dm []DockerImage
	if err := json.Unmarshal(good[find(good, DockerManifestFile)].data, &dm); err != nil || len(dm) != 2 {
		t.Fatalf("manifest.json: %v %+v", err, dm)
	}
	rewrite := func(f func([]DockerImage) any) func([]tarEntry) []tarEntry {
		return func(e []tarEntry) []tarEntry {
			cp := slices.Clone(dm)
			for i := range cp {
				cp[i].Layers = slices.Clone(cp[i].Layers)
				cp[i].RepoTags = slices.Clone(cp[i].RepoTags)
			}
			b, err := json.Marshal(f(cp))
			if err != nil {
				t.Fatal(err)
			}
			e[find(e, DockerManifestFile)].data = b
			return e
		}
	}
	cases := []struct {
		name   string
		edit   func([]tarEntry) []tarEntry
		want   string
		verify bool // opens; Verify reports it
	}{
		{"unknown tag", rewrite(func(d []DockerImage) any { d[0].RepoTags[0] = "evil/x:v1"; return d }), "is not an image of ferry.json", false},
		{"path traversal", rewrite(func(d []DockerImage) any { d[0].Config = "../../etc/passwd"; return d }), "is not a blob of the bundle", false},
		{"missing blob", rewrite(func(d []DockerImage) any { d[0].Layers[0] = BlobPrefix + strings.Repeat("a", 64); return d }), "is not a blob of the bundle", false},
		{"tag twice", rewrite(func(d []DockerImage) any { d[1].RepoTags = d[0].RepoTags; return d }), "appears twice", false},
		{"no tags", rewrite(func(d []DockerImage) any { d[1].RepoTags = nil; return d }), "no RepoTags", false},
		{"not an array", rewrite(func([]DockerImage) any { return map[string]string{"Config": "x"} }), "not a docker-save manifest", false},
		{"unknown field", rewrite(func(d []DockerImage) any {
			return []map[string]any{{"Config": d[0].Config, "RepoTags": d[0].RepoTags, "Layers": d[0].Layers, "Parent": "x"}}
		}), "not a docker-save manifest", false},
		{"no docker platform in ferry.json", func(e []tarEntry) []tarEntry {
			return editEntry(t, e, RecordFile, `,
  "dockerPlatform": "linux/amd64"`, "")
		}, "names no docker platform", false},
		{"bad docker platform in ferry.json", func(e []tarEntry) []tarEntry {
			return editEntry(t, e, RecordFile, `"linux/amd64"`, `"../x"`)
		}, "want os/arch", false},
		{"tags swapped between images", rewrite(func(d []DockerImage) any {
			d[0].RepoTags, d[1].RepoTags = d[1].RepoTags, d[0].RepoTags
			return d
		}), "does not match what ferry.json and the manifests imply", true},
		{"layers reordered", rewrite(func(d []DockerImage) any {
			slices.Reverse(d[0].Layers)
			return d
		}), "does not match", true},
		{"entry dropped", rewrite(func(d []DockerImage) any { return d[:1] }), "does not match", true},
		{"manifest.json removed", func(e []tarEntry) []tarEntry {
			i := find(e, DockerManifestFile)
			return append(e[:i:i], e[i+1:]...)
		}, "manifest.json is missing", true},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cp := make([]tarEntry, len(good))
			for i, e := range good {
				cp[i] = tarEntry{e.hdr, slices.Clone(e.data)}
			}
			path := filepath.Join(dir, "hostile.tar")
			if err := os.WriteFile(path, buildTar(t, c.edit(cp)), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Open(path)
			if !c.verify {
				if err == nil {
					r.Close()
					t.Fatal("Open accepted it")
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Open: %v; want ErrCorrupt saying %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer r.Close()
			rep, err := Verify(context.Background(), r, 1, nil)
			if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 || rep.Problems[0].Entry != DockerManifestFile || !strings.Contains(rep.Problems[0].Message, c.want) {
				t.Fatalf("Verify: %v, problems %v", err, rep.Problems)
			}
		})
	}
}

// TestDockerManifestDelta: an image whose layer a delta leaves to its base
// is left out of manifest.json (docker load needs every blob in the file);
// the delta's images that are whole are in it.
func TestDockerManifestDelta(t *testing.T) {
	plan := &Plan{}
	base := gzipLayer(t, tarOf(t, "base", []byte("in the base")))
	addHandImage(t, plan, "proj/partial", "2", base, gzipLayer(t, tarOf(t, "new", []byte("new"))))
	addHandImage(t, plan, "proj/whole", "1", gzipLayer(t, tarOf(t, "w", []byte("whole"))))
	for i, b := range plan.Blobs {
		if b.Digest == sha(base.data) {
			plan.Blobs = append(plan.Blobs[:i:i], plan.Blobs[i+1:]...)
			break
		}
	}
	plan.Base = "0123456789abcdef0123456789abcdef"
	plan.BaseBlobs = []Blob{{Digest: sha(base.data).String(), Size: int64(len(base.data))}}
	r := writeOpen(t, plan)
	images, skips, err := r.DockerImages()
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 || images[0].RepoTags[0] != "proj/whole:1" || len(skips) != 1 || skips[0].Image != "proj/partial:2" ||
		!strings.Contains(skips[0].Reason, "left to the base bundle") {
		t.Fatalf("images %+v, skipped %+v", images, skips)
	}
	if rep, err := Verify(context.Background(), r, 1, nil); err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
}
