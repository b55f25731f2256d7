package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// BenchmarkHarborImport imports the Cloudforet-like set (351 tags, see
// cloudforetImportSet) into a real Harbor (harness.StartHarbor) and, in
// the same round, lets regsync copy the same set from a source registry
// into the same Harbor; each tool gets a fresh project, made through the
// API before it starts. Both talk to Harbor through a counting proxy (the
// same cost for both). It reports ferry's wall time as a ratio to
// regsync's (median of FERRY_BENCH_ROUNDS rounds, which alternate who goes
// first), the requests each sends, the CPU time Harbor's services use
// during each (core, its registry, PostgreSQL with every backend it forked,
// Redis) and what a re-import sends (HEADs and handshakes only).
func BenchmarkHarborImport(b *testing.B) {
	regsync := RegsyncBinary
	if v := os.Getenv("FERRY_REGSYNC"); v != "" {
		regsync = v
	}
	if _, err := os.Stat(regsync); err != nil {
		b.Fatalf("regsync missing (%v): go install github.com/regclient/regclient/cmd/regsync@v0.11.7", err)
	}
	h := harness.StartHarbor(b)
	bin := harness.BuildFerry(b)
	src := harness.StartRegistry(b, harness.RegistryOptions{})
	fixtures := harness.Seed(b, src, "", cloudforetImportSet())
	repos := harness.Repos(fixtures)
	dir := b.TempDir()
	var m strings.Builder
	fmt.Fprintf(&m, "tasks:\n  - name: cloudforet\n    source:\n      registry: %s\n    mappings:\n", src.Host)
	for _, r := range repos {
		fmt.Fprintf(&m, "      - from: %s\n", r)
	}
	mapping := writeBenchFile(b, filepath.Join(dir, "m.yaml"), m.String())
	bundlePath := filepath.Join(dir, "cloudforet.tar")
	measured(b, bin, nil, "export", "-q", "-f", mapping, "-o", bundlePath)
	b.Logf("set: %d repositories, %d tags", len(repos), len(fixtures))
	b.Setenv("FERRY_PASSWORD", h.AdminPassword)
	b.Setenv("HOME", dir) // no docker config of the machine's user, for either tool
	rounds := benchRounds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var fw, rw []float64
		var r harborRound
		for round := range rounds {
			r = harborImportRound(b, h, bin, regsync, bundlePath, src, dir, repos, round%2 == 0)
			fw, rw = append(fw, r.ferry.wall.Seconds()), append(rw, r.regsync.wall.Seconds())
			b.Logf("round %d: regsync %.2fs (CPU %.2fs); ferry import %.2fs (CPU %.2fs): ratio %.2f", round+1,
				r.regsync.wall.Seconds(), r.regsync.cpu.Seconds(), r.ferry.wall.Seconds(), r.ferry.cpu.Seconds(),
				r.ferry.wall.Seconds()/r.regsync.wall.Seconds())
			b.Logf("round %d: Harbor CPU during regsync: %s", round+1, cpuString(r.regsyncCPU, r.regsync.wall))
			b.Logf("round %d: Harbor CPU during ferry:   %s", round+1, cpuString(r.ferryCPU, r.ferry.wall))
		}
		b.StopTimer()
		ratio := median(fw) / median(rw)
		imgs := float64(r.images)
		b.Logf("median of %d rounds: regsync %.2fs, ferry import %.2fs: ratio %.2f", rounds, median(rw), median(fw), ratio)
		b.Logf("ferry, %d images (%d tags): %s", r.images, len(fixtures), r.first.perImage(imgs))
		b.Logf("regsync, same set: %s", r.regs.perImage(imgs))
		b.Logf("requests: ferry %d, regsync %d: ratio %.2f", r.first.total(), r.regs.total(), float64(r.first.total())/float64(r.regs.total()))
		b.Logf("ferry re-import (%.2fs): %s; Harbor CPU meanwhile: %s", r.again.wall.Seconds(), r.second, cpuString(r.againCPU, r.again.wall))
		b.Logf("requests of no known kind: ferry %v; regsync %v", r.otherF, r.otherR)
		if w := r.second.writes() - r.second[kToken]; w != 0 {
			b.Errorf("re-import sent %d requests other than HEADs and handshakes: %s", w, r.second)
		}
		b.ReportMetric(ratio, "ratio_vs_regsync")
		b.ReportMetric(float64(r.first.total())/imgs, "requests/image")
		b.ReportMetric(float64(r.regs.total())/imgs, "regsync_requests/image")
		b.ReportMetric(sumCPU(r.ferryCPU).Seconds(), "harbor_cpu_s_ferry")
		b.ReportMetric(sumCPU(r.regsyncCPU).Seconds(), "harbor_cpu_s_regsync")
		b.StartTimer()
	}
}

// harborRound is one side-by-side run of BenchmarkHarborImport.
type harborRound struct {
	regsync, ferry, again          runStats
	ferryCPU, regsyncCPU, againCPU map[string]time.Duration // Harbor's, by service
	images                         int
	first, regs, second            kinds
	otherF, otherR                 []string // first few requests of no known kind
}

// harborImportRound makes two fresh projects, lets regsync copy the set
// from src into one and ferry import the bundle into the other (ferry
// first when ferryFirst), each through its own counting proxy, then
// imports the bundle again.
func harborImportRound(b *testing.B, h *harness.Harbor, bin, regsync, bundlePath string, src *harness.Registry, dir string, repos []string, ferryFirst bool) harborRound {
	b.Helper()
	fproj, rproj := h.NewProject(b, "bench-ferry"), h.NewProject(b, "bench-regsync")
	ffront, fcount := harness.CountingProxy(b, h.Registry())
	rfront, rcount := harness.CountingProxy(b, h.Registry())
	conf := harborRegsyncConfig(b, dir, src, rfront.Host, rproj, h.Admin, h.AdminPassword, repos)
	args := []string{"import", "-q", "--json", bundlePath, "--to", ffront.Host + "/" + fproj, "--plain-http", "--username", h.Admin}
	var r harborRound
	runFerry := func() { r.ferry, r.ferryCPU = withHarborCPU(h, func() runStats { return timedRun(b, bin, args...) }) }
	if ferryFirst {
		runFerry()
	}
	r.regsync, r.regsyncCPU = withHarborCPU(h, func() runStats { return timedRun(b, regsync, "once", "-v", "error", "-c", conf) })
	if !ferryFirst {
		runFerry()
	}
	var sum importSummary
	if err := json.Unmarshal([]byte(r.ferry.stdout), &sum); err != nil {
		b.Fatalf("import --json: %v\n%s", err, r.ferry.stdout)
	}
	if sum.Pushed != len(sum.Images) || sum.Failed != 0 {
		b.Fatalf("import: %d of %d images pushed, %d failed", sum.Pushed, len(sum.Images), sum.Failed)
	}
	r.images = len(sum.Images)
	r.first, r.regs = harborKinds(fcount.Requests()), harborKinds(rcount.Requests())
	r.otherF, r.otherR = otherPaths(fcount.Requests()), otherPaths(rcount.Requests())
	r.otherR = r.otherR[:min(len(r.otherR), 5)]
	if n := len(h.Repositories(b, rproj)); n != len(repos) {
		b.Fatalf("regsync left %d of %d repositories in Harbor", n, len(repos))
	}
	fcount.Reset()
	r.again, r.againCPU = withHarborCPU(h, func() runStats { return timedRun(b, bin, args...) })
	r.second = harborKinds(fcount.Requests())
	return r
}

// kToken is a request to Harbor's token service, which the proxy sees
// too (Harbor's realm is on its own host): a handshake.
const kToken = "token"

// harborKinds is requestKinds with Harbor's token requests counted apart,
// and the requests of no known kind logged by path.
func harborKinds(reqs []harness.Request) kinds {
	var rest []harness.Request
	k := kinds{}
	for _, r := range reqs {
		if strings.HasPrefix(r.Path, "/service/token") {
			k[kToken]++
			continue
		}
		rest = append(rest, r)
	}
	for name, n := range requestKinds(rest) {
		k[name] += n
	}
	return k
}

// otherPaths lists the requests requestKinds calls "other", for the log.
func otherPaths(reqs []harness.Request) []string {
	var out []string
	for _, r := range reqs {
		if !strings.HasPrefix(r.Path, "/service/token") && kindOf(r) == kOther {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}

// withHarborCPU runs f and returns what it returns and the CPU time each
// of Harbor's services used meanwhile.
func withHarborCPU(h *harness.Harbor, f func() runStats) (runStats, map[string]time.Duration) {
	c0 := h.CPU()
	st := f()
	c1 := h.CPU()
	out := map[string]time.Duration{}
	for name, c := range c1 {
		out[name] = c - c0[name]
	}
	return st, out
}

func sumCPU(m map[string]time.Duration) time.Duration {
	var t time.Duration
	for _, c := range m {
		t += c
	}
	return t
}

// cpuString is "41.2s (1.35 cores): core 14.1s, postgres 7.0s, ...".
func cpuString(m map[string]time.Duration, wall time.Duration) string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	var s strings.Builder
	total := sumCPU(m)
	fmt.Fprintf(&s, "%.1fs (%.2f cores):", total.Seconds(), total.Seconds()/wall.Seconds())
	for _, name := range names {
		fmt.Fprintf(&s, " %s %.1fs", name, m[name].Seconds())
	}
	return s.String()
}

// harborRegsyncConfig writes a regsync configuration that copies every
// repository from src (plain HTTP) to target/PROJECT (Harbor, plain HTTP)
// as user, with regsync's example parallelism.
func harborRegsyncConfig(b *testing.B, dir string, src *harness.Registry, target, project, user, password string, repos []string) string {
	b.Helper()
	var c strings.Builder
	fmt.Fprintf(&c, "version: 1\ncreds:\n  - registry: %s\n    tls: disabled\n", src.Host)
	fmt.Fprintf(&c, "  - registry: %s\n    tls: disabled\n    user: %s\n    pass: %s\n", target, strconv.Quote(user), strconv.Quote(password))
	c.WriteString("defaults:\n  parallel: 2\n  skipDockerConfig: true\nsync:\n")
	for _, r := range repos {
		fmt.Fprintf(&c, "  - source: %s/%s\n    target: %s/%s/%s\n    type: repository\n", src.Host, r, target, project, r)
	}
	return writeBenchFile(b, filepath.Join(dir, "regsync-"+project+".yaml"), c.String())
}
