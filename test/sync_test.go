package test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/test/harness"
)

// syncRound is the part of a `ferry sync --json` line the tests read.
type syncRound struct {
	Task      string `json:"task"`
	Target    string `json:"target"`
	Copied    int    `json:"copied"`
	Unchanged int    `json:"unchanged"`
	Failed    int    `json:"failed"`
	Bytes     int64  `json:"bytes"`
	Pulls     int64  `json:"pulls"`
	BlobGETs  int64  `json:"blobGets"`
	Images    []struct {
		Repository string   `json:"repository"`
		Tags       []string `json:"tags"`
		Digest     string   `json:"digest"`
		Result     string   `json:"result"`
	} `json:"images"`
	Error string `json:"error"`
}

func runSync(t *testing.T, bin string, args ...string) (syncRound, string) {
	t.Helper()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		append([]string{"sync", "--json", "--username", impAlice}, args...)...)
	if code != 0 {
		t.Fatalf("sync: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 1 {
		t.Fatalf("sync --json printed %d lines, want one per task round:\n%s", len(lines), stdout)
	}
	var r syncRound
	if err := json.Unmarshal([]byte(lines[0]), &r); err != nil {
		t.Fatalf("sync --json: %v\n%s", err, stdout)
	}
	return r, stderr
}

// repoState is every tag of every repository of a registry, with digests.
func repoState(t *testing.T, r *harness.Registry, user string) map[string]string {
	t.Helper()
	reg := r.Ref(t, "x/y:z").Context().Registry
	repos, err := remote.Catalog(t.Context(), reg, r.RemoteOptions(user)...)
	if err != nil {
		t.Fatalf("catalog of %s: %v", r.Host, err)
	}
	out := map[string]string{}
	for _, repo := range repos {
		tags, err := remote.List(r.Ref(t, repo+":x").Context(), r.RemoteOptions(user)...)
		if err != nil {
			t.Fatalf("tags of %s/%s: %v", r.Host, repo, err)
		}
		for _, tag := range tags {
			d, err := remote.Head(r.Ref(t, repo+":"+tag), r.RemoteOptions(user)...)
			if err != nil {
				t.Fatalf("%s/%s:%s: %v", r.Host, repo, tag, err)
			}
			out[repo+":"+tag] = d.Digest.String()
		}
	}
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestSyncEndToEnd: two real registries, a counting proxy in front of the
// source. The first round copies everything with the source digests; a
// second round with nothing changed makes no manifest GET and no blob GET
// at the source; after a new tag appears upstream, the next round copies
// only it (one manifest GET, blob GETs for its config and own layer only).
// Finally the target equals what export followed by import makes.
func TestSyncEndToEnd(t *testing.T) {
	bin := harness.BuildFerry(t)
	ca := harness.NewCA(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: ca, Users: map[string]string{impAlice: impAPW}})
	fixtures := harness.Seed(t, src, impAlice, harness.SmallSet())
	front, counter := harness.CountingProxy(t, src)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: ca, Users: map[string]string{robot: robotPW}})

	auth := base64.StdEncoding.EncodeToString([]byte(`{"username": "` + robot + `", "password": "` + robotPW + `"}`))
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "m.yaml"), `
relay: skopeo
skopeo: {binary: skopeo, certs-dir: /etc/skopeo/certs.d}
tasks:
  - name: mirror
    interval: 60
    source:
      registry: `+front.Host+`
    target:
      registry: `+dst.Host+`/mirror
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
`)
	// What the mapping selects, and the source digests.
	want := map[string]string{}
	for _, f := range fixtures {
		var path string
		switch {
		case f.Repo == "spaceone/console" && strings.HasPrefix(f.Tag, "1.11."):
			path = "mirror/spaceone/console"
		case f.Repo == "spaceone/plugin-a" && (f.Tag == "1.4.1" || f.Tag == "1.4.2-rc1"):
			path = "mirror/plugins/a"
		case f.Repo == "library/redis", f.Repo == "library/alpine" && f.Tag == "3.19":
			path = "mirror/" + f.Repo
		default:
			continue
		}
		want[path+":"+f.Tag] = f.Digest
	}
	args := []string{"-f", m, "--ca-cert", src.CAFile}

	// A dry run reports what round 1 will copy, fetches no blob and writes
	// nothing to the target.
	dry, stderr := runSync(t, bin, append([]string{"--dry-run"}, args...)...)
	if dry.Failed != 0 || dry.Copied+dry.Unchanged != 8 {
		t.Fatalf("dry run: copied %d, unchanged %d, failed %d (%s)\n%s", dry.Copied, dry.Unchanged, dry.Failed, dry.Error, stderr)
	}
	if n := counter.Count("GET", harness.KindBlob); n != 0 {
		t.Fatalf("a dry run made %d blob GETs at the source", n)
	}
	if got := repoState(t, dst, robot); len(got) != 0 {
		t.Fatalf("a dry run wrote to the target: %v", keys(got))
	}
	counter.Reset()

	// Round 1: everything is copied with the source digests.
	r1, stderr := runSync(t, bin, args...)
	t.Logf("round 1: %+v\nsource requests: %s", r1, counter)
	if r1.Failed != 0 || r1.Copied != 8 || r1.Unchanged != 0 || r1.Error != "" {
		t.Fatalf("round 1: copied %d, unchanged %d, failed %d (%s); want 8/0/0\n%s", r1.Copied, r1.Unchanged, r1.Failed, r1.Error, stderr)
	}
	got := repoState(t, dst, robot)
	if strings.Join(keys(got), " ") != strings.Join(keys(want), " ") {
		t.Fatalf("target holds %v\nwant %v", keys(got), keys(want))
	}
	for ref, d := range want {
		if got[ref] != d {
			t.Errorf("%s: %s in the target, %s at the source", ref, got[ref], d)
		}
	}
	if r1.Pulls != int64(counter.Count(http.MethodGet, harness.KindManifest)) || r1.Pulls == 0 {
		t.Errorf("round 1 reports %d pulls; the source saw %d manifest GETs", r1.Pulls, counter.Count(http.MethodGet, harness.KindManifest))
	}

	// Round 2, nothing changed: HEADs only.
	counter.Reset()
	r2, _ := runSync(t, bin, args...)
	t.Logf("round 2: source requests: %s", counter)
	if n := counter.Count(http.MethodGet, harness.KindManifest); n != 0 {
		t.Errorf("unchanged round: %d manifest GETs at the source, want 0", n)
	}
	if n := counter.Count(http.MethodGet, harness.KindBlob); n != 0 {
		t.Errorf("unchanged round: %d blob GETs at the source, want 0", n)
	}
	if r2.Copied != 0 || r2.Unchanged != 8 || r2.Failed != 0 || r2.Pulls != 0 || r2.Bytes != 0 {
		t.Errorf("round 2: copied %d, unchanged %d, failed %d, pulls %d, bytes %d; want 0/8/0/0/0", r2.Copied, r2.Unchanged, r2.Failed, r2.Pulls, r2.Bytes)
	}

	// A new tag upstream: only it is copied.
	old := map[string]bool{}
	for _, f := range fixtures {
		for _, l := range f.Layers {
			old[l] = true
		}
	}
	added := harness.Seed(t, src, impAlice, harness.FixtureSet{Name: "new", Specs: []harness.FixtureSpec{
		{Repo: "spaceone/console", Tag: "1.11.13", Kind: harness.DockerImage, Bases: []string{"os", "node-runtime"}},
	}})[0]
	var newLayers []string
	for _, l := range added.Layers {
		if !old[l] {
			newLayers = append(newLayers, l)
		}
	}
	if len(newLayers) != 1 {
		t.Fatalf("the new tag has %d new layers, want 1: %v", len(newLayers), added.Layers)
	}
	counter.Reset()
	r3, _ := runSync(t, bin, args...)
	t.Logf("round 3: source requests: %s", counter)
	if r3.Copied != 1 || r3.Unchanged != 8 || r3.Failed != 0 {
		t.Errorf("round 3: copied %d, unchanged %d, failed %d; want 1/8/0", r3.Copied, r3.Unchanged, r3.Failed)
	}
	var manifestGETs, blobGETs []string
	for _, q := range counter.Requests() {
		if q.Method != http.MethodGet {
			continue
		}
		switch harness.Kind(q.Path) {
		case harness.KindManifest:
			manifestGETs = append(manifestGETs, q.Path)
		case harness.KindBlob:
			blobGETs = append(blobGETs, q.Path)
		}
	}
	if len(manifestGETs) != 1 || !strings.HasSuffix(manifestGETs[0], "/spaceone/console/manifests/"+added.Digest) {
		t.Errorf("round 3 manifest GETs %v, want one of spaceone/console@%s", manifestGETs, added.Digest)
	}
	desc, err := remote.Get(src.Ref(t, added.Ref()), src.RemoteOptions(impAlice)...)
	if err != nil {
		t.Fatal(err)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	wantBlobs := []string{cfg.String(), newLayers[0]}
	sort.Strings(wantBlobs)
	var gotBlobs []string
	for _, p := range blobGETs {
		gotBlobs = append(gotBlobs, p[strings.LastIndex(p, "/")+1:])
	}
	sort.Strings(gotBlobs)
	if strings.Join(gotBlobs, " ") != strings.Join(wantBlobs, " ") {
		t.Errorf("round 3 blob GETs %v, want the new config and layer %v", gotBlobs, wantBlobs)
	}
	if d, err := remote.Head(dst.Ref(t, "mirror/spaceone/console:1.11.13"), dst.RemoteOptions(robot)...); err != nil || d.Digest.String() != added.Digest {
		t.Errorf("new tag in the target: %v %v, want %s", d, err, added.Digest)
	}
	want["mirror/spaceone/console:1.11.13"] = added.Digest

	// The same file through export and import into a third registry gives
	// the same repositories, tags and digests.
	dst2 := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: ca, Users: map[string]string{robot: robotPW}})
	out := filepath.Join(dir, "b.tar")
	so, se, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"export", "-f", m, "-o", out, "--ca-cert", src.CAFile, "--username", impAlice, "-q")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, so, se)
	}
	isum, se, code := runImport(t, bin, robotPW+"\n", out, "--to", dst2.Host+"/mirror", "--ca-cert", src.CAFile,
		"--username", robot, "--password-stdin")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s\n%+v", code, se, isum)
	}
	viaSync, viaBundle := repoState(t, dst, robot), repoState(t, dst2, robot)
	if strings.Join(keys(viaSync), " ") != strings.Join(keys(viaBundle), " ") {
		t.Fatalf("sync made %v\nexport+import made %v", keys(viaSync), keys(viaBundle))
	}
	for ref, d := range viaBundle {
		if viaSync[ref] != d {
			t.Errorf("%s: sync made %s, export+import %s", ref, viaSync[ref], d)
		}
		if want[ref] != d {
			t.Errorf("%s: %s in the targets, %s at the source", ref, d, want[ref])
		}
	}
	// Children of indexes are there by digest in both.
	for ref := range viaSync {
		for _, r := range []*harness.Registry{dst, dst2} {
			desc, err := remote.Get(r.Ref(t, ref), r.RemoteOptions(robot)...)
			if err != nil {
				t.Fatalf("%s from %s: %v", ref, r.Host, err)
			}
			if !desc.MediaType.IsIndex() {
				continue
			}
			idx, err := v1.ParseIndexManifest(strings.NewReader(string(desc.Manifest)))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range idx.Manifests {
				repo := ref[:strings.LastIndex(ref, ":")]
				if _, err := remote.Head(r.Ref(t, repo+"@"+c.Digest.String()), r.RemoteOptions(robot)...); err != nil {
					t.Errorf("%s on %s: child %s: %v", ref, r.Host, c.Digest, err)
				}
			}
		}
	}
}

// TestSyncWatchMetrics runs `ferry sync --watch --metrics-addr` as a
// service would: the first round is printed as a JSON line, the metrics
// endpoint counts it in Prometheus text, and SIGTERM ends the watch with
// exit status 0.
func TestSyncWatchMetrics(t *testing.T) {
	bin := harness.BuildFerry(t)
	ca := harness.NewCA(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: ca})
	harness.Seed(t, src, "", harness.SmallSet())
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: ca})
	m := writeFile(t, filepath.Join(t.TempDir(), "m.yaml"), `
tasks:
  - name: mirror
    interval: 3600
    source: {registry: `+src.Host+`}
    target: {registry: `+dst.Host+`}
    mappings:
      - from: library/alpine
        tags: ['3.19']
`)
	cmd := exec.Command(bin, "sync", "--watch", "--json", "-f", m, "--ca-cert", src.CAFile, "--metrics-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), impEnv(t)...)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stdout.String(), "\n") {
		if time.Now().After(deadline) {
			t.Fatalf("no round printed\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var r syncRound
	if err := json.Unmarshal([]byte(strings.SplitN(stdout.String(), "\n", 2)[0]), &r); err != nil || r.Copied != 1 || r.Failed != 0 {
		t.Fatalf("first round: %+v %v\nstderr:\n%s", r, err, stderr.String())
	}
	url := regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+/metrics`).FindString(stderr.String())
	if url == "" {
		t.Fatalf("no metrics address on stderr:\n%s", stderr.String())
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`# TYPE ferry_sync_rounds_total counter`,
		`ferry_sync_rounds_total{task="mirror"} 1`,
		`ferry_sync_images_total{task="mirror",result="copied"} 1`,
		`ferry_sync_failures_total{task="mirror"} 0`,
		`# TYPE ferry_sync_last_success_timestamp_seconds gauge`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, body)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ferry sync --watch did not stop on SIGTERM")
	}
}
