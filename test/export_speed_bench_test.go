//go:build linux

package test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferry-airgap/ferry/test/harness"
)

// reflinkOffered says whether the filesystem of dir clones file extents
// (FICLONE), and so whether a kernel copy there shares extents or copies
// the data.
func reflinkOffered(dir string) bool {
	a, err := os.CreateTemp(dir, "reflink-a-*")
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	_, _ = a.Write(make([]byte, 4096))
	c, err := os.CreateTemp(dir, "reflink-b-*")
	if err != nil {
		return false
	}
	defer os.Remove(c.Name())
	defer c.Close()
	return unix.IoctlFileClone(int(c.Fd()), int(a.Fd())) == nil
}

// speedSet is the bench's image set: one large layer (1 GiB) and n images
// of medium layers (128 MiB) in their own repositories: about 2.5 GiB of
// unique layers by default. FERRY_BENCH_SPEED_SCALE divides every size
// (e.g. 8 for a quick look).
func speedSet() (harness.FixtureSet, int64) {
	scale := int64(1)
	if s := os.Getenv("FERRY_BENCH_SPEED_SCALE"); s != "" {
		fmt.Sscan(s, &scale)
	}
	scale = max(scale, 1)
	large, medium, n := int64(1<<30)/scale, int64(128<<20)/scale, 12
	set := harness.FixtureSet{Name: "speed", Specs: []harness.FixtureSpec{{Repo: "big/one", Tag: "1", Kind: harness.OCIImage, LargeLayer: large}}}
	for i := 0; i < n; i++ {
		set.Specs = append(set.Specs, harness.FixtureSpec{Repo: fmt.Sprintf("svc/s%02d", i), Tag: "1", Kind: harness.OCIImage, LargeLayer: medium})
	}
	return set, large + int64(n)*medium
}

// ddCopy copies src with dd conv=fsync (the yardstick) and removes the
// copy.
func ddCopy(b *testing.B, src, dst string) time.Duration {
	b.Helper()
	syscall.Sync()
	st := timedRun(b, "dd", "if="+src, "of="+dst, "bs=1M", "conv=fsync", "status=none")
	_ = os.Remove(dst)
	return st.wall
}

// BenchmarkExportCacheSpeed measures an export with --cache as cron users
// run it, on ~2.5 GiB of layers with one 1 GiB layer, against dd
// conv=fsync of the finished bundle on the same disk in the same run:
//
//   - first export with an empty cache, as a ratio to dd (target ≥ 0.8);
//   - the same without --cache (it must not get slower);
//   - an unchanged re-export onto the same output, as a ratio to the first
//     export's time (target ≤ 0.15): the output is up to date;
//   - a re-export to another path: the blobs are copied from the cache's
//     record of the first bundle, in the kernel (ratio to dd, sys time).
//
// Peak RSS target: ≤ 64 MiB. Whether the filesystem offers reflinks is
// printed beside the figures.
func BenchmarkExportCacheSpeed(b *testing.B) {
	bin := harness.BuildFerry(b)
	reg := harness.StartRegistry(b, harness.RegistryOptions{})
	set, total := speedSet()
	harness.Seed(b, reg, "", set)
	dir := b.TempDir()
	var y strings.Builder
	y.WriteString("tasks:\n  - name: speed\n    source:\n      registry: " + reg.Host + "\n    mappings:\n")
	for _, sp := range set.Specs {
		y.WriteString("      - from: " + sp.Repo + "\n        tags: ['" + sp.Tag + "']\n")
	}
	mapping := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(mapping, []byte(y.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	reflink := reflinkOffered(dir)
	// The registry's storage read once, so that the first measured run
	// does not pay for a cold page cache that later runs do not.
	_ = filepath.WalkDir(reg.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if f, err := os.Open(p); err == nil {
				_, _ = io.Copy(io.Discard, f)
				_ = f.Close()
			}
		}
		return nil
	})
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cache := filepath.Join(dir, fmt.Sprintf("cache-%d", i))
		out := filepath.Join(dir, "bundle.tar")
		exportWith := func(bin string, args ...string) runStats {
			syscall.Sync() // no writeback of an earlier step in this one's time
			return timedRun(b, bin, append([]string{"export", "-q", "--json", "-f", mapping}, args...)...)
		}
		export := func(args ...string) runStats { return exportWith(bin, args...) }
		b.StartTimer()
		first, dd, ratio := firstExports(b, export, out, cache, dir)
		b.StopTimer()
		noCache := export("-o", filepath.Join(dir, "nocache.tar"))
		ddNoCache := ddCopy(b, filepath.Join(dir, "nocache.tar"), filepath.Join(dir, "dd-copy"))
		removeBundle(filepath.Join(dir, "nocache.tar"))
		again := export("-o", out, "--cache", cache)
		if !strings.Contains(again.stdout, `"upToDate": true`) {
			b.Fatalf("the unchanged re-export was not up to date:\n%s", again.stdout)
		}
		other := export("-o", filepath.Join(dir, "other.tar"), "--cache", cache)
		ddOther := ddCopy(b, filepath.Join(dir, "other.tar"), filepath.Join(dir, "dd-copy"))
		removeBundle(filepath.Join(dir, "other.tar"))
		removeBundle(out)
		_ = os.RemoveAll(cache)
		if base := os.Getenv("FERRY_BENCH_BASELINE_BIN"); base != "" {
			compareFirstExports(b, bin, base, out, cache, dir, exportWith)
		}
		var sum struct {
			Bytes int64 `json:"bundleSize"`
		}
		_ = json.Unmarshal([]byte(first.stdout), &sum)
		b.Logf("bundle %d MiB on %s (reflink %v, copy_file_range in the kernel): dd conv=fsync %.2fs (%.0f MiB/s)",
			sum.Bytes>>20, fsName(dir), reflink, dd.Seconds(), float64(sum.Bytes)/dd.Seconds()/(1<<20))
		b.Logf("first export --cache (median of the rounds' ratios; the round shown is the median one): %.2fs = %.2f of dd, user %.2fs, sys %.2fs, peak RSS %.1f MiB", first.wall.Seconds(), ratio, first.user.Seconds(), first.sys.Seconds(), float64(first.rss)/(1<<20))
		b.Logf("first export without --cache: %.2fs = %.2f of dd (%.2fs), user %.2fs, sys %.2fs, peak RSS %.1f MiB", noCache.wall.Seconds(), ddNoCache.Seconds()/noCache.wall.Seconds(), ddNoCache.Seconds(), noCache.user.Seconds(), noCache.sys.Seconds(), float64(noCache.rss)/(1<<20))
		b.Logf("unchanged re-export (up to date): %.2fs = %.3f of the first", again.wall.Seconds(), again.wall.Seconds()/first.wall.Seconds())
		b.Logf("re-export to another path from the cache: %.2fs = %.2f of dd (%.2fs), user %.2fs, sys %.2fs, peak RSS %.1f MiB", other.wall.Seconds(), ddOther.Seconds()/other.wall.Seconds(), ddOther.Seconds(), other.user.Seconds(), other.sys.Seconds(), float64(other.rss)/(1<<20))
		b.ReportMetric(ratio, "first_vs_dd")
		b.ReportMetric(first.sys.Seconds(), "first_sys_s")
		b.ReportMetric(ddNoCache.Seconds()/noCache.wall.Seconds(), "nocache_vs_dd")
		b.ReportMetric(again.wall.Seconds()/first.wall.Seconds(), "uptodate_vs_first")
		b.ReportMetric(ddOther.Seconds()/other.wall.Seconds(), "otherpath_vs_dd")
		b.ReportMetric(other.sys.Seconds(), "otherpath_sys_s")
		b.ReportMetric(float64(max(first.rss, noCache.rss, again.rss, other.rss))/(1<<20), "peakRSS_MiB")
		if reflink {
			b.ReportMetric(1, "reflink")
		} else {
			b.ReportMetric(0, "reflink")
		}
		b.StartTimer()
	}
}

// benchRounds is FERRY_BENCH_ROUNDS, default 3.
func benchRounds() int {
	rounds := 3
	if v := os.Getenv("FERRY_BENCH_ROUNDS"); v != "" {
		fmt.Sscan(v, &rounds)
	}
	return max(rounds, 1)
}

// firstExports runs the first export with --cache (empty cache, no
// output yet) FERRY_BENCH_ROUNDS times, each followed by its dd
// yardstick, and returns the median round by ratio to dd: the disk of a
// shared machine moves a lot from one minute to the next, and a round
// compares an export only with the dd that ran right after it. The last
// round's bundle and cache are left in place for the re-exports.
func firstExports(b *testing.B, export func(...string) runStats, out, cache, dir string) (runStats, time.Duration, float64) {
	b.Helper()
	type round struct {
		st    runStats
		dd    time.Duration
		ratio float64
	}
	var rs []round
	for r := range benchRounds() {
		if r > 0 {
			removeBundle(out)
			_ = os.RemoveAll(cache)
		}
		st := export("-o", out, "--cache", cache)
		dd := ddCopy(b, out, filepath.Join(dir, "dd-copy"))
		rs = append(rs, round{st, dd, dd.Seconds() / st.wall.Seconds()})
		b.Logf("first export --cache, round %d: %.2fs, sys %.2fs; dd %.2fs: %.2f of dd", r+1, st.wall.Seconds(), st.sys.Seconds(), dd.Seconds(), rs[r].ratio)
	}
	slices.SortFunc(rs, func(x, y round) int { return cmp.Compare(x.ratio, y.ratio) })
	m := rs[len(rs)/2]
	return m.st, m.dd, m.ratio
}

// compareFirstExports runs the first export with --cache of this ferry and
// of another build (FERRY_BENCH_BASELINE_BIN, e.g. without a change)
// FERRY_BENCH_ROUNDS times each (default 3), alternating which goes
// first, each followed by its dd yardstick, and logs the medians: on a
// shared machine the disk's speed moves a lot from one minute to the next.
func compareFirstExports(b *testing.B, bin, base, out, cache, dir string, exportWith func(string, ...string) runStats) {
	b.Helper()
	rounds := benchRounds()
	var ratios [2][]float64
	var walls, syss [2][]float64
	for r := range rounds {
		for k := range 2 {
			which := (k + r) % 2 // 0: this build, 1: the baseline
			exe := bin
			if which == 1 {
				exe = base
			}
			st := exportWith(exe, "-o", out, "--cache", cache)
			dd := ddCopy(b, out, filepath.Join(dir, "dd-copy"))
			removeBundle(out)
			_ = os.RemoveAll(cache)
			ratios[which] = append(ratios[which], dd.Seconds()/st.wall.Seconds())
			walls[which] = append(walls[which], st.wall.Seconds())
			syss[which] = append(syss[which], st.sys.Seconds())
			b.Logf("round %d, %s: first export --cache %.2fs, sys %.2fs; dd %.2fs: %.2f of dd", r+1, exe, st.wall.Seconds(), st.sys.Seconds(), dd.Seconds(), dd.Seconds()/st.wall.Seconds())
		}
	}
	for which, name := range []string{bin, base} {
		b.Logf("median of %d rounds, %s: first export --cache %.2fs, sys %.2fs: %.2f of dd", rounds, name, median(walls[which]), median(syss[which]), median(ratios[which]))
	}
	b.ReportMetric(median(ratios[1]), "baseline_first_vs_dd")
}

func removeBundle(path string) {
	_ = os.Remove(path)
	_ = os.Remove(path + ".sha256")
}

// fsName names the filesystem type of dir, for the figures.
func fsName(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "?"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}
