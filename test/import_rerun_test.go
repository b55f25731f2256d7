package test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestImportRerunAfterTagsCut: an import whose tag PUTs are all cut (as
// when it dies after the blobs, before the tags) leaves blobs and child
// manifests in a real distribution registry and no tag. The next import
// finds every blob with one request (a mount from the blob's own
// repository answers 201), uploads nothing again, sends no blob HEAD, and
// completes every image with its source digest.
func TestImportRerunAfterTagsCut(t *testing.T) {
	bin := harness.BuildFerry(t)
	bundlePath, src, fixtures := impExport(t, bin)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	cut, _, faults := harness.FaultProxy(t, dst)
	for _, ref := range impRefs {
		_, tag, _ := strings.Cut(ref, ":")
		faults.Add(harness.Fault{Method: http.MethodPut, Kind: harness.KindManifest, Match: "/manifests/" + tag, Mode: harness.FaultReset, Request: true})
	}
	first, stderr, code := runImport(t, bin, robotPW+"\n", bundlePath, "--to", cut.Host+"/mirror", "--ca-cert", dst.CAFile,
		"--username", robot, "--password-stdin", "--jobs", "2")
	if code != 1 || first.Pushed != 0 || first.Failed != 5 || first.BlobsUploaded == 0 {
		t.Fatalf("import with every tag cut: exit %d, pushed %d, failed %d, %d blobs uploaded; want exit 1, 0, 5, some\n%s",
			code, first.Pushed, first.Failed, first.BlobsUploaded, stderr)
	}

	front, counter := harness.CountingProxy(t, dst)
	sum, stderr, code := runImport(t, bin, robotPW+"\n", bundlePath, "--to", front.Host+"/mirror", "--ca-cert", dst.CAFile,
		"--username", robot, "--password-stdin")
	if code != 0 || sum.Pushed != 5 || sum.BlobsUploaded != 0 || sum.BytesUploaded != 0 {
		t.Fatalf("rerun: exit %d, pushed %d, uploaded %d blobs (%d bytes); want 0, 5, 0, 0\n%s", code, sum.Pushed, sum.BlobsUploaded, sum.BytesUploaded, stderr)
	}
	if want := first.BytesUploaded; sum.BytesSkipped < want {
		t.Errorf("rerun skipped %d bytes; the first run uploaded %d", sum.BytesSkipped, want)
	}
	t.Logf("rerun: %s", counter)
	snap := counter.Snapshot()
	for _, k := range []string{"HEAD blob", "PUT upload", "PATCH upload"} {
		if snap[k] != 0 {
			t.Errorf("rerun sent %d × %s (%s)", snap[k], k, counter)
		}
	}
	checkPulledBack(t, src, dst, robot, "mirror", fixtures, impRefs)
}
