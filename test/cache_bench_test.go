package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkCacheHit warms `ferry cache` with one 256 MiB layer (8
// concurrent cold clients share one upstream download), then measures hits:
// 32 parallel clients downloading the layer, and 64 parallel clients asking
// for a tag's manifest 200 times each. It reports both rates and the cache
// process's peak RSS. Target (issue: the two other field tools): peak RSS
// ≤ 150 MiB.
func BenchmarkCacheHit(b *testing.B) {
	size := int64(256 << 20)
	if s := os.Getenv("FERRY_BENCH_CACHE_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	const blobClients, manifestClients, manifestGets = 32, 64, 200
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	fx := harness.Seed(b, reg, "", harness.LargeLayerSet(size))
	c := startCache(b, bin, "--dir", b.TempDir(), "--max-size", "10GiB", "--upstream", "src.test=http://"+reg.Host)
	base := "http://" + c.addr + "/v2/src.test/large/blob/"
	blobURL := base + "blobs/" + fx[0].Layers[0]
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: manifestClients, DisableCompression: true}}
	head, err := client.Head(blobURL)
	if err != nil || head.StatusCode != 200 || head.ContentLength <= 0 {
		b.Fatalf("HEAD blob: %v %v", err, head)
	}
	head.Body.Close()
	getBlob := func() (int64, error) {
		req, _ := http.NewRequest("GET", blobURL, nil)
		return fetch(client, req, head.ContentLength)
	}
	missTime, _ := parallel(b, 8, getBlob) // cold: one upstream download shared by 8
	getManifests := func() (int64, error) {
		for range manifestGets {
			req, _ := http.NewRequest("GET", base+"manifests/latest", nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				return 0, fmt.Errorf("GET manifest: %v %s", err, resp.Status)
			}
		}
		return 1, nil
	}

	b.SetBytes(head.ContentLength * blobClients)
	b.ResetTimer()
	var blobMiBs, reqPerSec float64
	for i := 0; i < b.N; i++ {
		d, n := parallel(b, blobClients, getBlob)
		blobMiBs = float64(n) / d.Seconds() / (1 << 20)
		b.StopTimer()
		start := time.Now()
		parallel(b, manifestClients, getManifests)
		reqPerSec = float64(manifestClients*manifestGets) / time.Since(start).Seconds()
		b.StartTimer()
	}
	b.StopTimer()
	rssMiB := float64(c.peakRSS(b)) / (1 << 20)
	if code := c.stop(b); code != 0 {
		b.Fatalf("ferry cache exit %d\n%s", code, c.stderr.String())
	}
	b.Logf("layer %d MiB: cold, 8 clients sharing one download %.1fs; hits, %d clients %.0f MiB/s; manifest hits, %d clients %.0f req/s; cache peak RSS %.1f MiB",
		size>>20, missTime.Seconds(), blobClients, blobMiBs, manifestClients, reqPerSec, rssMiB)
	b.ReportMetric(blobMiBs, "hit_MiB/s")
	b.ReportMetric(reqPerSec, "manifest_req/s")
	b.ReportMetric(rssMiB, "peakRSS_MiB")
	if rssMiB > 150 {
		b.Errorf("peak RSS %.1f MiB > 150 MiB", rssMiB)
	}
}
