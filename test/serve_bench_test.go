package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// parallel runs fn in n goroutines and returns the wall time and the bytes
// they moved.
func parallel(b *testing.B, n int, fn func() (int64, error)) (time.Duration, int64) {
	b.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	var firstErr error
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := fn()
			mu.Lock()
			defer mu.Unlock()
			total += m
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return d, total
}

// BenchmarkServeBlob downloads one 256 MiB layer from `ferry serve` with 8
// parallel clients (full GETs, so every stream is digest-checked as it
// leaves) and compares the throughput with 8 parallel readers of the same
// bytes straight from the bundle file; it reports the ratio and the serve
// process's peak RSS. Target (issue 6): peak RSS ≤ 150 MiB.
func BenchmarkServeBlob(b *testing.B) {
	size := int64(256 << 20)
	if s := os.Getenv("FERRY_BENCH_SERVE_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	const clients = 8
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	fx := harness.Seed(b, reg, "", harness.LargeLayerSet(size))
	dir := b.TempDir()
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte("tasks:\n  - name: large\n    source:\n      registry: "+reg.Host+"\n    mappings:\n      - from: large/blob\n        tags: [latest]\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	bundlePath := filepath.Join(dir, "bundle.tar")
	measured(b, bin, nil, "export", "-q", "-f", mapping, "-o", bundlePath)
	layer := fx[0].Layers[0]
	h, err := bundle.ParseDigest(layer)
	if err != nil {
		b.Fatal(err)
	}
	rd, err := bundle.Open(bundlePath)
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	blobSize, _ := rd.BlobSize(h)
	b.SetBytes(blobSize * clients)

	readFile := func() (int64, error) {
		sec, err := rd.Section(h)
		if err != nil {
			return 0, err
		}
		return io.CopyBuffer(io.Discard, sec, make([]byte, 256<<10))
	}
	parallel(b, clients, readFile) // warm the page cache for both sides

	srv := startServe(b, bin, bundlePath)
	url := "http://" + srv.addr + "/v2/large/blob/blobs/" + layer
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}}
	download := func(rng string) func() (int64, error) {
		return func() (int64, error) {
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				return 0, err
			}
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			return fetch(client, req, blobSize)
		}
	}

	b.ResetTimer()
	var ratio, serveMiBs, fileMiBs, rangeMiBs float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fileTime, fileBytes := parallel(b, clients, readFile)
		b.StartTimer()
		serveTime, serveBytes := parallel(b, clients, download(""))
		b.StopTimer()
		rangeTime, rangeBytes := parallel(b, clients, download("bytes=0-"))
		rangeMiBs = float64(rangeBytes) / rangeTime.Seconds() / (1 << 20)
		fileMiBs = float64(fileBytes) / fileTime.Seconds() / (1 << 20)
		serveMiBs = float64(serveBytes) / serveTime.Seconds() / (1 << 20)
		ratio = serveMiBs / fileMiBs
		b.StartTimer()
	}
	b.StopTimer()
	rssMiB := float64(srv.peakRSS(b)) / (1 << 20)
	if code := srv.stop(b); code != 0 {
		b.Fatalf("ferry serve exit %d\n%s", code, srv.stderr.String())
	}
	b.Logf("layer %d MiB, %d parallel clients: file %.0f MiB/s, ferry serve %.0f MiB/s (full GETs, digest-checked), ratio %.2f; unchecked Range GETs %.0f MiB/s; serve peak RSS %.1f MiB",
		blobSize>>20, clients, fileMiBs, serveMiBs, ratio, rangeMiBs, rssMiB)
	b.ReportMetric(ratio, "ratio_vs_file")
	b.ReportMetric(serveMiBs, "serve_MiB/s")
	b.ReportMetric(rangeMiBs, "range_MiB/s")
	b.ReportMetric(rssMiB, "peakRSS_MiB")
	if rssMiB > 150 {
		b.Errorf("peak RSS %.1f MiB > 150 MiB", rssMiB)
	}
}

// fetch sends req and reads the whole body, which must be want bytes.
func fetch(client *http.Client, req *http.Request, want int64) (int64, error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 && resp.StatusCode != 206 {
		return 0, fmt.Errorf("GET blob: %s", resp.Status)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err == nil && n != want {
		err = fmt.Errorf("GET blob: %d of %d bytes", n, want)
	}
	return n, err
}
