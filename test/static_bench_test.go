package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkUnpackStatic unpacks a bundle holding one image with a 1 GiB
// layer (FERRY_BENCH_LAYER_BYTES to change it) into a static registry
// tree, and reports its speed as a ratio to a plain copy (with fsync) of
// the bundle file on the same disk, ferry's peak RSS, and the time of a
// rerun over the finished tree (which writes nothing: the journal proves
// every file current without reading it). Target: ratio ≥ 0.8.
func BenchmarkUnpackStatic(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("FERRY_BENCH_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	harness.Seed(b, reg, "", harness.LargeLayerSet(size))
	dir := b.TempDir()
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte("tasks:\n  - name: large\n    source:\n      registry: "+reg.Host+"\n    mappings:\n      - from: large/blob\n        tags: [latest]\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	bundlePath := filepath.Join(dir, "bundle.tar")
	if stdout, stderr, code := harness.Run(b, bin, "export", "-q", "-f", mapping, "-o", bundlePath); code != 0 {
		b.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	st, err := os.Stat(bundlePath)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	b.ResetTimer()
	var ratio, rssMiB, rerun float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// Each side starts with nothing dirty in the page cache: the
		// export (or the other side) must not slow it down by its writeback.
		syscall.Sync()
		copyTime := plainCopy(b, bundlePath, filepath.Join(dir, "copy"))
		_ = os.Remove(filepath.Join(dir, "copy"))
		tree := filepath.Join(dir, fmt.Sprintf("tree-%d", i))
		syscall.Sync()
		b.StartTimer()
		d, rss, _ := measured(b, bin, nil, "unpack", "-q", "--static", tree, bundlePath)
		b.StopTimer()
		again, _, out := measured(b, bin, nil, "unpack", "-q", "--json", "--static", tree, bundlePath)
		if want := `"blobsWritten": 0`; !strings.Contains(out, want) {
			b.Fatalf("rerun wrote blobs: %s", out)
		}
		_ = os.RemoveAll(tree)
		ratio = copyTime.Seconds() / d.Seconds()
		rssMiB = float64(rss) / (1 << 20)
		rerun = again.Seconds()
		b.Logf("bundle %d MiB: plain copy %.2fs (%.0f MiB/s), ferry unpack --static %.2fs (%.0f MiB/s), ratio %.2f, peak RSS %.1f MiB; rerun %.2fs",
			st.Size()>>20, copyTime.Seconds(), float64(st.Size())/copyTime.Seconds()/(1<<20),
			d.Seconds(), float64(st.Size())/d.Seconds()/(1<<20), ratio, rssMiB, rerun)
		b.StartTimer()
	}
	b.ReportMetric(ratio, "ratio_vs_copy")
	b.ReportMetric(rssMiB, "peakRSS_MiB")
	b.ReportMetric(rerun, "rerun_s")
}
