package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// nginxServer is a real nginx serving a static tree: started by the test
// as a foreground process with its own prefix, pid, logs and temp paths
// under a temporary directory; never the system service.
type nginxServer struct {
	addr   string
	prefix string
	cmd    *exec.Cmd
	done   chan struct{}
}

func nginxPath(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Fatal("nginx not found: install it with `apt-get install -y nginx` (.ci/run does)")
	return ""
}

// startNginx runs nginx with treeConf (a tree's nginx.conf) included in its
// http block, and waits until addr answers /v2/ over plain HTTP.
func startNginx(t testing.TB, treeConf, addr string) *nginxServer {
	t.Helper()
	return startNginxWith(t, treeConf, addr, "http://"+addr+"/v2/", http.DefaultClient)
}

// startNginxWith is startNginx waiting for probe to answer 200 through client.
func startNginxWith(t testing.TB, treeConf, addr, probe string, client *http.Client) *nginxServer {
	t.Helper()
	bin := nginxPath(t)
	prefix := t.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, "pid %s/nginx.pid;\nerror_log %s/error.log warn;\nworker_processes 1;\n", prefix, prefix)
	if os.Geteuid() == 0 {
		// The worker must read the test's private directories: as root,
		// it would otherwise switch to nobody.
		conf.WriteString("user root;\n")
	}
	conf.WriteString("events { worker_connections 256; }\nhttp {\n")
	fmt.Fprintf(&conf, "    access_log %s/access.log;\n", prefix)
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&conf, "    %s_temp_path %s/%s;\n", d, prefix, d)
	}
	fmt.Fprintf(&conf, "    include %s;\n}\n", treeConf)
	main := filepath.Join(prefix, "main.conf")
	if err := os.WriteFile(main, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &nginxServer{addr: addr, prefix: prefix, done: make(chan struct{})}
	n.cmd = exec.Command(bin, "-p", prefix, "-c", main, "-e", filepath.Join(prefix, "error.log"), "-g", "daemon off;")
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // master and worker, stopped together
	var out bytes.Buffer
	n.cmd.Stdout, n.cmd.Stderr = &out, &out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() { n.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return n
			}
		}
		select {
		case <-n.done:
			log, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Fatalf("nginx exited: %s\n%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *nginxServer) stop(t testing.TB) {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// loopbackAddr picks a free loopback port.
func loopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

var (
	craneOnce sync.Once
	craneBin  string
	craneErr  error
)

// cranePath builds crane from the module cache (go-containerregistry is a
// dependency of ferry: same version), once per test binary, into one
// fixed folder under the temporary directory that later runs reuse.
func cranePath(t testing.TB) string {
	t.Helper()
	craneOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), "ferry-test-crane")
		if craneErr = os.MkdirAll(dir, 0o755); craneErr != nil {
			return
		}
		craneBin = filepath.Join(dir, "crane")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", craneBin, "github.com/google/go-containerregistry/cmd/crane")
		cmd.Dir = harness.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			craneErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if craneErr != nil {
		t.Fatalf("building crane: %v", craneErr)
	}
	return craneBin
}

// nginxOverTree exports fixtures from reg into a bundle in a new
// temporary folder, unpacks it there as a static tree and serves the tree
// with nginx. It returns nginx's address and the folder.
func nginxOverTree(t *testing.T, bin string, reg *harness.Registry, fixtures []harness.Fixture) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)
	tree := filepath.Join(dir, "tree")
	addr = loopbackAddr(t)
	unpackStatic(t, bin, tree, addr, bundlePath)
	startNginx(t, filepath.Join(tree, "nginx.conf"), addr)
	return addr, dir
}

// unpackStatic runs ferry unpack --json and returns its summary.
func unpackStatic(t *testing.T, bin, dir, listen string, bundles ...string) map[string]any {
	t.Helper()
	args := append([]string{"unpack", "-q", "--json", "--static", dir, "--listen", listen}, bundles...)
	stdout, stderr, code := harness.Run(t, bin, args...)
	if code != 0 {
		t.Fatalf("ferry unpack: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var sum map[string]any
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("ferry unpack --json: %v\n%s", err, stdout)
	}
	return sum
}

// ociLayoutDigest reads the digest of the one image an OCI layout holds.
func ociLayoutDigest(t *testing.T, dir string) string {
	t.Helper()
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("%s/index.json: %s", dir, data)
	}
	return idx.Manifests[0].Digest
}

// checkLayoutBlobs hashes every blob of an OCI layout against its name.
func checkLayoutBlobs(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, "blobs/sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		data, err := os.ReadFile(filepath.Join(dir, "blobs/sha256", e.Name()))
		if err != nil || sha256Hex(data) != e.Name() {
			t.Errorf("%s: blob %s does not hash to its name", dir, e.Name())
		}
	}
	return len(es)
}

type httpAnswer struct {
	status int
	header http.Header
	body   string
}

func doHTTP(t *testing.T, method, url string) httpAnswer {
	t.Helper()
	return doHTTPHost(t, method, url, "")
}

// doHTTPHost is doHTTP with the request's Host header set to host (a
// virtual host on the address the URL names), unless host is "".
func doHTTPHost(t *testing.T, method, url, host string) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, resp.Header, string(body)}
}

// TestStaticE2E: a bundle unpacked with ferry unpack --static and served
// by the real nginx with the generated configuration is a registry that
// crane, skopeo and regctl pull every image from with its source digest.
func TestStaticE2E(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.SmallSet())
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)
	tree := filepath.Join(dir, "tree")
	addr := loopbackAddr(t)
	sum := unpackStatic(t, bin, tree, addr, bundlePath)
	if sum["treeTags"] != float64(len(fixtures)) || sum["blobsWritten"].(float64) == 0 || sum["tagsChanged"] != float64(len(fixtures)) {
		t.Errorf("first unpack: %v, want %d tags", sum, len(fixtures))
	}
	startNginx(t, filepath.Join(tree, "nginx.conf"), addr)

	crane, skopeo, regctl := cranePath(t), skopeoPath(t), regctlPath(t)
	home := t.TempDir()
	runTool(t, home, regctl, "registry", "set", addr, "--tls", "disabled")
	pulled := map[string]bool{}
	for i, fx := range fixtures {
		ref := addr + "/proj/" + fx.Repo + ":" + fx.Tag
		if got := strings.TrimSpace(runTool(t, home, crane, "digest", "--insecure", ref)); got != fx.Digest {
			t.Errorf("crane digest %s: %s, want %s", ref, got, fx.Digest)
		}
		if got := strings.TrimSpace(runTool(t, home, regctl, "image", "digest", ref)); got != fx.Digest {
			t.Errorf("regctl image digest %s: %s, want %s", ref, got, fx.Digest)
		}
		raw := runTool(t, home, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
		if "sha256:"+sha256Hex([]byte(raw)) != fx.Digest {
			t.Errorf("skopeo inspect --raw %s: sha256:%s, want %s", ref, sha256Hex([]byte(raw)), fx.Digest)
		}
		if pulled[fx.Digest] {
			continue // one full pull per image is enough
		}
		pulled[fx.Digest] = true
		// Whole images (every platform of an index), every blob checked.
		cdir := filepath.Join(dir, "crane", strconv.Itoa(i))
		runTool(t, home, crane, "pull", "--insecure", "--format", "oci", ref, cdir)
		if got := ociLayoutDigest(t, cdir); got != fx.Digest {
			t.Errorf("crane pull %s: %s, want %s", ref, got, fx.Digest)
		}
		checkLayoutBlobs(t, cdir)
		rdir := filepath.Join(dir, "regctl", strconv.Itoa(i))
		runTool(t, home, regctl, "image", "copy", ref, "ocidir://"+rdir+":"+fx.Tag)
		if got := ociLayoutDigest(t, rdir); got != fx.Digest {
			t.Errorf("regctl image copy %s: %s, want %s", ref, got, fx.Digest)
		}
		if n := checkLayoutBlobs(t, rdir); n < len(fx.Layers)+2 {
			t.Errorf("regctl image copy %s: %d blobs, want at least %d", ref, n, len(fx.Layers)+2)
		}
		skopeoCopy(t, func(a ...string) string { return runTool(t, home, skopeo, a...) }, filepath.Join(dir, "skopeo", strconv.Itoa(i)), addr+"/proj/"+fx.Repo, fx.Digest, fx.MediaType, raw)
	}
	checkStaticAnswers(t, addr, fixtures)

	// A rerun writes nothing and changes no file.
	sum = unpackStatic(t, bin, tree, addr, bundlePath)
	if sum["blobsWritten"] != float64(0) || sum["filesWritten"] != float64(0) || sum["tagsChanged"] != float64(0) {
		t.Errorf("rerun: %v", sum)
	}
}

// skopeoCopy copies repo@digest with skopeo, digests preserved, and
// checks what it wrote. skopeo 1.9 keeps OCI-typed images as they are only
// in an OCI layout, Docker-typed ones only in its dir: format, and refuses
// to write any index with --preserve-digests ("cannot modify it"): an index
// is copied one platform image at a time, each by its digest.
// run runs skopeo with the arguments given.
func skopeoCopy(t *testing.T, run func(args ...string) string, dest, repo, digest, mediaType, raw string) {
	t.Helper()
	if strings.Contains(mediaType, "index") || strings.Contains(mediaType, "list") {
		var idx struct {
			Manifests []struct {
				Digest    string `json:"digest"`
				MediaType string `json:"mediaType"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal([]byte(raw), &idx); err != nil || len(idx.Manifests) == 0 {
			t.Fatalf("index %s@%s: %v", repo, digest, err)
		}
		for i, m := range idx.Manifests {
			skopeoCopy(t, run, dest+"-"+strconv.Itoa(i), repo, m.Digest, m.MediaType, "")
		}
		return
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "docker://" + repo + "@" + digest
	if strings.HasPrefix(mediaType, "application/vnd.oci.") {
		run("copy", "--preserve-digests", "--src-tls-verify=false", src, "oci:"+dest+":x")
		if got := ociLayoutDigest(t, dest); got != digest {
			t.Errorf("skopeo copy %s: %s", src, got)
		}
		checkLayoutBlobs(t, dest)
		return
	}
	run("copy", "--preserve-digests", "--src-tls-verify=false", src, "dir:"+dest)
	if m, err := os.ReadFile(filepath.Join(dest, "manifest.json")); err != nil || "sha256:"+sha256Hex(m) != digest {
		t.Errorf("skopeo copy %s: manifest %v", src, err)
	}
}

// checkStaticAnswers checks the headers and error bodies nginx gives.
func checkStaticAnswers(t *testing.T, addr string, fixtures []harness.Fixture) {
	t.Helper()
	base := "http://" + addr + "/v2/"
	fx := fixtureByRef(t, fixtures, "library/redis:7.2.4")
	for _, ref := range []string{fx.Tag, fx.Digest} {
		for _, method := range []string{"GET", "HEAD"} {
			a := doHTTP(t, method, base+"proj/"+fx.Repo+"/manifests/"+ref)
			if a.status != 200 || a.header.Get("Content-Type") != fx.MediaType || a.header.Get("Docker-Content-Digest") != fx.Digest ||
				a.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Errorf("%s manifest %s: %d, Content-Type %q, digest %q", method, ref, a.status, a.header.Get("Content-Type"), a.header.Get("Docker-Content-Digest"))
			}
			if method == "GET" && "sha256:"+sha256Hex([]byte(a.body)) != fx.Digest || method == "HEAD" && a.body != "" {
				t.Errorf("%s manifest %s: body of %d bytes", method, ref, len(a.body))
			}
		}
	}
	// No conditional answer for a tag: it may name an older file tomorrow.
	req, _ := http.NewRequest("GET", base+"proj/"+fx.Repo+"/manifests/"+fx.Tag, nil)
	req.Header.Set("If-Modified-Since", time.Now().Add(24*time.Hour).UTC().Format(http.TimeFormat))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 || resp.Header.Get("Last-Modified") != "" || resp.Header.Get("ETag") != "" {
		t.Errorf("conditional GET of a tag: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	layer := fx.Layers[0]
	a := doHTTP(t, "HEAD", base+"proj/"+fx.Repo+"/blobs/"+layer)
	if a.status != 200 || a.header.Get("Docker-Content-Digest") != layer || a.header.Get("Content-Length") == "" {
		t.Errorf("HEAD blob: %d %v", a.status, a.header)
	}
	full := httpGet(t, base+"proj/"+fx.Repo+"/blobs/"+layer, "", 200)
	if part := httpGet(t, base+"proj/"+fx.Repo+"/blobs/"+layer, "bytes=10-19", 206); !bytes.Equal(part, full[10:20]) {
		t.Errorf("Range bytes=10-19: %q", part)
	}
	unknownDigest := "sha256:" + strings.Repeat("0", 64)
	for _, c := range []struct{ path, code string }{
		{"proj/" + fx.Repo + "/manifests/9.9.9", "MANIFEST_UNKNOWN"},
		{"proj/" + fx.Repo + "/manifests/" + unknownDigest, "MANIFEST_UNKNOWN"},
		{"proj/" + fx.Repo + "/blobs/" + unknownDigest, "BLOB_UNKNOWN"},
		{"proj/nothing/here/manifests/latest", "NAME_UNKNOWN"},
		{"proj/nothing/here/blobs/" + layer, "NAME_UNKNOWN"},
		{"proj/nothing/tags/list", "NAME_UNKNOWN"},
		{"proj/" + fx.Repo + "/manifests/../../../../nginx.conf", ""},
	} {
		a := doHTTP(t, "GET", base+c.path)
		if a.status != 404 || c.code != "" && (!strings.Contains(a.body, `"code":"`+c.code+`"`) || a.header.Get("Content-Type") != "application/json") {
			t.Errorf("GET %s: %d %q %s, want 404 %s", c.path, a.status, a.header.Get("Content-Type"), a.body, c.code)
		}
		if h := doHTTP(t, "HEAD", base+c.path); h.status != 404 || h.body != "" {
			t.Errorf("HEAD %s: %d with %d bytes", c.path, h.status, len(h.body))
		}
	}
	for _, p := range []string{"/nginx.conf", "/.ferry/journal.json", "/blobs/sha256/" + layer[7:]} {
		if a := doHTTP(t, "GET", "http://"+addr+p); a.status != 404 {
			t.Errorf("GET %s: %d, want 404 (only /v2/ is served)", p, a.status)
		}
	}
	if a := doHTTP(t, "POST", base+"proj/x/blobs/uploads/"); a.status != 405 || !strings.Contains(a.body, "UNSUPPORTED") {
		t.Errorf("POST upload: %d %s", a.status, a.body)
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	body := httpGet(t, base+"proj/spaceone/plugin-a/tags/list", "", 200)
	if err := json.Unmarshal(body, &list); err != nil || list.Name != "proj/spaceone/plugin-a" || len(list.Tags) != 7 {
		t.Errorf("tags/list: %s", body)
	}
}

// conformanceVersion is the OCI distribution-spec conformance suite .ci/run
// installs (the module has no tags: a pseudo-version of its main branch).
const conformanceVersion = "v0.0.0-20260831232431-97274622c111"

// conformancePath finds the suite's binary on PATH or in $(go env GOPATH)/bin.
func conformancePath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("conformance"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "conformance")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Fatal("the OCI conformance suite is not installed: go install github.com/opencontainers/distribution-spec/conformance@" + conformanceVersion + " (.ci/run does)")
	return ""
}

// TestStaticConformance runs the read-only tests of the OCI
// distribution-spec conformance suite against nginx serving a static tree:
// pull workflow (ping, manifests by tag and digest, GET and HEAD, blobs),
// tag list, missing manifests, and the referrers API; push, delete and
// mount are disabled, as for any read-only registry.
func TestStaticConformance(t *testing.T) {
	suite := conformancePath(t)
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.SmallSet())
	addr, dir := nginxOverTree(t, bin, reg, fixtures)

	repo := "spaceone/plugin-a"
	var tags, manifests, blobs []string
	seen := map[string]bool{}
	for _, fx := range fixtures {
		if fx.Repo != repo {
			continue
		}
		tags = append(tags, fx.Tag)
		if !seen[fx.Digest] {
			seen[fx.Digest] = true
			manifests = append(manifests, fx.Digest)
			for _, l := range fx.Layers {
				if !seen[l] {
					seen[l] = true
					blobs = append(blobs, l)
				}
			}
		}
	}
	results := filepath.Join(dir, "results")
	env := []string{
		"OCI_REGISTRY=" + addr, "OCI_TLS=disabled", "OCI_REPO1=proj/" + repo, "OCI_REPO2=proj/library/busybox",
		"OCI_RESULTS_DIR=" + results, "OCI_LOG=warn",
		"OCI_API_PUSH=false", "OCI_API_BLOBS_DELETE=false", "OCI_API_MANIFESTS_DELETE=false", "OCI_API_TAGS_DELETE=false",
		"OCI_API_BLOBS_MOUNT_ANONYMOUS=false",
		// The suite cannot check a manifest's Docker-Content-Digest with
		// read-only data (it keeps no response to look at: "did not return a
		// Docker-Content-Digest header" whatever the server sent);
		// TestStaticE2E checks that header on GET and HEAD instead.
		"OCI_API_BLOBS_DIGEST_HEADER=true", "OCI_API_MANIFESTS_DIGEST_HEADER=false",
		"OCI_DATA_SHA512=false",
		"OCI_RO_DATA_TAGS=" + strings.Join(tags, " "),
		"OCI_RO_DATA_MANIFESTS=" + strings.Join(manifests, " "),
		"OCI_RO_DATA_BLOBS=" + strings.Join(blobs, " "),
	}
	// The suite prints its report, then may crash writing results.yaml in
	// read-only mode (a nil test-data entry): its exit status says nothing,
	// the report says everything.
	stdout, stderr, _ := harness.RunWith(t, harness.RunOptions{Dir: dir, Env: env, Timeout: 5 * time.Minute}, suite)
	passed, failed := conformanceReport(stdout)
	// Every read-only test passes, paging through the tag list with ?last=
	// included: no failure is tolerated.
	for name, why := range failed {
		t.Errorf("conformance: %s failed: %s", name, why)
	}
	for _, want := range []string{"Manifest get by digest........:       Pass", "Manifest get by tag...........:       Pass",
		"Manifest head by digest.......:       Pass", "Manifest head by tag..........:       Pass", "Blob get......................:       Pass",
		"Blob head.....................:       Pass", "Referrers.....................:       Pass", "Ping..........................:       Pass",
		"Tag listing...................:       Pass"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("conformance report lacks %q", want)
		}
	}
	if passed < 30 || t.Failed() {
		t.Fatalf("conformance suite: %d tests passed\n%s\n%s", passed, stdout, stderr)
	}
	t.Logf("conformance suite: %d tests passed, none failed", passed)
}

// reload makes nginx read its configuration again (SIGHUP, as nginx -s
// reload sends).
func (n *nginxServer) reload(t testing.TB) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// headDigest returns the status and Docker-Content-Digest of a manifest HEAD.
func headDigest(t *testing.T, url string) (int, string) {
	t.Helper()
	a := doHTTP(t, "HEAD", url)
	return a.status, a.header.Get("Docker-Content-Digest")
}

// TestStaticDelta: a delta bundle (volumes) unpacks on top of its base
// into the same tree; after a reload nginx serves the new tag, the moved
// tag's new digest and the old tags still. Alone into an empty directory,
// the delta is refused and nothing is written.
func TestStaticDelta(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/web", Tag: "latest", Kind: harness.OCIImage, AliasOf: "1.0.0"},
		{Repo: "app/api", Tag: "1.0.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/web\n      - from: app/api\n")
	baseOut, deltaOut := filepath.Join(dir, "base.tar"), filepath.Join(dir, "delta.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", baseOut); code != 0 {
		t.Fatalf("base export: %s %s", stdout, stderr)
	}
	tree := filepath.Join(dir, "tree")
	addr := loopbackAddr(t)
	unpackStatic(t, bin, tree, addr, baseOut)
	ngx := startNginx(t, filepath.Join(tree, "nginx.conf"), addr)
	base := "http://" + addr + "/v2/app/web/manifests/"
	_, oldLatest := headDigest(t, base+"latest")

	added := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.1.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "app/web", Tag: "latest", Kind: harness.OCIImage, AliasOf: "1.1.0"},
	}})
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", deltaOut, "--since", baseOut, "--split", "1MiB"); code != 0 {
		t.Fatalf("delta export: %s %s", stdout, stderr)
	}
	// The delta alone: refused, naming what to do, and nothing written.
	empty := filepath.Join(dir, "empty")
	stdout, stderr, code := harness.Run(t, bin, "unpack", "-q", "--static", empty, deltaOut)
	if code != 1 || !strings.Contains(stderr, "unpack the base bundle into the same directory first") {
		t.Errorf("delta alone: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(empty, "v2/app/web")); err == nil {
		t.Error("the refused delta left files in the tree")
	}

	sum := unpackStatic(t, bin, tree, addr, deltaOut)
	if sum["tagsChanged"] != float64(2) || sum["treeTags"] != float64(4) {
		t.Errorf("delta unpack: %v, want 2 tags changed and 4 in the tree", sum)
	}
	// Until nginx reloads, it serves what it served: latest is still the
	// old image, consistently (body and digest header).
	if st, d := headDigest(t, base+"latest"); st != 200 || d != oldLatest {
		t.Errorf("before reload: latest %d %s, want %s", st, d, oldLatest)
	}
	ngx.reload(t)
	want := added[0].Digest
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, d := headDigest(t, base+"latest"); st == 200 && d == want {
			break
		}
		if time.Now().After(deadline) {
			st, d := headDigest(t, base+"latest")
			log, _ := os.ReadFile(filepath.Join(ngx.prefix, "error.log"))
			t.Fatalf("after reload: latest %d %s, want %s\nnginx error.log:\n%s", st, d, want, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for tag, d := range map[string]string{"1.1.0": want, "1.0.0": oldLatest} {
		if st, got := headDigest(t, base+tag); st != 200 || got != d {
			t.Errorf("%s: %d %s, want %s", tag, st, got, d)
		}
	}
	// The delta's tag is in the list and its pages.
	for q, wantTags := range map[string][]string{"": {"1.0.0", "1.1.0", "latest"}, "?last=1.0.0": {"1.1.0", "latest"}, "?n=1&last=1.0.0": {"1.1.0"}} {
		if p := getTagPage(t, addr, "/v2/app/web/tags/list"+q); p.status != 200 || !slices.Equal(p.tags, wantTags) {
			t.Errorf("tags/list%s after the delta: %d %v, want %v", q, p.status, p.tags, wantTags)
		}
	}
	home := t.TempDir()
	cdir := filepath.Join(dir, "pulled")
	runTool(t, home, cranePath(t), "pull", "--insecure", "--format", "oci", addr+"/app/web:1.1.0", cdir)
	if got := ociLayoutDigest(t, cdir); got != want {
		t.Errorf("crane pull of the delta's image: %s, want %s", got, want)
	}
	checkLayoutBlobs(t, cdir)
}

// TestUnpackUsage: bad invocations exit 2 and say what is wrong, before
// anything is written.
func TestUnpackUsage(t *testing.T) {
	bin := harness.BuildFerry(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "tree")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"unpack", "--static", out}, "at least one bundle"},
		{[]string{"unpack", filepath.Join(dir, "missing.tar")}, "--static DIR"},
		{[]string{"unpack", filepath.Join(dir, "missing.tar"), "--static", out, "--jobs", "0"}, "--jobs"},
		{[]string{"unpack", filepath.Join(dir, "missing.tar"), "--static", out}, "missing.tar"},
	} {
		stdout, stderr, code := harness.Run(t, bin, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("ferry %s: exit %d, stderr %q (want 2, %q)\n%s", strings.Join(c.args, " "), code, stderr, c.want, stdout)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused invocation created the tree")
	}
}

// TestStaticTLS: with --tls-cert and --tls-key the server block listens
// with TLS; clients that trust the CA pull with the source digest, and
// plain HTTP gets no registry answer.
func TestStaticTLS(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIIndex, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)
	ca := harness.NewCA(t)
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	tree := filepath.Join(dir, "tree")
	addr := loopbackAddr(t)
	stdout, stderr, code := harness.Run(t, bin, "unpack", "-q", "--static", tree, "--listen", addr, "--tls-cert", cert, "--tls-key", key, bundlePath)
	if code != 0 || !strings.Contains(stdout, "1 repositories, 1 tags (1 new or moved)") || !strings.Contains(stdout, "nginx -s reload") {
		t.Fatalf("unpack: exit %d\n%s\n%s", code, stdout, stderr)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = ca.TLSConfig()
	client := &http.Client{Transport: tr}
	startNginxWith(t, filepath.Join(tree, "nginx.conf"), addr, "https://"+addr+"/v2/", client)

	fx := fixtures[0]
	home := t.TempDir()
	ref := addr + "/proj/" + fx.Repo + ":" + fx.Tag
	out, errOut, code := harness.RunWith(t, harness.RunOptions{Env: []string{"HOME=" + home, "SSL_CERT_FILE=" + ca.CertFile}}, cranePath(t), "digest", ref)
	if code != 0 || strings.TrimSpace(out) != fx.Digest {
		t.Errorf("crane digest over TLS: exit %d, %q, want %s\n%s", code, out, fx.Digest, errOut)
	}
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(ca.CertFile)
	writeFile(t, filepath.Join(certDir, "ca.crt"), string(data))
	raw := runTool(t, home, skopeoPath(t), "inspect", "--raw", "--cert-dir", certDir, "docker://"+ref)
	if "sha256:"+sha256Hex([]byte(raw)) != fx.Digest {
		t.Errorf("skopeo inspect over TLS: sha256:%s, want %s", sha256Hex([]byte(raw)), fx.Digest)
	}
	if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered 200 on the TLS port")
		}
	}
}

// conformanceReport reads the suite's report: how many tests passed, and
// each failed test with the first line of its reason.
func conformanceReport(stdout string) (int, map[string]string) {
	passed, failed := 0, map[string]string{}
	lines := strings.Split(stdout, "\n")
	for i, line := range lines {
		name, result, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok || !strings.HasPrefix(name, "OCI Conformance Test/") {
			continue
		}
		switch result {
		case "Pass":
			passed++
		case "FAIL":
			why := ""
			if i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "- ") {
				why = strings.TrimSpace(lines[i+1])
			}
			failed[name] = why
		}
	}
	return passed, failed
}
