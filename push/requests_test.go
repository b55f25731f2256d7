package push_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// manifestPUTsWanted counts, per image of the bundle, the manifests under it (its
// children) and the image's tags: what a first import must PUT.
func manifestPUTsWanted(t *testing.T, path string) int {
	t.Helper()
	ts, recs := trees(t, path)
	n := 0
	seen := map[string]bool{}
	for _, rec := range recs {
		root := ts[rec.Digest]
		_ = root.Walk(func(c *bundle.Node) error {
			if c != root && isManifest(c) && !seen[rec.Target+"@"+c.Digest.String()] {
				seen[rec.Target+"@"+c.Digest.String()] = true
				n++
			}
			return nil
		})
		n += len(rec.Tags)
	}
	return n
}

// TestPushRequestsAtTheMinimum: a first import into an empty registry asks
// per repository for one tag and, that missing, for the tag list; it asks
// no blob HEAD; each blob costs one cross-repository mount (201) when
// another repository of the import got it first, or a mount from its own
// repository (202, which opens the upload) and one PUT; each child
// manifest is PUT once by digest and each image's own manifest once per
// tag, never also by digest.
func TestPushRequestsAtTheMinimum(t *testing.T) {
	path, _ := testBundle(t)
	tg := newTarget(t)
	sum, err := run(t, path, tg.host+"/m", nil)
	if err != nil {
		t.Fatalf("push: %v\n%+v", err, sum)
	}
	count := map[string]int{}
	for _, r := range tg.requests() {
		repo, kind, _ := split(r.Path)
		q, _ := url.ParseQuery(r.Query)
		switch {
		case kind == "blobs" && r.Method == http.MethodHead:
			count["blob HEAD"]++
		case kind == "uploads" && r.Method == http.MethodPost && q.Get("mount") != "" && q.Get("from") == repo:
			count["own mount "+http.StatusText(r.Status)]++
		case kind == "uploads" && r.Method == http.MethodPost && q.Get("mount") != "":
			count["mount "+http.StatusText(r.Status)]++
		case kind == "uploads" && r.Method == http.MethodPost:
			count["POST"]++
		case kind == "uploads" && r.Method == http.MethodPut:
			count["PUT"]++
		case kind == "manifests" && r.Method == http.MethodPut:
			count["manifest PUT"]++
		case kind == "manifests" && r.Method == http.MethodHead:
			count["manifest HEAD"]++
		case strings.HasSuffix(r.Path, "/tags/list"):
			count["tag list"]++
		}
	}
	t.Logf("requests: %v", count)
	if count["blob HEAD"] != 0 {
		t.Errorf("%d blob HEADs on an empty registry, want none", count["blob HEAD"])
	}
	if got := count["own mount Accepted"]; got != sum.BlobsUploaded || count["PUT"] != sum.BlobsUploaded {
		t.Errorf("%d blobs uploaded with %d sessions opened by mount and %d PUTs; want one of each per blob", sum.BlobsUploaded, got, count["PUT"])
	}
	if got := count["mount Created"]; got != sum.BlobsMounted || got == 0 {
		t.Errorf("%d cross-repository mounts worked, summary says %d mounted (want as many, and some)", got, sum.BlobsMounted)
	}
	// The push-access check opens (and cancels) one plain session per
	// project; everything goes to project "m" here.
	if count["POST"] != 1 {
		t.Errorf("%d plain upload sessions, want 1 (the push check of project m)", count["POST"])
	}
	// The survey: per repository, its first tag and (missing) its tag list.
	_, recs := trees(t, path)
	repos := map[string]bool{}
	for _, rec := range recs {
		repos[rec.Target] = true
	}
	if count["manifest HEAD"] != len(repos) || count["tag list"] != len(repos) {
		t.Errorf("%d manifest HEADs and %d tag lists for %d repositories; want one of each per repository", count["manifest HEAD"], count["tag list"], len(repos))
	}
	if want := manifestPUTsWanted(t, path); count["manifest PUT"] != want {
		t.Errorf("%d manifest PUTs, want %d (children by digest, then each tag once)", count["manifest PUT"], want)
	}
}

// TestPushRerunAfterCut: an import whose tags were refused (as after a
// kill before the tags) leaves the blobs; the next run finds each of them
// with one request, uploads nothing again and completes the images.
func TestPushRerunAfterCut(t *testing.T) {
	path, fix := testBundle(t)
	tg := newTarget(t)
	tg.refuse = func(r *http.Request) int {
		if _, kind, ref := split(r.URL.Path); kind == "manifests" && r.Method == http.MethodPut && !strings.HasPrefix(ref, "sha256:") {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	first, err := run(t, path, tg.host, nil)
	if err == nil || first.Failed != len(first.Images) || first.BlobsUploaded == 0 {
		t.Fatalf("first run with tags refused: err %v, %d of %d failed, %d blobs uploaded", err, first.Failed, len(first.Images), first.BlobsUploaded)
	}
	tg.mu.Lock()
	tg.refuse = nil
	tg.mu.Unlock()
	tg.reset()
	sum, err := run(t, path, tg.host, nil)
	if err != nil {
		t.Fatalf("rerun: %v\n%+v", err, sum)
	}
	if sum.BlobsUploaded != 0 || sum.Pushed != len(sum.Images) {
		t.Errorf("rerun uploaded %d blobs, pushed %d of %d images; want 0 uploads, all pushed", sum.BlobsUploaded, sum.Pushed, len(sum.Images))
	}
	if sum.BytesSkipped != first.BytesUploaded+first.BytesMounted {
		t.Errorf("rerun skipped %d bytes; the first run put %d there", sum.BytesSkipped, first.BytesUploaded+first.BytesMounted)
	}
	for _, r := range tg.requests() {
		if _, kind, _ := split(r.Path); kind == "uploads" && r.Method == http.MethodPut {
			t.Errorf("rerun uploaded again: %s %s", r.Method, r.Path)
		}
	}
	checkTags(t, tg, path, fix)
}

// TestPushMountRefused: a registry that answers every mount request with
// an error still gets every blob, by plain upload.
func TestPushMountRefused(t *testing.T) {
	path, fix := testBundle(t)
	tg := newTarget(t)
	tg.refuse = func(r *http.Request) int {
		if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
			return http.StatusMethodNotAllowed
		}
		return 0
	}
	sum, err := run(t, path, tg.host, nil)
	if err != nil {
		t.Fatalf("push: %v\n%+v", err, sum)
	}
	if sum.BlobsMounted != 0 || sum.BlobsUploaded == 0 || sum.Pushed != len(sum.Images) {
		t.Errorf("mounted %d, uploaded %d, pushed %d of %d", sum.BlobsMounted, sum.BlobsUploaded, sum.Pushed, len(sum.Images))
	}
	checkTags(t, tg, path, fix)
}

// checkTags asks the target for every tag of the bundle and compares the
// digest with the source fixture's.
func checkTags(t *testing.T, tg *target, path string, fix map[string]harness.Fixture) {
	t.Helper()
	_, recs := trees(t, path)
	for _, rec := range recs {
		for _, tag := range rec.Tags {
			want := fix[rec.Target+":"+tag].Digest
			req, _ := http.NewRequest(http.MethodHead, tg.srv.URL+"/v2/"+rec.Target+"/manifests/"+tag, nil)
			req.Header.Set("Accept", strings.Join([]string{string(types.OCIManifestSchema1), string(types.OCIImageIndex),
				string(types.DockerManifestSchema2), string(types.DockerManifestList)}, ","))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != http.StatusOK || got != want || want == "" {
				t.Errorf("%s:%s: %s, digest %q; source has %q", rec.Target, tag, resp.Status, got, want)
			}
		}
	}
}
