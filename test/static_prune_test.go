package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// pruneSet: app/web v1, v2, v3 share two base layers and have a layer of
// their own each; app/old is only in the first bundle; app/multi (an
// index) in both.
func pruneSet() harness.FixtureSet {
	return harness.FixtureSet{Name: "prune", Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "v1", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 200 << 10},
		{Repo: "app/web", Tag: "v2", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 300 << 10},
		{Repo: "app/web", Tag: "v3", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 100 << 10},
		{Repo: "app/old", Tag: "1.0", Kind: harness.DockerImage, Bases: []string{"os"}, AppSize: 50 << 10},
		{Repo: "app/multi", Tag: "2.0", Kind: harness.OCIIndex, Bases: []string{"os"}},
	}}
}

// exportTags exports the given tags of each repository (under proj/, as
// exportAll names them) into dir/name.
func exportTags(t *testing.T, bin string, reg *harness.Registry, dir, name string, tags map[string][]string) string {
	t.Helper()
	var y strings.Builder
	y.WriteString("tasks:\n  - name: " + name + "\n    source:\n      registry: " + reg.Host + "\n    mappings:\n")
	repos := make([]string, 0, len(tags))
	for r := range tags {
		repos = append(repos, r)
	}
	sort.Strings(repos)
	for _, r := range repos {
		fmt.Fprintf(&y, "      - from: %s\n        to: proj/%s\n        tags: ['%s']\n", r, r, strings.Join(tags[r], "', '"))
	}
	mapping := writeFile(t, filepath.Join(dir, name+".yaml"), y.String())
	out := filepath.Join(dir, name+".tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", out); code != 0 {
		t.Fatalf("export %s: exit %d\n%s\n%s", name, code, stdout, stderr)
	}
	return out
}

// pruneStatic runs ferry unpack --prune --json with extra arguments and
// returns its "pruned" object.
func pruneStatic(t *testing.T, bin, tree, addr string, args ...string) map[string]any {
	t.Helper()
	all := append([]string{"unpack", "-q", "--json", "--static", tree, "--listen", addr, "--prune"}, args...)
	stdout, stderr, code := harness.Run(t, bin, all...)
	if code != 0 {
		t.Fatalf("ferry %s: exit %d\n%s\n%s", strings.Join(all, " "), code, stdout, stderr)
	}
	var sum struct {
		Pruned map[string]any `json:"pruned"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || sum.Pruned == nil {
		t.Fatalf("ferry unpack --prune --json: %v\n%s", err, stdout)
	}
	return sum.Pruned
}

type treeFile struct {
	dev, ino uint64
	size     int64
	digest   string
}

// listTree maps every regular file under dir to its inode, size and
// content digest.
func listTree(t *testing.T, dir string) map[string]treeFile {
	t.Helper()
	out := map[string]treeFile{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = treeFile{uint64(sys.Dev), uint64(sys.Ino), st.Size(), sha256Hex(data)} //nolint:unconvert // types differ by platform
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hashTree hashes every path and content under dir, .ferry/ included.
func hashTree(t *testing.T, dir string) string {
	t.Helper()
	fs := listTree(t, dir)
	paths := make([]string, 0, len(fs))
	for p := range fs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		fmt.Fprintf(h, "%s %s %d\n", p, fs[p].digest, fs[p].ino)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// freed is the size of the files of before whose every name is gone in
// after: the bytes a prune gave back.
func freed(before, after map[string]treeFile) int64 {
	alive := map[[2]uint64]bool{}
	for p, f := range after {
		if b, ok := before[p]; ok && b.ino == f.ino {
			alive[[2]uint64{f.dev, f.ino}] = true
		}
	}
	seen := map[[2]uint64]bool{}
	var n int64
	for p, f := range before {
		k := [2]uint64{f.dev, f.ino}
		if _, ok := after[p]; ok || alive[k] || seen[k] {
			continue
		}
		seen[k] = true
		n += f.size
	}
	return n
}

// pullLoop pulls repo:tag through nginx again and again until stop is
// closed; it returns the pulls done and the first problem met.
func pullLoop(addr, repo, tag, want string, stop <-chan struct{}) (pulls int, problem error) {
	for {
		select {
		case <-stop:
			return pulls, nil
		default:
		}
		if err := pullThrough(addr, repo, tag, want); err != nil {
			return pulls, err
		}
		pulls++
	}
}

// pullThrough pulls repo:tag (a single-platform image) through nginx as a
// client does, manifest then config and layers, checking that every
// answer is 200 and every body hashes to its digest.
func pullThrough(addr, repo, tag, want string) error {
	get := func(path, digest string) ([]byte, error) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v2/"+repo+path, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		if got := "sha256:" + sha256Hex(body); got != digest {
			return nil, fmt.Errorf("GET %s: body is %s, want %s", path, got, digest)
		}
		return body, nil
	}
	body, err := get("/manifests/"+tag, want)
	if err != nil {
		return err
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		if _, err := get("/blobs/"+d, d); err != nil {
			return err
		}
	}
	return nil
}

// TestStaticPrune: a tree unpacked from bundle A (app/web v1, v2; app/old;
// app/multi) is pruned to bundle B (app/web v2, v3; app/multi) while a
// client pulls v2 through nginx in a loop. The dry run before changes no
// byte and predicts the bytes freed exactly; afterwards v1 and app/old are
// gone from the lists and answer 404, their own blobs are deleted, the
// shared ones kept, and v2, v3 and the index pull exact with crane and
// skopeo. --keep then keeps a tag B does not carry.
func TestStaticPrune(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, reg, "", pruneSet())
	byRef := map[string]harness.Fixture{}
	for _, f := range fx {
		byRef[f.Ref()] = f
	}
	dir := t.TempDir()
	bundleA := exportTags(t, bin, reg, dir, "a", map[string][]string{"app/web": {"v1", "v2"}, "app/old": {"1.0"}, "app/multi": {"2.0"}})
	bundleB := exportTags(t, bin, reg, dir, "b", map[string][]string{"app/web": {"v2", "v3"}, "app/multi": {"2.0"}})
	tree := filepath.Join(dir, "tree")
	addr := loopbackAddr(t)
	unpackStatic(t, bin, tree, addr, bundleA)
	ngx := startNginx(t, filepath.Join(tree, "nginx.conf"), addr)
	web := "http://" + addr + "/v2/proj/app/web/"

	// The dry run: nothing changes, and it names what goes.
	before := hashTree(t, tree)
	was := listTree(t, tree)
	dry := pruneStatic(t, bin, tree, addr, "--dry-run", bundleB)
	if hashTree(t, tree) != before {
		t.Fatal("--dry-run changed the tree")
	}
	if dry["dryRun"] != true || fmt.Sprint(dry["tags"]) != "[proj/app/old:1.0 proj/app/web:v1]" || fmt.Sprint(dry["repositories"]) != "[proj/app/old]" {
		t.Errorf("dry run: %v", dry)
	}

	// The prune, while a client pulls v2 (kept) through nginx.
	stop := make(chan struct{})
	var pulls atomic.Int64
	var pullErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := pullLoop(addr, "proj/app/web", "v2", byRef["app/web:v2"].Digest, stop)
		pulls.Store(int64(n))
		pullErr = err
	}()
	got := pruneStatic(t, bin, tree, addr, bundleB)
	// One more whole pull after the prune, then stop.
	if err := pullThrough(addr, "proj/app/web", "v2", byRef["app/web:v2"].Digest); err != nil {
		t.Errorf("pull of v2 after the prune: %v", err)
	}
	close(stop)
	wg.Wait()
	if pullErr != nil {
		t.Errorf("a pull of the kept v2 during the prune failed: %v", pullErr)
	}
	t.Logf("%d pulls of v2 ran during the prune", pulls.Load())
	after := listTree(t, tree)
	if f := freed(was, after); f == 0 || dry["bytesFreed"] != float64(f) || got["bytesFreed"] != float64(f) {
		t.Errorf("bytes freed: dry run says %v, prune says %v, the files removed held %d", dry["bytesFreed"], got["bytesFreed"], f)
	}
	for _, k := range []string{"tags", "manifests", "blobs", "files", "repositories"} {
		if fmt.Sprint(dry[k]) != fmt.Sprint(got[k]) {
			t.Errorf("%s: dry run said %v, the prune did %v", k, dry[k], got[k])
		}
	}
	checkPruned(t, tree, addr, byRef, after)
	ngx.reload(t)
	waitForDigest(t, web+"manifests/v3", byRef["app/web:v3"].Digest)
	checkPrunedServed(t, dir, addr, byRef)

	// --keep: unpack A again (v1 and app/old come back), prune to B but keep v1.
	unpackStatic(t, bin, tree, addr, bundleA)
	kept := pruneStatic(t, bin, tree, addr, "--keep", "v1", bundleB)
	if fmt.Sprint(kept["kept"]) != "[proj/app/web:v1]" || fmt.Sprint(kept["tags"]) != "[proj/app/old:1.0]" {
		t.Errorf("--keep v1: %v", kept)
	}
	ngx.reload(t)
	waitForDigest(t, web+"manifests/v1", byRef["app/web:v1"].Digest)
	if p := getTagPage(t, addr, "/v2/proj/app/web/tags/list"); !slices.Equal(p.tags, []string{"v1", "v2", "v3"}) {
		t.Errorf("tags/list with --keep v1: %v", p.tags)
	}
	checkMovedTag(t, bin, reg, dir, tree, addr, ngx, byRef["app/web:v2"].Digest)
	checkPruneUsage(t, bin, dir, bundleB)
}

// checkMovedTag: v2 is pushed again upstream and a prune moves it. Until
// nginx reloads, it serves v2 from the old manifest, whole (the prune
// keeps what the loaded nginx.conf names); after the reload, the new one;
// the next prune removes the old manifest.
func checkMovedTag(t *testing.T, bin string, reg *harness.Registry, dir, tree, addr string, ngx *nginxServer, oldV2 string) {
	t.Helper()
	moved := harness.Seed(t, reg, "", harness.FixtureSet{Name: "prune-moved", Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "v2", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 150 << 10},
	}})
	bundleC := exportTags(t, bin, reg, dir, "c", map[string][]string{"app/web": {"v2", "v3"}, "app/multi": {"2.0"}})
	pruneStatic(t, bin, tree, addr, bundleC)
	if err := pullThrough(addr, "proj/app/web", "v2", oldV2); err != nil {
		t.Errorf("v2 before nginx reloads, after a prune that moved it: %v", err)
	}
	ngx.reload(t)
	waitForDigest(t, "http://"+addr+"/v2/proj/app/web/manifests/v2", moved[0].Digest)
	if err := pullThrough(addr, "proj/app/web", "v2", moved[0].Digest); err != nil {
		t.Errorf("v2 after the reload: %v", err)
	}
	again := pruneStatic(t, bin, tree, addr, bundleC)
	if !strings.Contains(fmt.Sprint(again["manifests"]), "proj/app/web@"+oldV2) {
		t.Errorf("the next prune kept v2's old manifest: %v", again)
	}
}

// checkPruneUsage: --prune on a folder ferry did not write, --keep
// without --prune and a --keep that is no regular expression exit 2 and
// change nothing.
func checkPruneUsage(t *testing.T, bin, dir, bundle string) {
	t.Helper()
	site := filepath.Join(dir, "site")
	if err := os.MkdirAll(filepath.Join(site, "v2/proj/app/web/manifests"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(site, "v2/proj/app/web/manifests/v1"), "someone's")
	writeFile(t, filepath.Join(site, "index.html"), "<html>")
	before := hashTree(t, site)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--static", site, "--prune"}, "not a ferry tree"},
		{[]string{"--static", site, "--keep", "v1"}, "--keep and --dry-run go with --prune"},
		{[]string{"--static", site, "--dry-run"}, "--keep and --dry-run go with --prune"},
		{[]string{"--static", filepath.Join(dir, "tree"), "--prune", "--keep", "("}, "not a regular expression"},
	} {
		stdout, stderr, code := harness.Run(t, bin, append(append([]string{"unpack", "-q"}, c.args...), bundle)...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("unpack %v: exit %d, want 2 and %q\n%s\n%s", c.args, code, c.want, stdout, stderr)
		}
	}
	if hashTree(t, site) != before {
		t.Error("a refused prune changed the folder")
	}
}

// checkPruned checks the files: v1's own layer and app/old are gone,
// the shared bases and every kept image's blobs are there.
func checkPruned(t *testing.T, tree, addr string, byRef map[string]harness.Fixture, after map[string]treeFile) {
	t.Helper()
	store := func(d string) bool { _, ok := after["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]; return ok }
	v1, v2 := byRef["app/web:v1"], byRef["app/web:v2"]
	shared := map[string]bool{}
	for _, l := range v2.Layers {
		shared[l] = true
	}
	for _, l := range v1.Layers {
		if store(l) != shared[l] {
			t.Errorf("v1's layer %s: in the store %v, shared with v2 %v", l, store(l), shared[l])
		}
	}
	if store(v1.Digest) {
		t.Error("v1's manifest is still in the store")
	}
	for _, ref := range []string{"app/web:v2", "app/web:v3", "app/multi:2.0"} {
		for _, l := range append([]string{byRef[ref].Digest}, byRef[ref].Layers...) {
			if !store(l) {
				t.Errorf("%s: %s is gone", ref, l)
			}
		}
	}
	for p := range after {
		if strings.HasPrefix(p, "v2/proj/app/old/") {
			t.Errorf("%s is still there", p)
		}
	}
	var cat struct{ Repositories []string }
	data, _ := os.ReadFile(filepath.Join(tree, "v2/_catalog"))
	if err := json.Unmarshal(data, &cat); err != nil || !slices.Equal(cat.Repositories, []string{"proj/app/multi", "proj/app/web"}) {
		t.Errorf("catalog after the prune: %s", data)
	}
}

// checkPrunedServed checks through nginx: removed names 404, kept images
// pull exact with crane and skopeo.
func checkPrunedServed(t *testing.T, dir, addr string, byRef map[string]harness.Fixture) {
	t.Helper()
	web := "http://" + addr + "/v2/proj/app/web/"
	v1 := byRef["app/web:v1"]
	for _, u := range []string{web + "manifests/v1", web + "manifests/" + v1.Digest, web + "blobs/" + v1.Layers[len(v1.Layers)-1],
		"http://" + addr + "/v2/proj/app/old/tags/list"} {
		if a := doHTTP(t, "GET", u); a.status != 404 {
			t.Errorf("GET %s after the prune: %d, want 404", u, a.status)
		}
	}
	if p := getTagPage(t, addr, "/v2/proj/app/web/tags/list"); !slices.Equal(p.tags, []string{"v2", "v3"}) {
		t.Errorf("tags/list after the prune: %v", p.tags)
	}
	home := t.TempDir()
	for _, ref := range []string{"app/web:v2", "app/web:v3", "app/multi:2.0"} {
		out := filepath.Join(dir, "crane-"+strings.NewReplacer("/", "-", ":", "-").Replace(ref))
		runTool(t, home, cranePath(t), "pull", "--insecure", "--format", "oci", addr+"/proj/"+ref, out)
		if got := ociLayoutDigest(t, out); got != byRef[ref].Digest {
			t.Errorf("crane pull %s: %s, want %s", ref, got, byRef[ref].Digest)
		}
		checkLayoutBlobs(t, out)
	}
	sk := filepath.Join(dir, "skopeo-v3")
	runTool(t, home, skopeoPath(t), "copy", "--src-tls-verify=false", "--preserve-digests", "docker://"+addr+"/proj/app/web:v3", "oci:"+sk)
	if got := ociLayoutDigest(t, sk); got != byRef["app/web:v3"].Digest {
		t.Errorf("skopeo copy v3: %s, want %s", got, byRef["app/web:v3"].Digest)
	}
}

// waitForDigest waits until nginx (reloading) serves url with digest want.
func waitForDigest(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, d := headDigest(t, url)
		if st == 200 && d == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %s, want %s", url, st, d, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pruneCrashSeed fixes where TestStaticPruneCrashRerun kills ferry.
const pruneCrashSeed = 23

// TestStaticPruneCrashRerun kills ferry unpack --prune with SIGKILL at a
// seeded random point of the run (10 runs, each on a fresh tree of bundle
// A), reruns the same command, and checks that the tree is the one a
// prune that was never killed leaves: the same files with the same
// bytes, a journal that names only files that are there.
func TestStaticPruneCrashRerun(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", pruneSet())
	dir := t.TempDir()
	bundleA := exportTags(t, bin, reg, dir, "a", map[string][]string{"app/web": {"v1", "v2"}, "app/old": {"1.0"}, "app/multi": {"2.0"}})
	bundleB := exportTags(t, bin, reg, dir, "b", map[string][]string{"app/web": {"v2", "v3"}, "app/multi": {"2.0"}})
	const listen = "5000"
	ref := filepath.Join(dir, "reference")
	unpackStatic(t, bin, ref, listen, bundleA)
	start := time.Now()
	pruneStatic(t, bin, ref, listen, bundleB)
	span := time.Since(start) + 20*time.Millisecond
	want := contentOf(t, ref)
	rng := rand.New(rand.NewPCG(pruneCrashSeed, 0))
	mid, partial := 0, 0
	for run := range 10 {
		tree := filepath.Join(dir, "tree-"+strconv.Itoa(run))
		unpackStatic(t, bin, tree, listen, bundleA)
		initial := contentOf(t, tree)
		// Even runs: a kill at a random time of the run. Odd runs: a kill
		// as soon as a random one of the files that go is gone, so that
		// kills land among the removals too.
		delay, watch := time.Duration(rng.Int64N(int64(span))), ""
		if goes := goneFiles(initial, want); run%2 == 1 {
			watch, delay = filepath.Join(tree, goes[rng.IntN(len(goes))]), time.Minute
		}
		if killPrune(t, bin, tree, listen, bundleB, delay, watch) {
			mid++
		}
		// A kill inside the removals leaves some of what goes, not all.
		if gone, left := removedSoFar(initial, contentOf(t, tree), want); gone > 0 && left > 0 {
			partial++
			t.Logf("run %d: killed with %d of the files that go removed, %d left", run, gone, left)
		}
		pruneStatic(t, bin, tree, listen, bundleB)
		got := contentOf(t, tree)
		for p, d := range want {
			if got[p] != d {
				t.Errorf("run %d (seed %d, kill after %s): %s holds %q, want %q", run, pruneCrashSeed, delay, p, got[p], d)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("run %d (seed %d, kill after %s): %s should not be there", run, pruneCrashSeed, delay, p)
			}
		}
		checkJournalFiles(t, tree)
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d of 10 kills stopped a prune midway, %d of them inside its removals (seed %d, a prune takes %s)", mid, partial, pruneCrashSeed, span.Round(time.Millisecond))
	if mid == 0 || partial == 0 {
		t.Error("no kill landed inside a prune's removals")
	}
}

// goneFiles lists the files of initial that are not in want, sorted.
func goneFiles(initial, want map[string]string) []string {
	var out []string
	for p := range initial {
		if _, ok := want[p]; !ok {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// removedSoFar counts the files of initial that the prune removes (not
// in want) which are gone from now, and those still there.
func removedSoFar(initial, now, want map[string]string) (gone, left int) {
	for p := range initial {
		if _, stays := want[p]; stays || strings.HasPrefix(p, "v2/_catalog") || p == "nginx.conf" {
			continue
		}
		if _, ok := now[p]; ok {
			left++
		} else {
			gone++
		}
	}
	return gone, left
}

// contentOf maps the files of a tree to their digests, leaving out
// ferry's state and with nginx.conf's root made neutral.
func contentOf(t *testing.T, tree string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for p, f := range listTree(t, tree) {
		switch {
		case strings.HasPrefix(p, ".ferry/"):
			continue
		case p == "nginx.conf":
			data, _ := os.ReadFile(filepath.Join(tree, p))
			out[p] = sha256Hex([]byte(strings.ReplaceAll(string(data), tree, "TREE")))
		default:
			out[p] = f.digest
		}
	}
	return out
}

// checkJournalFiles: every file the journal names is there.
func checkJournalFiles(t *testing.T, tree string) {
	t.Helper()
	var j struct{ Files map[string]json.RawMessage }
	data, err := os.ReadFile(filepath.Join(tree, ".ferry/journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	for rel := range j.Files {
		if _, err := os.Lstat(filepath.Join(tree, rel)); err != nil {
			t.Errorf("the journal names %s: %v", rel, err)
		}
	}
}

// killPrune starts the prune and sends it SIGKILL after delay or, with
// watch, as soon as the file watch is gone; it reports whether the kill
// stopped it (false when it had finished).
func killPrune(t *testing.T, bin, tree, listen, bundle string, delay time.Duration, watch string) bool {
	t.Helper()
	cmd := exec.Command(bin, "unpack", "-q", "--static", tree, "--listen", listen, "--prune", bundle)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	gone := make(chan struct{})
	if watch != "" {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := os.Lstat(watch); os.IsNotExist(err) {
					close(gone)
					return
				}
			}
		}()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("prune before the kill: %v", err)
		}
		return false
	case <-gone:
	case <-time.After(delay):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
