package test

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkVerifyDeep times `ferry verify --deep` on a bundle of four gzip
// layers against `gzip -dc LAYER | sha256sum` of the same layers, one
// after the other, in the same run, and reports the ratio (yardstick time
// / ferry time; goal ≥ 2 on a 2-core machine: ferry inflates layers in
// parallel with its own inflater, internal/inflate, and hashes each
// layer's compressed and uncompressed bytes in the one read). Two sets of
// layers, each its own sub-benchmark:
//
//   - text: seeded word-salad text, 96 MiB per layer uncompressed; it
//     compresses only 1.87×, literal-heavy, the slow case for inflaters.
//   - real: tars of real files of this machine (/usr/bin, the multiarch
//     /usr/lib directory, /usr/share, GOROOT; one directory per layer, in
//     walk order, up to 96 MiB each), gzip at the default level as image
//     builders write them. Skipped, saying why, where a directory gives
//     less than half of that.
//
// Each command runs twice and the second run counts (warm page cache);
// FERRY_BENCH_ROUNDS rounds (default 3) rotate which command goes first,
// and the median round's ratio is reported. FERRY_BENCH_BASELINE_BIN runs
// another ferry build in the same rounds (A/B). FERRY_BENCH_DEEP_MIB sets
// each layer's uncompressed size (default 96).
func BenchmarkVerifyDeep(b *testing.B) {
	size := int64(96) << 20
	if s := os.Getenv("FERRY_BENCH_DEEP_MIB"); s != "" {
		var mib int64
		fmt.Sscan(s, &mib)
		size = mib << 20
	}
	bin := harness.BuildFerry(b)
	b.Run("text", func(b *testing.B) {
		var tars [][]byte
		for i := 0; i < 4; i++ {
			tars = append(tars, textTar(b, fmt.Sprintf("deep-%d", i), size))
		}
		benchDeepSet(b, bin, "seeded word-salad text", tars)
	})
	b.Run("real", func(b *testing.B) {
		tars, why := realTars(b, size)
		if why != "" {
			b.Skipf("realistic set skipped: %s", why)
		}
		benchDeepSet(b, bin, "real files (/usr/bin, /usr/lib multiarch, /usr/share, GOROOT)", tars)
	})
	// The text set again, as zstd layers against `zstd -dc | sha256sum`:
	// for information (the goal is set for gzip).
	b.Run("text-zstd", func(b *testing.B) {
		var tars [][]byte
		for i := 0; i < 4; i++ {
			tars = append(tars, textTar(b, fmt.Sprintf("deep-%d", i), size))
		}
		benchDeepSetCodec(b, bin, "seeded word-salad text", tars, zstdCodec)
	})
}

// deepCodec is how the benchmark's layers are compressed, and the
// command-line decompressor of the yardstick.
type deepCodec struct {
	name     string // gzip, zstd
	mt       types.MediaType
	compress func([]byte) ([]byte, error)
	yard     string // decompresses stdin to stdout
}

var (
	gzipCodec = deepCodec{"gzip", types.OCILayer, func(tb []byte) ([]byte, error) {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		if _, err := zw.Write(tb); err != nil {
			return nil, err
		}
		err := zw.Close()
		return zb.Bytes(), err
	}, "gzip -dc"}
	zstdCodec = deepCodec{"zstd", types.OCILayerZStd, func(tb []byte) ([]byte, error) {
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(tb, nil), nil
	}, "zstd -dc"}
)

// deepRound is one round's second runs: this ferry, the baseline (when
// FERRY_BENCH_BASELINE_BIN is set) and the yardstick.
type deepRound struct {
	ferry, base, yard runStats
}

// benchDeepSet writes a bundle of the gzip-compressed tars and times
// ferry verify --deep (and the baseline) against the yardstick in rotating
// rounds.
func benchDeepSet(b *testing.B, bin, what string, tars [][]byte) {
	benchDeepSetCodec(b, bin, what, tars, gzipCodec)
}

func benchDeepSetCodec(b *testing.B, bin, what string, tars [][]byte, codec deepCodec) {
	b.Helper()
	dir := b.TempDir()
	path := filepath.Join(dir, "bundle.tar")
	layers, diffIDs := writeDeepBenchBundle(b, path, dir, tars, codec)
	var script strings.Builder
	for _, l := range layers {
		fmt.Fprintf(&script, "%s < %s | sha256sum\n", codec.yard, l)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var un float64
	for _, t := range tars {
		un += float64(len(t)) / (1 << 20)
	}
	base := os.Getenv("FERRY_BENCH_BASELINE_BIN")
	want := fmt.Sprintf("%d layers decompressed", len(tars))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.Logf("%s, %d CPUs, %s: %d %s layers of %s, %.0f MiB uncompressed, bundle %.0f MiB (%.2f×); warm cache, second of two runs each; load before: %s",
			runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), time.Now().UTC().Format(time.DateOnly), len(tars), codec.name, what, un, float64(st.Size())/(1<<20), un/(float64(st.Size())/(1<<20)), loadAvg())
		rounds := deepRounds(b, bin, base, path, script.String(), codec.yard)
		for _, r := range rounds {
			if !strings.Contains(r.ferry.stdout, want) || (base != "" && !strings.Contains(r.base.stdout, want)) {
				b.Fatalf("ferry verify --deep: %s / %s", r.ferry.stdout, r.base.stdout)
			}
			for _, d := range diffIDs {
				if !strings.Contains(r.yard.stdout, d) {
					b.Fatalf("%s | sha256sum does not give diff_id %s:\n%s", codec.yard, d, r.yard.stdout)
				}
			}
		}
		// One layer at a time: what a bundle of one big layer gets.
		one := timedRun(b, bin, "verify", "--deep", "-q", "--jobs", "1", path)
		line := fmt.Sprintf("ferry verify --deep --jobs 1: wall %.2fs, cpu %.2fs", one.wall.Seconds(), one.cpu.Seconds())
		if base != "" {
			one = timedRun(b, base, "verify", "--deep", "-q", "--jobs", "1", path)
			line += fmt.Sprintf("; baseline --jobs 1: wall %.2fs, cpu %.2fs", one.wall.Seconds(), one.cpu.Seconds())
		}
		b.Logf("%s; load after: %s", line, loadAvg())
		ratio, mr := medianRound(rounds, func(r deepRound) runStats { return r.ferry })
		b.Logf("median round: ferry verify --deep: wall %.2fs (%.0f MiB/s uncompressed), cpu %.2fs, peak RSS %.1f MiB", mr.ferry.wall.Seconds(), un/mr.ferry.wall.Seconds(), mr.ferry.cpu.Seconds(), float64(mr.ferry.rss)/(1<<20))
		b.Logf("median round: %s | sha256sum (x%d): wall %.2fs (%.0f MiB/s uncompressed), cpu %.2fs", codec.yard, len(tars), mr.yard.wall.Seconds(), un/mr.yard.wall.Seconds(), mr.yard.cpu.Seconds())
		b.Logf("ratio (%s | sha256sum time / ferry verify --deep time), median of %d rounds: %.2f (goal ≥ 2 for gzip)", codec.yard, len(rounds), ratio)
		b.ReportMetric(ratio, "ratio_vs_"+codec.name+"_sha256sum")
		b.ReportMetric(un/mr.ferry.wall.Seconds(), "deep_MiB/s")
		b.ReportMetric(float64(mr.ferry.rss)/(1<<20), "peakRSS_MiB")
		if base != "" {
			bratio, br := medianRound(rounds, func(r deepRound) runStats { return r.base })
			b.Logf("baseline %s: ratio, median of %d rounds: %.2f (wall %.2fs, cpu %.2fs, peak RSS %.1f MiB)", base, len(rounds), bratio, br.base.wall.Seconds(), br.base.cpu.Seconds(), float64(br.base.rss)/(1<<20))
			b.ReportMetric(bratio, "baseline_ratio")
		}
	}
}

// deepRounds runs FERRY_BENCH_ROUNDS rounds of this ferry, the baseline
// (if any) and the yardstick, each twice with the second run counting,
// rotating which goes first, and logs every round (on one line).
func deepRounds(b *testing.B, bin, base, path, script, yard string) []deepRound {
	b.Helper()
	var rounds []deepRound
	for r := range benchRounds() {
		var cur deepRound
		runs := []func(){
			func() { cur.ferry = timedRun(b, bin, "verify", "--deep", "-q", path) },
			func() { cur.yard = timedRun(b, "sh", "-c", script) },
		}
		if base != "" {
			runs = append(runs, func() { cur.base = timedRun(b, base, "verify", "--deep", "-q", path) })
		}
		for k := range runs {
			run := runs[(k+r)%len(runs)]
			run()
			run() // the second run counts
		}
		rounds = append(rounds, cur)
	}
	// One line for all rounds: go test keeps only a benchmark's first 10
	// lines of log.
	var line strings.Builder
	fmt.Fprintf(&line, "rounds (wall, cpu; ratio = yardstick wall / ferry wall):")
	for i, r := range rounds {
		fmt.Fprintf(&line, " [%d] ferry %.2fs (cpu %.2fs) ratio %.2f", i+1, r.ferry.wall.Seconds(), r.ferry.cpu.Seconds(), r.yard.wall.Seconds()/r.ferry.wall.Seconds())
		if base != "" {
			fmt.Fprintf(&line, ", baseline %.2fs (cpu %.2fs) ratio %.2f", r.base.wall.Seconds(), r.base.cpu.Seconds(), r.yard.wall.Seconds()/r.base.wall.Seconds())
		}
		fmt.Fprintf(&line, ", %s | sha256sum %.2fs (cpu %.2fs);", yard, r.yard.wall.Seconds(), r.yard.cpu.Seconds())
	}
	b.Log(line.String())
	return rounds
}

// medianRound returns the median of the rounds' ratios (yardstick time /
// the time of the ferry which picks) and the round that has it (the upper
// middle one for an even count).
func medianRound(rounds []deepRound, which func(deepRound) runStats) (float64, deepRound) {
	rs := slices.Clone(rounds)
	ratio := func(r deepRound) float64 { return r.yard.wall.Seconds() / which(r).wall.Seconds() }
	slices.SortFunc(rs, func(x, y deepRound) int { return cmp.Compare(ratio(x), ratio(y)) })
	m := rs[len(rs)/2]
	return ratio(m), m
}

// loadAvg is /proc/loadavg's 1, 5 and 15-minute load averages.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// writeDeepBenchBundle writes a bundle of one image with a layer of each
// tar, compressed by codec (klauspost's default level), and each layer
// also as a file in dir (for the yardstick). It returns those files and
// the layers' diff_ids.
func writeDeepBenchBundle(b *testing.B, path, dir string, tars [][]byte, codec deepCodec) (files, diffIDs []string) {
	b.Helper()
	plan := &bundle.Plan{}
	var ids []v1.Hash
	type layer struct {
		data []byte
		d    v1.Hash
	}
	var ls []layer
	for i, tb := range tars {
		zb, err := codec.compress(tb)
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, hashOf(tb))
		diffIDs = append(diffIDs, hashOf(tb).Hex)
		ls = append(ls, layer{zb, hashOf(zb)})
		f := filepath.Join(dir, fmt.Sprintf("layer-%d.%s", i, codec.name))
		if err := os.WriteFile(f, zb, 0o644); err != nil {
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
		lds = append(lds, desc{codec.mt, l.d, int64(len(l.data))})
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
		"config": desc{types.OCIConfigJSON, hashOf(cfg), int64(len(cfg))}, "layers": lds})
	plan.Blobs = append(plan.Blobs,
		bundle.PlannedBlob{Digest: hashOf(man), Size: int64(len(man)), MediaType: types.OCIManifestSchema1, Kind: bundle.KindManifest, Data: man, Origin: "bench"},
		bundle.PlannedBlob{Digest: hashOf(cfg), Size: int64(len(cfg)), MediaType: types.OCIConfigJSON, Kind: bundle.KindConfig, Data: cfg, Origin: "bench"})
	pi := bundle.PlannedImage{Image: bundle.Image{Source: "bench.example/deep:1", Target: "bench/deep", Tags: []string{"1"},
		Digest: hashOf(man).String(), MediaType: string(types.OCIManifestSchema1)}, Blobs: []v1.Hash{hashOf(man), hashOf(cfg)}}
	for _, l := range ls {
		plan.Blobs = append(plan.Blobs, bundle.PlannedBlob{Digest: l.d, Size: int64(len(l.data)), MediaType: codec.mt, Kind: bundle.KindLayer, Data: l.data, Origin: "bench"})
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
// lines (random words from a vocabulary of 4096, hex numbers): it
// compresses only 1.87×, worse than real layers (2.5× and more), with
// short matches between many literals, the slowest case for an inflater.
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

// realTars makes one tar per directory of real files on this machine
// (/usr/bin, the multiarch /usr/lib directory, /usr/share, GOROOT), each of
// up to size bytes, the way an image layer holds them: directories,
// symlinks and regular files in walk order, with their modes and times.
// It returns why not, instead, when a directory is missing or gives less
// than half of size.
func realTars(b *testing.B, size int64) ([][]byte, string) {
	b.Helper()
	libdir := "/usr/lib"
	if triplet, ok := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]; ok {
		libdir += "/" + triplet
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Sprintf("go env GOROOT: %v", err)
	}
	var tars [][]byte
	for _, d := range []string{"/usr/bin", libdir, "/usr/share", strings.TrimSpace(string(goroot))} {
		tb, err := dirTar(d, size)
		if err != nil {
			return nil, fmt.Sprintf("%s: %v", d, err)
		}
		if int64(len(tb)) < size/2 {
			return nil, fmt.Sprintf("%s gives only %.0f MiB of files, less than half of the %d MiB a layer needs (FERRY_BENCH_DEEP_MIB)", d, float64(len(tb))/(1<<20), size>>20)
		}
		tars = append(tars, tb)
	}
	return tars, ""
}

// dirTar tars dir's directories, symlinks and regular files (those it can
// read) in walk order, leaving out files that would take the tar past size.
func dirTar(dir string, size int64) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable: left out
		}
		fi, err := d.Info()
		if err != nil || !(fi.Mode().IsRegular() || fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0) {
			return nil
		}
		if int64(buf.Len())+fi.Size()+2048 > size {
			if buf.Len() > int(size)-64<<10 {
				return fs.SkipAll
			}
			return nil
		}
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil
			}
		}
		var data []byte
		if fi.Mode().IsRegular() {
			if data, err = os.ReadFile(p); err != nil || int64(len(data)) != fi.Size() {
				return nil
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil
		}
		hdr.Name = strings.TrimPrefix(p, "/")
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
