package test

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// handshakes counts what connecting to a registry costs: GET /v2/ pings and
// token requests (the proxies forward token requests too: the realm is
// rewritten to the proxy).
func handshakes(c *harness.Counter) (pings, tokens int) {
	return c.Count("", harness.KindPing), c.Count("", harness.KindToken)
}

// TestExportAndImportHandshakesPerRegistry: an export of 47 repositories
// from one Bearer-token registry pings it at most twice and asks its token
// service for at most two tokens, instead of a ping and a token per
// repository; importing the bundle into another token registry costs as
// little, cross-repository mounts included. The images arrive with their
// source digests.
func TestExportAndImportHandshakesPerRegistry(t *testing.T) {
	bin := harness.BuildFerry(t)
	ca := harness.NewCA(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, CA: ca, Users: map[string]string{impAlice: impAPW}})
	fixtures := harness.Seed(t, src, impAlice, harness.ManySmallSet(47, 1))
	repos := harness.Repos(fixtures)
	if len(repos) != 47 {
		t.Fatalf("%d repositories seeded, want 47", len(repos))
	}
	front, counter := harness.CountingProxy(t, src)

	var m strings.Builder
	fmt.Fprintf(&m, "tasks:\n  - name: many\n    source:\n      registry: %s\n    mappings:\n", front.Host)
	for _, r := range repos {
		fmt.Fprintf(&m, "      - from: %s\n        tags: ['latest']\n", r)
	}
	dir := t.TempDir()
	mf := writeFile(t, filepath.Join(dir, "m.yaml"), m.String())
	out := filepath.Join(dir, "many.tar")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", mf, "-o", out, "--ca-cert", front.CAFile, "--username", impAlice, "--json", "-q")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, stderr)
	}
	sum := parseSummary(t, stdout)
	digests := fixtureDigests(fixtures)
	if len(sum.Images) != 47 {
		t.Errorf("%d images exported, want 47", len(sum.Images))
	}
	for _, im := range sum.Images {
		if want := digests[im.Target+":latest"]; im.Digest != want {
			t.Errorf("%s: digest %s, source %s", im.Target, im.Digest, want)
		}
	}
	pings, tokens := handshakes(counter)
	t.Logf("export of 47 repositories: %s", counter)
	if pings > 2 || tokens > 2 || tokens == 0 {
		t.Errorf("export of 47 repositories: %d pings and %d token requests; want at most 2 of each", pings, tokens)
	}

	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, CA: ca, Users: map[string]string{robot: robotPW}})
	dfront, dcounter := harness.CountingProxy(t, dst)
	isum, stderr, code := runImport(t, bin, robotPW+"\n", out, "--to", dfront.Host+"/mirror",
		"--ca-cert", dfront.CAFile, "--username", robot, "--password-stdin")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	if isum.Pushed != 47 || isum.BlobsMounted == 0 {
		t.Errorf("import pushed %d images (want 47), mounted %d blobs (want some)", isum.Pushed, isum.BlobsMounted)
	}
	pings, tokens = handshakes(dcounter)
	t.Logf("import of 47 repositories: %s", dcounter)
	if pings > 2 || tokens > 2 || tokens == 0 {
		t.Errorf("import of 47 repositories: %d pings and %d token requests; want at most 2 of each", pings, tokens)
	}
	got := repoState(t, dst, robot)
	for _, r := range repos {
		if d := got["mirror/"+r+":latest"]; d != digests[r+":latest"] {
			t.Errorf("mirror/%s:latest is %q in the target, source %s", r, d, digests[r+":latest"])
		}
	}
}

// TestSyncRoundHandshakes: a sync round between two Bearer-token registries
// pings each once and asks each token service for one token (one
// credential per registry), the source look-ups, the target look-ups and
// the copy included; a second round with nothing to copy costs the same
// handshakes and no manifest or blob GET at the source.
func TestSyncRoundHandshakes(t *testing.T) {
	bin := harness.BuildFerry(t)
	ca := harness.NewCA(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, CA: ca, Users: map[string]string{impAlice: impAPW}})
	fixtures := harness.Seed(t, src, impAlice, harness.SmallSet())
	sfront, scounter := harness.CountingProxy(t, src)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, TokenAuth: true, CA: ca, Users: map[string]string{robot: robotPW}})
	dfront, dcounter := harness.CountingProxy(t, dst)

	auth := base64.StdEncoding.EncodeToString([]byte(`{"username": "` + robot + `", "password": "` + robotPW + `"}`))
	m := writeFile(t, filepath.Join(t.TempDir(), "m.yaml"), `
tasks:
  - name: mirror
    source:
      registry: `+sfront.Host+`
    target:
      registry: `+dfront.Host+`/mirror
      auth: `+auth+`
    mappings:
      - from: spaceone/console
        tags: ['regex: 1\.11\..*']
      - from: spaceone/plugin-a
        to: plugins/a
        tags: ['semver: >=1.0.0 <1.99.0', 'keep: latest 2']
      - from: library/redis
        tags: ['7.2.4', 'latest']
      - from: library/alpine
        tags: ['3.19']
      - from: library/busybox
        tags: ['1.36']
`)
	want := map[string]string{}
	for _, f := range fixtures {
		switch {
		case f.Repo == "spaceone/console" && strings.HasPrefix(f.Tag, "1.11."):
			want["mirror/spaceone/console:"+f.Tag] = f.Digest
		case f.Repo == "spaceone/plugin-a" && (f.Tag == "1.4.1" || f.Tag == "1.4.2-rc1"):
			want["mirror/plugins/a:"+f.Tag] = f.Digest
		case f.Repo == "library/redis", f.Repo == "library/alpine" && f.Tag == "3.19", f.Repo == "library/busybox":
			want["mirror/"+f.Repo+":"+f.Tag] = f.Digest
		}
	}
	check := func(round string) {
		t.Helper()
		for name, c := range map[string]*harness.Counter{"source": scounter, "target": dcounter} {
			pings, tokens := handshakes(c)
			t.Logf("%s round, %s: %s", round, name, c)
			if pings != 1 || tokens != 1 {
				t.Errorf("%s round: %d pings and %d token requests at the %s; want one of each", round, pings, tokens, name)
			}
		}
	}

	r, stderr := runSync(t, bin, "-f", m, "--ca-cert", ca.CertFile)
	if r.Failed != 0 || r.Copied == 0 {
		t.Fatalf("first round: %+v\n%s", r, stderr)
	}
	check("first")
	got := repoState(t, dst, robot)
	for ref, d := range want {
		if got[ref] != d {
			t.Errorf("%s is %q in the target, source %s", ref, got[ref], d)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the target holds %v, want %v", keys(got), keys(want))
	}

	scounter.Reset()
	dcounter.Reset()
	r, stderr = runSync(t, bin, "-f", m, "--ca-cert", ca.CertFile)
	if r.Failed != 0 || r.Copied != 0 || r.Unchanged == 0 {
		t.Fatalf("second round: %+v\n%s", r, stderr)
	}
	check("second")
	if n := scounter.Count("GET", harness.KindManifest) + scounter.Count("GET", harness.KindBlob); n != 0 {
		t.Errorf("second round: %d manifest or blob GETs at the source, want none: %s", n, scounter)
	}
}
