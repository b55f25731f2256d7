package test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// measured runs ferry and returns its wall time, peak RSS in bytes (from
// /proc, see timedRun) and stdout.
func measured(b *testing.B, bin string, _ []string, args ...string) (time.Duration, int64, string) {
	b.Helper()
	st := timedRun(b, bin, args...)
	b.Logf("ferry %s: wall %.2fs, CPU %.2fs, peak RSS %.1f MiB", args[0], st.wall.Seconds(), st.cpu.Seconds(), float64(st.rss)/(1<<20))
	return st.wall, st.rss, st.stdout
}

// plainCopy copies src to dst on the same disk, with fsync as ferry does,
// and returns the time it took: the yardstick for export throughput.
func plainCopy(b *testing.B, src, dst string) time.Duration {
	b.Helper()
	start := time.Now()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkExportLargeLayer exports one image with a 1 GiB layer from a
// loopback distribution registry and reports throughput as a ratio to a
// plain copy of the same bytes on the same disk, and ferry's peak RSS.
// Targets (issue 2): ratio ≥ 0.8, peak RSS ≤ 150 MiB.
func BenchmarkExportLargeLayer(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("FERRY_BENCH_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	fx := harness.Seed(b, reg, "", harness.LargeLayerSet(size))
	dir := b.TempDir()
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte("tasks:\n  - name: large\n    source:\n      registry: "+reg.Host+"\n    mappings:\n      - from: large/blob\n        tags: [latest]\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	// The layer's bytes as the registry stores them: the yardstick's input.
	layer := fx[0].Layers[0]
	src := filepath.Join(reg.Dir, "docker/registry/v2/blobs/sha256", layer[7:9], layer[7:], "data")
	st, err := os.Stat(src)
	if err != nil {
		b.Fatalf("finding the layer in the registry's storage: %v", err)
	}
	b.SetBytes(st.Size())
	b.ResetTimer()
	var ratio, rssMiB float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		copyTime := plainCopy(b, src, filepath.Join(dir, "copy"))
		_ = os.Remove(filepath.Join(dir, "copy"))
		out := filepath.Join(dir, "bundle.tar")
		b.StartTimer()
		d, rss, _ := measured(b, bin, nil, "export", "-q", "-f", mapping, "-o", out)
		b.StopTimer()
		_ = os.Remove(out)
		_ = os.Remove(out + ".sha256")
		ratio = copyTime.Seconds() / d.Seconds()
		rssMiB = float64(rss) / (1 << 20)
		b.Logf("layer %d MiB: plain copy %.2fs (%.0f MiB/s), ferry export %.2fs (%.0f MiB/s), ratio %.2f, peak RSS %.1f MiB",
			st.Size()>>20, copyTime.Seconds(), float64(st.Size())/copyTime.Seconds()/(1<<20),
			d.Seconds(), float64(st.Size())/d.Seconds()/(1<<20), ratio, rssMiB)
		b.StartTimer()
	}
	b.ReportMetric(ratio, "ratio_vs_copy")
	b.ReportMetric(rssMiB, "peakRSS_MiB")
}

// BenchmarkExportManySmall exports a Cloudforet-like set (50 repositories,
// hundreds of tags sharing base layers) through a request-counting proxy
// and reports requests per unique blob and manifest. Target: one GET per
// unique blob, one per unique manifest, one tag listing per repository.
func BenchmarkExportManySmall(b *testing.B) {
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	set := harness.ManySmallSet(50, 8)
	harness.Seed(b, reg, "", set)
	proxy, counter := harness.CountingProxy(b, reg)
	repos := map[string]bool{}
	for _, sp := range set.Specs {
		repos[sp.Repo] = true
	}
	var y strings.Builder
	y.WriteString("tasks:\n  - name: many\n    source:\n      registry: " + proxy.Host + "\n    mappings:\n")
	for r := range repos {
		y.WriteString("      - from: " + r + "\n        tags: ['regex: .*']\n")
	}
	dir := b.TempDir()
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte(y.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		counter.Reset()
		out := filepath.Join(dir, fmt.Sprintf("bundle-%d.tar", i))
		d, rss, stdout := measured(b, bin, nil, "export", "-q", "--json", "-f", mapping, "-o", out)
		b.StopTimer()
		var sum struct {
			Tags  int `json:"tags"`
			Blobs int `json:"blobs"`
		}
		if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
			b.Fatal(err)
		}
		manifests, blobs := countBundle(b, out)
		blobGET := counter.Count("GET", harness.KindBlob)
		manGET := counter.Count("GET", harness.KindManifest)
		manHEAD := counter.Count("HEAD", harness.KindManifest)
		tagGET := counter.Count("GET", harness.KindTags)
		b.Logf("%d repositories, %d tags: %d unique manifests, %d unique configs+layers; requests: %d manifest GET, %d manifest HEAD, %d blob GET, %d tag lists; %.2fs, peak RSS %.1f MiB",
			len(repos), sum.Tags, manifests, blobs, manGET, manHEAD, blobGET, tagGET, d.Seconds(), float64(rss)/(1<<20))
		b.ReportMetric(float64(blobGET)/float64(blobs), "blobGETs/unique_blob")
		b.ReportMetric(float64(manGET)/float64(manifests), "manifestGETs/unique_manifest")
		b.ReportMetric(float64(tagGET)/float64(len(repos)), "tagLists/repo")
		b.ReportMetric(float64(sum.Tags)/d.Seconds(), "tags/s")
		b.ReportMetric(float64(rss)/(1<<20), "peakRSS_MiB")
		b.StartTimer()
	}
}

// countBundle counts manifest blobs and other blobs in a bundle.
func countBundle(b *testing.B, path string) (manifests, blobs int) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var rec struct {
		Blobs []struct {
			MediaType string `json:"mediaType"`
		} `json:"blobs"`
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "ferry.json" {
			if err := json.NewDecoder(tr).Decode(&rec); err != nil {
				b.Fatal(err)
			}
			break
		}
	}
	for _, bl := range rec.Blobs {
		if strings.Contains(bl.MediaType, "manifest") || strings.Contains(bl.MediaType, "index") {
			manifests++
		} else {
			blobs++
		}
	}
	return manifests, blobs
}

// BenchmarkImportLargeLayer imports 1 GiB of layers into a loopback
// distribution registry, as one layer and as four, and reports throughput
// as a ratio to a plain copy of the bundle on the same disk and to one raw
// PUT of the same bytes into the same registry, and ferry's peak RSS.
// Targets (issue 3): ratio ≥ 0.8, peak RSS ≤ 150 MiB.
func BenchmarkImportLargeLayer(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("FERRY_BENCH_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	b.Run("1-layer", func(b *testing.B) { benchImport(b, size, 1) })
	b.Run("4-layers", func(b *testing.B) { benchImport(b, size, 4) })
}

func benchImport(b *testing.B, size int64, layers int) {
	bin := harness.BuildFerry(b)
	src := harness.StartRegistry(b, harness.RegistryOptions{})
	var set harness.FixtureSet
	for i := 0; i < layers; i++ {
		set.Specs = append(set.Specs, harness.FixtureSpec{Repo: "large/blob", Tag: fmt.Sprintf("v%d", i), Kind: harness.OCIImage, LargeLayer: size / int64(layers)})
	}
	harness.Seed(b, src, "", set)
	dir := b.TempDir()
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte("tasks:\n  - name: large\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: large/blob\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	bundlePath := filepath.Join(dir, "bundle.tar")
	measured(b, bin, nil, "export", "-q", "-f", mapping, "-o", bundlePath)
	st, err := os.Stat(bundlePath)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	b.ResetTimer()
	var ratio, putRatio, rssMiB float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst := harness.StartRegistry(b, harness.RegistryOptions{})
		copyTime := plainCopy(b, bundlePath, filepath.Join(dir, "copy"))
		_ = os.Remove(filepath.Join(dir, "copy"))
		putTime := rawPut(b, dst, bundlePath)
		dst2 := harness.StartRegistry(b, harness.RegistryOptions{})
		b.StartTimer()
		d, rss, _ := measured(b, bin, nil, "import", "-q", bundlePath, "--to", dst2.Host)
		b.StopTimer()
		ratio = copyTime.Seconds() / d.Seconds()
		putRatio = putTime.Seconds() / d.Seconds()
		rssMiB = float64(rss) / (1 << 20)
		b.Logf("bundle %d MiB: plain copy %.2fs (%.0f MiB/s), one raw PUT of the same bytes to the registry %.2fs (%.0f MiB/s), ferry import %.2fs (%.0f MiB/s); ratio %.2f to the copy, %.2f to the raw PUT; peak RSS %.1f MiB",
			st.Size()>>20, copyTime.Seconds(), float64(st.Size())/copyTime.Seconds()/(1<<20),
			putTime.Seconds(), float64(st.Size())/putTime.Seconds()/(1<<20),
			d.Seconds(), float64(st.Size())/d.Seconds()/(1<<20), ratio, putRatio, rssMiB)
		b.StartTimer()
	}
	b.ReportMetric(ratio, "ratio_vs_copy")
	b.ReportMetric(putRatio, "ratio_vs_rawPUT")
	b.ReportMetric(rssMiB, "peakRSS_MiB")
}

// rawPut uploads the file's bytes as one blob with a single monolithic PUT
// (what curl -T would do): the fastest any client can push into this
// registry, which bounds what import can reach.
func rawPut(b *testing.B, reg *harness.Registry, path string) time.Duration {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		b.Fatal(err)
	}
	digest := fmt.Sprintf("sha256:%x", h.Sum(nil))
	start := time.Now()
	resp, err := http.Post(reg.URL+"/v2/raw/put/blobs/uploads/", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = reg.URL + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+digest, f)
	st, _ := f.Stat()
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("raw PUT: %s", resp.Status)
	}
	return time.Since(start)
}
