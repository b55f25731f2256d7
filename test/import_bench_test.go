package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// RegsyncBinary is the yardstick of BenchmarkImportManySmall (regclient's
// regsync, installed by .ci/run); FERRY_REGSYNC overrides it.
const RegsyncBinary = "/root/go/bin/regsync"

// cloudforetImportSet is shaped like the set of the import issue: 50
// repositories, 351 tags (six versions and "latest" each, one repository
// with a seventh version), 57 of the 301 distinct images multi-arch
// (index + two images), so 415 manifests; shared OS and runtime layers, a
// per-repository base layer, and application layers of 32 KiB to 1.5 MiB
// (about 200 MB in all, ~820 distinct blobs).
func cloudforetImportSet() harness.FixtureSet {
	base := harness.ManySmallSet(50, 1) // for its repository names
	sizes := []int{32 << 10, 128 << 10, 512 << 10, 1536 << 10}
	var s []harness.FixtureSpec
	n := 0 // distinct images so far
	for i, first := range base.Specs {
		if first.AliasOf != "" {
			continue
		}
		repo := first.Repo
		versions := 6
		if len(s) == 0 {
			versions = 7
		}
		var last string
		for j := range versions {
			kind := harness.OCIImage
			if i%2 == 1 {
				kind = harness.DockerImage
			}
			if (n*57)%301 < 57 { // 57 of the 301 images, spread out
				kind = harness.OCIIndex
				if i%2 == 1 {
					kind = harness.DockerList
				}
			}
			last = fmt.Sprintf("1.%d.%d", 10+j/3, j%3)
			s = append(s, harness.FixtureSpec{Repo: repo, Tag: last, Kind: kind,
				Bases:   []string{"many-os", fmt.Sprintf("many-runtime-%d", i%4), "repo-" + repo},
				AppSize: sizes[n%len(sizes)]})
			n++
		}
		s = append(s, harness.FixtureSpec{Repo: repo, Tag: "latest", AliasOf: last})
	}
	return harness.FixtureSet{Name: "cloudforet-import", Specs: s}
}

// BenchmarkImportManySmall imports the Cloudforet-like set into an empty
// distribution registry with TLS and htpasswd auth (a robot$ user) and,
// in the same run and into the same kind of target, lets regsync copy the
// same set from a source registry: regsync copies registry to registry,
// ferry imports a bundle. It reports ferry's wall time as a ratio to
// regsync's (target ≤ 0.33), ferry's peak RSS (≤ 64 MiB), the requests
// per image at the target by kind (from the registry's access log) and
// what a second import of the same bundle sends (HEADs only).
func BenchmarkImportManySmall(b *testing.B) {
	regsync := RegsyncBinary
	if v := os.Getenv("FERRY_REGSYNC"); v != "" {
		regsync = v
	}
	if _, err := os.Stat(regsync); err != nil {
		b.Fatalf("regsync missing (%v): go install github.com/regclient/regclient/cmd/regsync@v0.11.7", err)
	}
	bin := harness.BuildFerry(b)
	src := harness.StartRegistry(b, harness.RegistryOptions{})
	set := cloudforetImportSet()
	fixtures := harness.Seed(b, src, "", set)
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
	manifests, blobs := countBundle(b, bundlePath)
	b.Logf("set: %d repositories, %d tags, %d manifests, %d distinct blobs", len(repos), len(fixtures), manifests, blobs)
	// What import's verification pass costs alone (it reads and hashes
	// every blob once before the upload pass reads and hashes it again).
	vst := timedRun(b, bin, "verify", "-q", bundlePath)
	b.Logf("verification pass alone (ferry verify): wall %.2fs, CPU %.2fs", vst.wall.Seconds(), vst.cpu.Seconds())
	b.Setenv("FERRY_PASSWORD", robotPW)
	b.Setenv("HOME", dir) // no docker config of the machine's user, for either tool
	rounds := benchRounds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Rounds alternate which tool goes first, and the ratio is of the
		// medians: the machine is shared, and its load moves the absolute
		// times a lot from one minute to the next.
		var fw, rw, bw []float64
		var r importRound
		for round := range rounds {
			r = importManySmallRound(b, bin, regsync, bundlePath, src, dir, repos, round%2 == 1)
			fw, rw = append(fw, r.ferry.wall.Seconds()), append(rw, r.regsync.wall.Seconds())
			b.Logf("round %d: regsync %.2fs (CPU %.2fs, RSS %.1f MiB); ferry import %.2fs (CPU %.2fs, RSS %.1f MiB): ratio %.2f", round+1,
				r.regsync.wall.Seconds(), r.regsync.cpu.Seconds(), float64(r.regsync.rss)/(1<<20),
				r.ferry.wall.Seconds(), r.ferry.cpu.Seconds(), float64(r.ferry.rss)/(1<<20), r.ferry.wall.Seconds()/r.regsync.wall.Seconds())
			b.Logf("round %d: registry CPU during regsync %.2fs target + %.2fs source (%.2f cores); during ferry %.2fs (%.2f cores)", round+1,
				r.regsyncReg.Seconds(), r.regsyncSrc.Seconds(), (r.regsyncReg+r.regsyncSrc).Seconds()/r.regsync.wall.Seconds(),
				r.ferryReg.Seconds(), r.ferryReg.Seconds()/r.ferry.wall.Seconds())
			if r.base.wall > 0 {
				bw = append(bw, r.base.wall.Seconds())
				b.Logf("round %d: baseline ferry import %.2fs (CPU %.2fs, RSS %.1f MiB): ratio %.2f", round+1,
					r.base.wall.Seconds(), r.base.cpu.Seconds(), float64(r.base.rss)/(1<<20), r.base.wall.Seconds()/r.regsync.wall.Seconds())
			}
		}
		b.StopTimer()
		ratio := median(fw) / median(rw)
		imgs := float64(r.images)
		b.Logf("median of %d rounds: regsync %.2fs, ferry import %.2fs: ratio %.2f", rounds, median(rw), median(fw), ratio)
		if len(bw) > 0 {
			b.Logf("median of %d rounds: baseline ferry import %.2fs: ratio %.2f", rounds, median(bw), median(bw)/median(rw))
			b.ReportMetric(median(bw)/median(rw), "baseline_ratio_vs_regsync")
		}
		b.Logf("ferry, %d images (%d tags): %s", r.images, len(fixtures), r.first.perImage(imgs))
		b.Logf("regsync, same set: %s", r.regs.perImage(imgs))
		b.Logf("ferry re-import (%.2fs): %s", r.again.wall.Seconds(), r.second)
		if w := r.second.writes(); w != 0 {
			b.Errorf("re-import sent %d requests other than HEADs and handshakes: %s", w, r.second)
		}
		b.ReportMetric(ratio, "ratio_vs_regsync")
		b.ReportMetric(float64(r.ferry.rss)/(1<<20), "peakRSS_MiB")
		b.ReportMetric(float64(r.first.total())/imgs, "requests/image")
		b.ReportMetric(float64(r.regs.total())/imgs, "regsync_requests/image")
		b.StartTimer()
	}
}

// importRound is one side-by-side run of BenchmarkImportManySmall.
type importRound struct {
	regsync, ferry, again runStats
	base                  runStats // FERRY_BENCH_BASELINE_BIN's import, when set
	// CPU time of the registries during each tool's run: ferry's target;
	// regsync's target and its source.
	ferryReg, regsyncReg, regsyncSrc time.Duration
	images                           int
	first, regs, second              kinds
}

// importManySmallRound starts two empty targets, lets regsync copy the set
// from src into one and ferry import the bundle into the other (ferry
// first when ferryFirst), then imports the bundle again.
func importManySmallRound(b *testing.B, bin, regsync, bundlePath string, src *harness.Registry, dir string, repos []string, ferryFirst bool) importRound {
	b.Helper()
	users := map[string]string{robot: robotPW}
	rdst := harness.StartRegistry(b, harness.RegistryOptions{TLS: true, Users: users, AccessLog: true})
	fdst := harness.StartRegistry(b, harness.RegistryOptions{TLS: true, Users: users, AccessLog: true})
	conf := regsyncConfig(b, dir, src, rdst, repos)
	args := []string{"import", "-q", "--json", bundlePath, "--to", fdst.Host, "--ca-cert", fdst.CAFile, "--username", robot}
	if jobs := os.Getenv("FERRY_BENCH_JOBS"); jobs != "" {
		args = append(args, "--jobs", jobs)
	}
	var r importRound
	if ferryFirst {
		// The baseline goes first where ferry does, last where it does not.
		r.base = baselineImport(b, args, fdst, users)
		r.ferry, r.ferryReg = withCPU(fdst, func() runStats { return timedRun(b, bin, args...) })
	}
	s0 := src.CPU()
	r.regsync, r.regsyncReg = withCPU(rdst, func() runStats { return timedRun(b, regsync, "once", "-v", "error", "-c", conf) })
	r.regsyncSrc = src.CPU() - s0
	if !ferryFirst {
		r.ferry, r.ferryReg = withCPU(fdst, func() runStats { return timedRun(b, bin, args...) })
	}
	var sum importSummary
	if err := json.Unmarshal([]byte(r.ferry.stdout), &sum); err != nil {
		b.Fatalf("import --json: %v", err)
	}
	if sum.Pushed != len(sum.Images) || sum.Failed != 0 {
		b.Fatalf("import: %d of %d images pushed, %d failed", sum.Pushed, len(sum.Images), sum.Failed)
	}
	r.images = len(sum.Images)
	r.first = requestKinds(fdst.Requests())
	r.regs = requestKinds(rdst.Requests())
	r.again = timedRun(b, bin, args...)
	r.second = requestKinds(fdst.Requests()).minus(r.first)
	if !ferryFirst {
		r.base = baselineImport(b, args, fdst, users)
	}
	return r
}

// withCPU runs f and returns what it returns and the CPU time reg used
// meanwhile.
func withCPU(reg *harness.Registry, f func() runStats) (runStats, time.Duration) {
	c0, s0 := reg.CPU(), selfCPU()
	st := f()
	if os.Getenv("FERRY_BENCH_SELF_CPU") != "" {
		fmt.Fprintf(os.Stderr, "bench process CPU meanwhile (reading the registries' logs): %.2fs\n", (selfCPU() - s0).Seconds())
	}
	return st, reg.CPU() - c0
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// baselineImport runs FERRY_BENCH_BASELINE_BIN's import (another ferry,
// say without a change) into a third empty target: with and without the
// change in the same round, same yardstick. Zero when it is not set.
func baselineImport(b *testing.B, args []string, fdst *harness.Registry, users map[string]string) runStats {
	b.Helper()
	base := os.Getenv("FERRY_BENCH_BASELINE_BIN")
	if base == "" {
		return runStats{}
	}
	bdst := harness.StartRegistry(b, harness.RegistryOptions{TLS: true, Users: users})
	bargs := slices.Clone(args)
	bargs[slices.Index(bargs, fdst.Host)], bargs[slices.Index(bargs, fdst.CAFile)] = bdst.Host, bdst.CAFile
	return timedRun(b, base, bargs...)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// regsyncConfig writes a regsync configuration that copies every
// repository from src (plain HTTP) to dst as the robot user, trusting
// dst's CA, with regsync's example parallelism.
func regsyncConfig(b *testing.B, dir string, src, dst *harness.Registry, repos []string) string {
	b.Helper()
	var c strings.Builder
	fmt.Fprintf(&c, "version: 1\ncreds:\n  - registry: %s\n    tls: disabled\n", src.Host)
	fmt.Fprintf(&c, "  - registry: %s\n    user: %s\n    pass: %s\n    regcert: |\n", dst.Host, strconv.Quote(robot), strconv.Quote(robotPW))
	for _, line := range strings.Split(strings.TrimSpace(string(dst.CA.CertPEM)), "\n") {
		fmt.Fprintf(&c, "      %s\n", line)
	}
	c.WriteString("defaults:\n  parallel: 2\n  skipDockerConfig: true\nsync:\n")
	for _, r := range repos {
		fmt.Fprintf(&c, "  - source: %s/%s\n    target: %s/%s\n    type: repository\n", src.Host, r, dst.Host, r)
	}
	return writeBenchFile(b, filepath.Join(dir, "regsync-"+dst.Host[strings.LastIndexByte(dst.Host, ':')+1:]+".yaml"), c.String())
}

func writeBenchFile(b *testing.B, path, content string) string {
	b.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// kinds counts a registry's requests by what they do.
type kinds map[string]int

// Request kinds of an import, as the target sees them.
const (
	kPing       = "ping"          // GET /v2/
	kBlobHEAD   = "blob HEAD"     // does the repository hold the blob?
	kMount      = "mount 201"     // cross-repository mount that worked
	kMountOpen  = "mount 202"     // mount request answered with an upload session
	kPOST       = "upload POST"   // plain upload session
	kPATCH      = "upload PATCH"  // chunk
	kPUT        = "upload PUT"    // upload finished
	kManHEAD    = "manifest HEAD" // survey
	kManPUT     = "manifest PUT"
	kManGET     = "manifest GET"
	kDELETE     = "upload DELETE" // a cancelled session (import's push-access check)
	kProbe      = "harbor probe"  // /api/... (import's Harbor detection)
	kTagList    = "tag list"      // GET /v2/NAME/tags/list (import's survey)
	kOther      = "other"
	kUnauthoriz = "401" // challenges (any kind), counted apart as well
)

func requestKinds(reqs []harness.Request) kinds {
	k := kinds{}
	for _, r := range reqs {
		if r.Status == http.StatusUnauthorized {
			k[kUnauthoriz]++
		}
		k[kindOf(r)]++
	}
	return k
}

func kindOf(r harness.Request) string {
	switch kind := harness.Kind(r.Path); {
	case kind == harness.KindPing:
		return kPing
	case kind == harness.KindBlob && r.Method == http.MethodHead:
		return kBlobHEAD
	case kind == harness.KindUpload && r.Method == http.MethodPost && strings.Contains(r.Path, "mount="):
		if r.Status == http.StatusCreated {
			return kMount
		}
		return kMountOpen
	case kind == harness.KindUpload && r.Method == http.MethodPost:
		return kPOST
	case kind == harness.KindUpload && r.Method == http.MethodPatch:
		return kPATCH
	case kind == harness.KindUpload && r.Method == http.MethodPut:
		return kPUT
	case kind == harness.KindManifest && r.Method == http.MethodHead:
		return kManHEAD
	case kind == harness.KindManifest && r.Method == http.MethodPut:
		return kManPUT
	case kind == harness.KindManifest && r.Method == http.MethodGet:
		return kManGET
	case kind == harness.KindUpload && r.Method == http.MethodDelete:
		return kDELETE
	case strings.HasPrefix(r.Path, "/api/"):
		return kProbe
	case kind == harness.KindTags:
		return kTagList
	}
	return kOther
}

func (k kinds) total() int {
	n := 0
	for name, c := range k {
		if name != kUnauthoriz {
			n += c
		}
	}
	return n
}

// writes counts what a re-import should not send: anything but HEADs and
// handshakes.
func (k kinds) writes() int {
	n := 0
	for name, c := range k {
		switch name {
		case kUnauthoriz, kPing, kProbe, kBlobHEAD, kManHEAD, kTagList:
		default:
			n += c
		}
	}
	return n
}

func (k kinds) minus(o kinds) kinds {
	out := kinds{}
	for name, c := range k {
		if d := c - o[name]; d != 0 {
			out[name] = d
		}
	}
	return out
}

func (k kinds) names() []string {
	var out []string
	for name := range k {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (k kinds) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "%d requests:", k.total())
	for _, name := range k.names() {
		fmt.Fprintf(&s, " %s=%d", name, k[name])
	}
	return s.String()
}

// perImage lists each kind as a total and per image.
func (k kinds) perImage(images float64) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%d requests (%.2f per image):", k.total(), float64(k.total())/images)
	for _, name := range k.names() {
		fmt.Fprintf(&s, " %s=%d (%.2f)", name, k[name], float64(k[name])/images)
	}
	return s.String()
}
