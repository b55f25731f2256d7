package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkVerify times `ferry verify` on a ~600 MiB bundle (four 128 MiB
// layers, eight images with an 8 MiB layer) against `sha256sum` of the same
// file, and reports the throughput ratio (sha256sum time / ferry time;
// target ≥ 1.0) and ferry's peak RSS. Each command runs twice and the
// second run counts: both read from a warm page cache, so the figures
// compare hashing, not the disk. FERRY_BENCH_VERIFY_MIB sets the size of the
// four large layers (default 128).
func BenchmarkVerify(b *testing.B) {
	large := int64(128)
	if s := os.Getenv("FERRY_BENCH_VERIFY_MIB"); s != "" {
		fmt.Sscan(s, &large)
	}
	bin := harness.BuildFerry(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "bundle.tar")
	writeBenchBundle(b, path, 4, large<<20, 8, 8<<20)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	// No b.SetBytes: ns/op times the whole loop (four runs and more); the
	// reported metrics are what count.
	b.ResetTimer()
	var ratio float64
	for i := 0; i < b.N; i++ {
		var ferry, sum runStats
		for pass := 0; pass < 2; pass++ { // the second pass counts (warm cache)
			ferry = timedRun(b, bin, "verify", "-q", path)
			sum = timedRun(b, "sha256sum", path)
		}
		if !strings.Contains(ferry.stdout, "OK:") {
			b.Fatalf("ferry verify: %s", ferry.stdout)
		}
		// Context, not metrics: one hashing job, and a SHA-NI-capable hasher.
		one := timedRun(b, bin, "verify", "-q", "--jobs", "1", path)
		b.Logf("ferry verify --jobs 1: wall %.2fs", one.wall.Seconds())
		if _, err := exec.LookPath("openssl"); err == nil {
			o := timedRun(b, "openssl", "dgst", "-sha256", path)
			b.Logf("openssl dgst -sha256: wall %.2fs", o.wall.Seconds())
		}
		ratio = sum.wall.Seconds() / ferry.wall.Seconds()
		mib := float64(st.Size()) / (1 << 20)
		b.Logf("%s, %d CPUs, %s: bundle %.0f MiB; warm cache, second of two runs each", runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), time.Now().UTC().Format(time.DateOnly), mib)
		b.Logf("ferry verify: wall %.2fs (%.0f MiB/s), cpu %.2fs, peak RSS %.1f MiB", ferry.wall.Seconds(), mib/ferry.wall.Seconds(), ferry.cpu.Seconds(), float64(ferry.rss)/(1<<20))
		b.Logf("sha256sum:    wall %.2fs (%.0f MiB/s), cpu %.2fs, peak RSS %.1f MiB", sum.wall.Seconds(), mib/sum.wall.Seconds(), sum.cpu.Seconds(), float64(sum.rss)/(1<<20))
		b.Logf("ratio (sha256sum time / ferry verify time): %.2f (target ≥ 1.0)", ratio)
		b.ReportMetric(ratio, "ratio_vs_sha256sum")
		b.ReportMetric(float64(ferry.rss)/(1<<20), "peakRSS_MiB")
		b.ReportMetric(mib/ferry.wall.Seconds(), "verify_MiB/s")
		b.ReportMetric(mib/sum.wall.Seconds(), "sha256sum_MiB/s")
	}
}

type runStats struct {
	wall, cpu, user, sys time.Duration // cpu = user + sys
	rss                  int64
	stdout               string
}

// timedRun runs a command and returns its wall and CPU time and peak RSS.
// The peak is the largest VmHWM read from /proc while it runs (sampled
// every 10 ms by peakRSS; VmHWM only grows, so only what a process adds in
// its last 10 ms could be missed): rusage's Maxrss cannot be used, as
// Linux carries the parent's RSS over a vfork+exec, so every child of a
// test binary would seem at least as large as the test binary.
func timedRun(b *testing.B, name string, args ...string) runStats {
	b.Helper()
	cmd := exec.Command(name, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	done := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		peak <- peakRSS(cmd.Process.Pid, done)
	}()
	err := cmd.Wait()
	close(done)
	s := runStats{wall: time.Since(start), stdout: out.String(), rss: <-peak}
	if err != nil {
		b.Fatalf("%s %v: %v\n%s\n%s", name, args, err, out.String(), errb.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.user, s.sys = time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
		s.cpu = s.user + s.sys
	}
	return s
}

// peakRSS returns the largest VmHWM of process pid read until done is
// closed. It keeps /proc/pid/status open and rereads it with pread into one
// buffer, looking only for the VmHWM line, so that the sampling itself
// costs the shared cores little while the tools are measured (about 1 % of
// a core here; the earlier loop, every 2 ms with Sscanf, took 7 %).
func peakRSS(pid int, done <-chan struct{}) int64 {
	var max int64
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		<-done
		return 0
	}
	defer f.Close()
	buf := make([]byte, 8<<10)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if n, _ := f.ReadAt(buf, 0); n > 0 {
			if kb := vmHWM(buf[:n]); kb*1024 > max {
				max = kb * 1024
			}
		}
		select {
		case <-done:
			return max
		case <-tick.C:
		}
	}
}

// vmHWM returns the kB figure of the "VmHWM:" line of a /proc status text.
func vmHWM(status []byte) int64 {
	_, rest, ok := bytes.Cut(status, []byte("\nVmHWM:"))
	if !ok {
		return 0
	}
	var kb int64
	for _, c := range bytes.TrimLeft(rest, " \t") {
		if c < '0' || c > '9' {
			break
		}
		kb = kb*10 + int64(c-'0')
	}
	return kb
}

// writeBenchBundle writes a bundle straight from synthetic streamed layers
// (no registry): one image holding nLarge layers of largeSize bytes, and
// nSmall images with one layer of smallSize bytes each.
func writeBenchBundle(b *testing.B, path string, nLarge int, largeSize int64, nSmall int, smallSize int64) {
	b.Helper()
	plan := &bundle.Plan{}
	var layers []v1.Layer
	for i := 0; i < nLarge; i++ {
		layers = append(layers, harness.NewStreamLayer(fmt.Sprintf("verify-large-%d", i), largeSize))
	}
	addImage(b, plan, "bench/large", layers)
	for i := 0; i < nSmall; i++ {
		addImage(b, plan, fmt.Sprintf("bench/small-%d", i), []v1.Layer{harness.NewStreamLayer(fmt.Sprintf("verify-small-%d", i), smallSize)})
	}
	if _, err := bundle.Write(context.Background(), path, plan, bundle.WithJobs(4)); err != nil {
		b.Fatal(err)
	}
}

func addImage(b *testing.B, plan *bundle.Plan, target string, layers []v1.Layer) {
	b.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		b.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	raw, err := img.RawManifest()
	if err != nil {
		b.Fatal(err)
	}
	d, _ := img.Digest()
	cfg, _ := img.RawConfigFile()
	cd, _ := img.ConfigName()
	plan.Blobs = append(plan.Blobs,
		bundle.PlannedBlob{Digest: d, Size: int64(len(raw)), MediaType: types.OCIManifestSchema1, Kind: bundle.KindManifest, Data: raw, Origin: "bench"},
		bundle.PlannedBlob{Digest: cd, Size: int64(len(cfg)), MediaType: types.OCIConfigJSON, Kind: bundle.KindConfig, Data: cfg, Origin: "bench"})
	pi := bundle.PlannedImage{Image: bundle.Image{Source: "bench.example/" + target + ":1", Target: target, Tags: []string{"1"},
		Digest: d.String(), MediaType: string(types.OCIManifestSchema1)}, Blobs: []v1.Hash{d, cd}}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			b.Fatal(err)
		}
		sz, _ := l.Size()
		pi.Blobs = append(pi.Blobs, ld)
		plan.Blobs = append(plan.Blobs, bundle.PlannedBlob{Digest: ld, Size: sz, MediaType: types.OCIUncompressedLayer, Kind: bundle.KindLayer, Origin: "bench",
			Open: func(context.Context) (io.ReadCloser, error) { return l.Compressed() }})
	}
	plan.Images = append(plan.Images, pi)
}
