package test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// crashSets are two states of a source registry: the first, and the
// same after a week (a new tag, latest moved to it, 2.0 pushed again with
// other content). Each bundle is about 3 MiB of layers of their own.
func crashSets() (first, later harness.FixtureSet) {
	first = harness.FixtureSet{Name: "crash-first", Specs: []harness.FixtureSpec{
		{Repo: "crash/web", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 600 << 10},
		{Repo: "crash/web", Tag: "latest", Kind: harness.OCIImage, AliasOf: "1.0"},
		{Repo: "crash/api", Tag: "2.0", Kind: harness.DockerImage, Bases: []string{"os"}, AppSize: 800 << 10},
		{Repo: "crash/multi", Tag: "3.0", Kind: harness.OCIIndex, Bases: []string{"os"}, AppSize: 400 << 10},
		{Repo: "crash/tool", Tag: "4.0", Kind: harness.DockerList, Bases: []string{"os"}, AppSize: 300 << 10},
	}}
	later = harness.FixtureSet{Name: "crash-later", Specs: []harness.FixtureSpec{
		{Repo: "crash/web", Tag: "1.1", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 500 << 10},
		{Repo: "crash/web", Tag: "latest", Kind: harness.OCIImage, AliasOf: "1.1"},
		{Repo: "crash/api", Tag: "2.0", Kind: harness.DockerImage, Bases: []string{"os", "python-runtime"}, AppSize: 700 << 10},
	}}
	return first, later
}

// crashWants are the tags (proj/REPO:TAG → digest) a tree holds after the
// first bundle, and after the later one on top of it.
func crashWants(first, later []harness.Fixture) (wantFirst, wantLater map[string]string) {
	wantFirst, wantLater = map[string]string{}, map[string]string{}
	for _, fx := range first {
		wantFirst["proj/"+fx.Repo+":"+fx.Tag] = fx.Digest
		wantLater["proj/"+fx.Repo+":"+fx.Tag] = fx.Digest
	}
	for _, fx := range later {
		wantLater["proj/"+fx.Repo+":"+fx.Tag] = fx.Digest
	}
	return wantFirst, wantLater
}

// TestStaticCrashRerun kills ferry unpack --static with SIGKILL at seeded
// random points (20 runs; half of them on a fresh tree, half while a
// later bundle moves tags of a finished tree; one or two kills each),
// then reruns it to the end. Afterwards every file of the tree hashes to
// the digest it is named by, every tag holds the manifest the bundle
// gives it and no other tag is there, the journal vouches for no wrong
// byte, and nginx serves every tag's manifests and blobs with the bytes
// their Docker-Content-Digest names.
func TestStaticCrashRerun(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	firstSet, laterSet := crashSets()
	first := harness.Seed(t, reg, "", firstSet)
	dir := t.TempDir()
	mkdir := func(p string) string {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bundleFirst := exportAll(t, bin, reg, first, mkdir(filepath.Join(dir, "first")))
	later := harness.Seed(t, reg, "", laterSet)
	bundleLater := exportAll(t, bin, reg, later, mkdir(filepath.Join(dir, "later")))
	wantFirst, wantLater := crashWants(first, later)

	// How long a whole run takes here: kills fall anywhere in it.
	start := time.Now()
	unpackStatic(t, bin, filepath.Join(dir, "calibrate"), "5000", bundleFirst)
	span := time.Since(start) + 20*time.Millisecond
	t.Logf("seed %d; a whole unpack takes %s", crashSeed, span.Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(crashSeed, 0))
	mid := 0
	for run := range 20 {
		tree := filepath.Join(dir, "tree-"+strconv.Itoa(run))
		addr := loopbackAddr(t)
		bundlePath, want := bundleFirst, wantFirst
		if run%2 == 1 {
			unpackStatic(t, bin, tree, addr, bundleFirst)
			bundlePath, want = bundleLater, wantLater
		}
		for range 1 + rng.IntN(2) {
			delay := time.Duration(rng.Int64N(int64(span)))
			if killUnpack(t, bin, tree, addr, bundlePath, delay) {
				mid++
			}
		}
		unpackStatic(t, bin, tree, addr, bundlePath)
		tags := checkStaticTree(t, tree)
		for ref, d := range want {
			if tags[ref] != d {
				t.Errorf("run %d (seed %d): tag %s holds %q, want %s", run, crashSeed, ref, tags[ref], d)
			}
		}
		if len(tags) != len(want) {
			t.Errorf("run %d (seed %d): tags %v, want %v", run, crashSeed, tags, want)
		}
		ngx := startNginx(t, filepath.Join(tree, "nginx.conf"), addr)
		blobs := 0
		for ref, d := range want {
			repo, tag := splitRef(ref)
			blobs += checkServed(t, addr, repo, tag, d)
		}
		ngx.stop(t)
		if blobs < len(want)*3 {
			t.Errorf("run %d: only %d manifests and blobs pulled", run, blobs)
		}
		if t.Failed() {
			t.Fatalf("run %d (seed %d) left a tree that does not hold what it should", run, crashSeed)
		}
	}
	// The kills must land inside runs, not only after them (about half do
	// here; a machine much less busy than at calibration makes fewer).
	if mid < 5 {
		t.Errorf("only %d of the kills stopped an unpack before it finished", mid)
	}
	t.Logf("%d kills stopped an unpack midway", mid)
}

// killUnpack starts ferry unpack and sends it SIGKILL after delay. It
// reports whether the kill stopped it (false when it had finished).
func killUnpack(t *testing.T, bin, tree, addr, bundlePath string, delay time.Duration) bool {
	t.Helper()
	return killAfter(t, nil, bin, []string{"unpack", "-q", "--static", tree, "--listen", addr, bundlePath}, delay)
}

// splitRef splits "name:tag" at its last colon.
func splitRef(ref string) (string, string) {
	for i := len(ref) - 1; i >= 0; i-- {
		if ref[i] == ':' {
			return ref[:i], ref[i+1:]
		}
	}
	return ref, ""
}
