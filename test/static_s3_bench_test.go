package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkUnpackStaticS3 times `ferry unpack --static s3://` of a bundle
// into a real SeaweedFS bucket against the yardstick issue 24 names: plain
// object puts of the same files, `aws s3 sync`-style (a Go loop with the
// same client, minio-go, and as many puts at once as ferry's --jobs, 4),
// of the tree ferry writes on disk for the same bundle (every file under
// v2/, as a sync of the directory uploads them). Two bundles: one image
// with a 512 MiB layer (FERRY_BENCH_S3_LAYER_BYTES) under one name, and
// the same image under two names, where the tree holds the layer twice and
// ferry uploads it once and copies it on the server. Each side writes into
// a bucket of its own. It reports the ratio (yardstick time / ferry time)
// for each, ferry's peak RSS, and the time of a rerun (which lists the
// bucket and writes nothing). No target is set by the issue: the figures
// go to docs/benchmarks.md.
func BenchmarkUnpackStaticS3(b *testing.B) {
	size := int64(512 << 20)
	if s := os.Getenv("FERRY_BENCH_S3_LAYER_BYTES"); s != "" {
		fmt.Sscan(s, &size)
	}
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	harness.Seed(b, reg, "", harness.LargeLayerSet(size))
	sw := harness.StartSeaweed(b)
	for _, kv := range sw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	dir := b.TempDir()
	cases := []struct {
		name  string
		names []string
	}{{"one name", []string{"site/a"}}, {"two names", []string{"site/a", "site/b"}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range cases {
			b.StopTimer()
			bundlePath := exportUnder(b, bin, reg, dir, c.names)
			tree := filepath.Join(dir, "tree")
			_ = os.RemoveAll(tree)
			if _, stderr, code := harness.Run(b, bin, "unpack", "-q", "--static", tree, bundlePath); code != 0 {
				b.Fatalf("unpack to disk: exit %d\n%s", code, stderr)
			}
			// SeaweedFS makes a bucket's first volumes on its first write:
			// a small object outside the tree's prefix pays for that first.
			loopBucket, ferryBucket := warmBucket(b, sw), warmBucket(b, sw)
			b.StartTimer()
			loop, files, bytes := putTree(b, sw, loopBucket, tree, 4)
			ferry := timedRun(b, bin, "unpack", "-q", "--json", "--static", "s3://"+ferryBucket+"/tree", "--s3-endpoint", sw.Endpoint, bundlePath)
			b.StopTimer()
			again := timedRun(b, bin, "unpack", "-q", "--json", "--static", "s3://"+ferryBucket+"/tree", "--s3-endpoint", sw.Endpoint, bundlePath)
			if !strings.Contains(again.stdout, `"filesWritten": 0`) || !strings.Contains(again.stdout, `"blobsWritten": 0`) {
				b.Fatalf("rerun wrote: %s", again.stdout)
			}
			ratio := loop.Seconds() / ferry.wall.Seconds()
			b.Logf("%s: plain puts of %d files (%d MiB) %.2fs (%.0f MiB/s); ferry unpack --static s3:// %.2fs (CPU %.2fs), ratio %.2f, peak RSS %.1f MiB; rerun %.2fs",
				c.name, files, bytes>>20, loop.Seconds(), float64(bytes)/loop.Seconds()/(1<<20), ferry.wall.Seconds(), ferry.cpu.Seconds(),
				ratio, float64(ferry.rss)/(1<<20), again.wall.Seconds())
			metric := strings.ReplaceAll(c.name, " ", "_")
			b.ReportMetric(ratio, "ratio_vs_puts_"+metric)
			b.ReportMetric(float64(ferry.rss)/(1<<20), "peakRSS_MiB_"+metric)
			b.ReportMetric(again.wall.Seconds(), "rerun_s_"+metric)
			b.StartTimer()
		}
	}
}

// exportUnder exports large/blob:latest under each of names (one mapping
// per name) and returns the bundle.
func exportUnder(b *testing.B, bin string, reg *harness.Registry, dir string, names []string) string {
	b.Helper()
	var y strings.Builder
	y.WriteString("tasks:\n")
	for i, n := range names {
		fmt.Fprintf(&y, "  - name: t%d\n    source:\n      registry: %s\n    mappings:\n      - from: large/blob\n        to: %s\n        tags: [latest]\n", i, reg.Host, n)
	}
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte(y.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("bundle-%d.tar", len(names)))
	if stdout, stderr, code := harness.Run(b, bin, "export", "-q", "-f", mapping, "-o", out); code != 0 {
		b.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	return out
}

// warmBucket makes a bucket and writes one small object into it, outside
// the prefix the benchmark writes to.
func warmBucket(b *testing.B, sw *harness.Seaweed) string {
	b.Helper()
	name := sw.Bucket(b)
	st, err := sw.Store(b, name)
	if err == nil {
		_, err = st.Put(context.Background(), "warm", strings.NewReader("warm"), 4, objstore.PutOptions{})
	}
	if err != nil {
		b.Fatal(err)
	}
	return name
}

// putTree puts every file under tree/v2 into bucket under tree/ (key =
// its path under tree), jobs at a time, and returns the time, files and
// bytes. The tag list pages, which the tree on S3 does not have, are left
// out.
func putTree(b *testing.B, sw *harness.Seaweed, bucket, tree string, jobs int) (time.Duration, int, int64) {
	b.Helper()
	st, err := sw.Store(b, bucket)
	if err != nil {
		b.Fatal(err)
	}
	var files []string
	err = filepath.Walk(filepath.Join(tree, "v2"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !strings.Contains(p, "/tags/first/") && !strings.Contains(p, "/tags/after/") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var total int64
	start := time.Now()
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(jobs)
	for _, p := range files {
		g.Go(func() error {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(tree, p)
			if _, err := st.Put(ctx, "tree/"+filepath.ToSlash(rel), f, fi.Size(), objstore.PutOptions{ContentType: "application/octet-stream"}); err != nil {
				return err
			}
			mu.Lock()
			total += fi.Size()
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("plain puts: %v", err)
	}
	return time.Since(start), len(files), total
}
