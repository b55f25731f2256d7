package test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkVerifyDeep times `ferry verify --deep` on a bundle of four gzip
// layers of text-like content (96 MiB each uncompressed, about a third of
// that compressed) against `gzip -dc LAYER | sha256sum` of the same
// layers, one after the other, in the same run, and reports the ratio
// (yardstick time / ferry time; goal ≥ 2 on a 2-core machine: ferry
// inflates layers in parallel with klauspost/compress and hashes each
// layer's compressed and uncompressed bytes in the one read). Each command
// runs twice and the second run counts (warm page cache).
// FERRY_BENCH_DEEP_MIB sets each layer's uncompressed size (default 96).
func BenchmarkVerifyDeep(b *testing.B) {
	mib := int64(96)
	if s := os.Getenv("FERRY_BENCH_DEEP_MIB"); s != "" {
		fmt.Sscan(s, &mib)
	}
	bin := harness.BuildFerry(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "bundle.tar")
	layers, diffIDs := writeDeepBenchBundle(b, path, dir, 4, mib<<20)
	var script strings.Builder
	for _, l := range layers {
		fmt.Fprintf(&script, "gzip -dc < %s | sha256sum\n", l)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var ferry, yard runStats
		for pass := 0; pass < 2; pass++ {
			ferry = timedRun(b, bin, "verify", "--deep", "-q", path)
			yard = timedRun(b, "sh", "-c", script.String())
		}
		if !strings.Contains(ferry.stdout, "4 layers decompressed") {
			b.Fatalf("ferry verify --deep: %s", ferry.stdout)
		}
		for _, d := range diffIDs {
			if !strings.Contains(yard.stdout, d) {
				b.Fatalf("gzip -dc | sha256sum does not give diff_id %s:\n%s", d, yard.stdout)
			}
		}
		one := timedRun(b, bin, "verify", "--deep", "-q", "--jobs", "1", path)
		b.Logf("ferry verify --deep --jobs 1: wall %.2fs", one.wall.Seconds())
		ratio := yard.wall.Seconds() / ferry.wall.Seconds()
		un := float64(4 * mib)
		b.Logf("%s, %d CPUs, %s: 4 gzip layers, %.0f MiB uncompressed, bundle %.0f MiB; warm cache, second of two runs each",
			runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), time.Now().UTC().Format(time.DateOnly), un, float64(st.Size())/(1<<20))
		b.Logf("ferry verify --deep:      wall %.2fs (%.0f MiB/s uncompressed), cpu %.2fs, peak RSS %.1f MiB", ferry.wall.Seconds(), un/ferry.wall.Seconds(), ferry.cpu.Seconds(), float64(ferry.rss)/(1<<20))
		b.Logf("gzip -dc | sha256sum (x4): wall %.2fs (%.0f MiB/s uncompressed), cpu %.2fs", yard.wall.Seconds(), un/yard.wall.Seconds(), yard.cpu.Seconds())
		b.Logf("ratio (gzip -dc | sha256sum time / ferry verify --deep time): %.2f (goal ≥ 2)", ratio)
		b.ReportMetric(ratio, "ratio_vs_gzip_sha256sum")
		b.ReportMetric(un/ferry.wall.Seconds(), "deep_MiB/s")
		b.ReportMetric(float64(ferry.rss)/(1<<20), "peakRSS_MiB")
	}
}

// writeDeepBenchBundle writes a bundle of one image with n gzip layers of
// size uncompressed bytes each, and each layer also as a file in dir (for
// the yardstick). It returns those files and the layers' diff_ids.
func writeDeepBenchBundle(b *testing.B, path, dir string, n int, size int64) (files, diffIDs []string) {
	b.Helper()
	plan := &bundle.Plan{}
	var ids []v1.Hash
	type layer struct {
		data []byte
		d    v1.Hash
	}
	var ls []layer
	for i := 0; i < n; i++ {
		tb := textTar(b, fmt.Sprintf("deep-%d", i), size)
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		if _, err := zw.Write(tb); err != nil {
			b.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, hashOf(tb))
		diffIDs = append(diffIDs, hashOf(tb).Hex)
		ls = append(ls, layer{zb.Bytes(), hashOf(zb.Bytes())})
		f := filepath.Join(dir, fmt.Sprintf("layer-%d.gz", i))
		if err := os.WriteFile(f, zb.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		files = append(files, f)
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	type desc struct {
		MediaType types.MediaType `json:"mediaType"`
		Digest    v1.Hash         `json:"digest"`
		Size      int64           `json:"size"`
	}
	var lds []desc
	for _, l := range ls {
		lds = append(lds, desc{types.OCILayer, l.d, int64(len(l.data))})
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
		"config": desc{types.OCIConfigJSON, hashOf(cfg), int64(len(cfg))}, "layers": lds})
	plan.Blobs = append(plan.Blobs,
		bundle.PlannedBlob{Digest: hashOf(man), Size: int64(len(man)), MediaType: types.OCIManifestSchema1, Kind: bundle.KindManifest, Data: man, Origin: "bench"},
		bundle.PlannedBlob{Digest: hashOf(cfg), Size: int64(len(cfg)), MediaType: types.OCIConfigJSON, Kind: bundle.KindConfig, Data: cfg, Origin: "bench"})
	pi := bundle.PlannedImage{Image: bundle.Image{Source: "bench.example/deep:1", Target: "bench/deep", Tags: []string{"1"},
		Digest: hashOf(man).String(), MediaType: string(types.OCIManifestSchema1)}, Blobs: []v1.Hash{hashOf(man), hashOf(cfg)}}
	for _, l := range ls {
		plan.Blobs = append(plan.Blobs, bundle.PlannedBlob{Digest: l.d, Size: int64(len(l.data)), MediaType: types.OCILayer, Kind: bundle.KindLayer, Data: l.data, Origin: "bench"})
		pi.Blobs = append(pi.Blobs, l.d)
	}
	plan.Images = append(plan.Images, pi)
	if _, err := bundle.Write(context.Background(), path, plan); err != nil {
		b.Fatal(err)
	}
	return files, diffIDs
}

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// textTar is a tar of one file of about size bytes of seeded text-like
// lines (words from a small vocabulary, numbers): it compresses about as
// well as the binaries and text of real layers (3× or so).
func textTar(b *testing.B, name string, size int64) []byte {
	b.Helper()
	var seed [32]byte
	copy(seed[:], name)
	rng := rand.New(rand.NewChaCha8(seed))
	vocab := make([]string, 4096)
	for i := range vocab {
		w := make([]byte, 3+rng.IntN(8))
		for j := range w {
			w[j] = byte('a' + rng.IntN(26))
		}
		vocab[i] = string(w)
	}
	content := make([]byte, 0, size+64)
	for int64(len(content)) < size {
		switch rng.IntN(8) {
		case 0:
			content = fmt.Appendf(content, "%x ", rng.Uint64())
		case 1:
			content = append(content, '\n')
		default:
			content = append(content, vocab[rng.IntN(len(vocab))]...)
			content = append(content, ' ')
		}
	}
	content = content[:size]
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name + ".txt", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		b.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}
