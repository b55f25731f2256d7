package test

import (
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkCacheHitS3 compares cache hits from the object store
// (`--store s3://`, two replicas on one real SeaweedFS bucket) with hits
// from the disk store: one layer (64 MiB, FERRY_BENCH_CACHE_S3_LAYER_BYTES)
// is fetched once, then 16 parallel clients download it, spread over the
// replicas. It reports the hit throughput of each store and each cache
// process's peak RSS. Target (issue 24): peak RSS < 64 MiB per S3 replica.
func BenchmarkCacheHitS3(b *testing.B) {
	size := int64(64 << 20)
	if s := os.Getenv("FERRY_BENCH_CACHE_S3_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	const clients = 16
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	fx := harness.Seed(b, reg, "", harness.LargeLayerSet(size))
	sw := harness.StartSeaweed(b)
	bucket := sw.Bucket(b)
	common := []string{"--max-size", "10GiB", "--upstream", "src.test=http://" + reg.Host}
	stores := []struct {
		name     string
		replicas []*cached
	}{
		{"disk", []*cached{startCache(b, bin, append([]string{"--dir", b.TempDir()}, common...)...)}},
		{"s3", []*cached{s3Replica(b, bin, sw, sw.Endpoint, bucket, common...), s3Replica(b, bin, sw, sw.Endpoint, bucket, common...)}},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}}
	path := "/v2/src.test/large/blob/blobs/" + fx[0].Layers[0]
	rates := map[string]float64{}
	for _, st := range stores {
		for _, c := range st.replicas { // warm: the first replica fetches, the others find the object
			req, _ := http.NewRequest("GET", "http://"+c.addr+path, nil)
			if _, err := fetch(client, req, size); err != nil {
				b.Fatalf("%s: warming: %v", st.name, err)
			}
		}
	}
	b.SetBytes(size * clients * int64(len(stores)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, st := range stores {
			var next atomic.Int32
			d, n := parallel(b, clients, func() (int64, error) {
				c := st.replicas[int(next.Add(1))%len(st.replicas)]
				req, _ := http.NewRequest("GET", "http://"+c.addr+path, nil)
				return fetch(client, req, size)
			})
			rates[st.name] = float64(n) / d.Seconds() / (1 << 20)
		}
	}
	b.StopTimer()
	for _, st := range stores {
		var peak float64
		for _, c := range st.replicas {
			peak = max(peak, float64(c.peakRSS(b))/(1<<20))
			if code := c.stop(b); code != 0 {
				b.Fatalf("%s: ferry cache exit %d\n%s", st.name, code, c.stderr.String())
			}
		}
		b.Logf("%s store, layer %d MiB, %d clients: hits %.0f MiB/s; peak RSS per replica %.1f MiB", st.name, size>>20, clients, rates[st.name], peak)
		b.ReportMetric(rates[st.name], st.name+"_hit_MiB/s")
		b.ReportMetric(peak, st.name+"_peakRSS_MiB")
		if st.name == "s3" && peak >= 64 {
			b.Errorf("S3 replica peak RSS %.1f MiB, want < 64 MiB", peak)
		}
	}
}
