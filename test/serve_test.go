package test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-airgap/ferry/test/harness"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server is a running ferry command that serves (serve, cache): it prints
// "serving on ADDR" on stderr once listening.
type server struct {
	name   string // the subcommand, for messages
	cmd    *exec.Cmd
	addr   string // 127.0.0.1:PORT
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, once done
}

// startServer starts cmd, `ferry NAME ...`, and waits for its "serving on
// ADDR" line. The process is killed at cleanup if still running.
func startServer(t testing.TB, name string, cmd *exec.Cmd) *server {
	t.Helper()
	s := &server{name: name, cmd: cmd, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	s.cmd.Stdout = s.stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(s.stderr, line)
			if rest, ok := strings.CutPrefix(line, "serving on "); ok {
				select {
				case addrc <- strings.Fields(rest)[0]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		s.err = s.cmd.Wait()
		_ = pw.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	select {
	case s.addr = <-addrc:
	case <-s.done:
		t.Fatalf("ferry %s exited before listening: %v\n%s", s.name, s.err, s.stderr.String())
	case <-time.After(time.Minute):
		t.Fatalf("ferry %s did not print its address\n%s", s.name, s.stderr.String())
	}
	return s
}

// stop sends SIGTERM and returns the exit code.
func (s *server) stop(t testing.TB) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("ferry %s still running 30s after SIGTERM\n%s", s.name, s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// peakRSS returns the process's peak RSS so far, in bytes: its VmHWM, which
// only grows. Read it before stop: rusage's Maxrss would include the test
// binary's RSS, which Linux carries over the vfork+exec that started it.
func (s *server) peakRSS(t testing.TB) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("ferry %s: %v", s.name, err)
	}
	return vmHWM(status) * 1024
}

// served is a running `ferry serve`.
type served struct{ *server }

// startServe runs `ferry serve ARGS --addr 127.0.0.1:0` and waits for the
// "serving on ADDR" line. The process is killed at cleanup if still running.
func startServe(t testing.TB, bin string, args ...string) *served {
	t.Helper()
	return &served{startServer(t, "serve", exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...))}
}

// exportAll exports every tag of every fixture repository to proj/<repo>.
func exportAll(t testing.TB, bin string, reg *harness.Registry, fixtures []harness.Fixture, dir string) string {
	t.Helper()
	var y strings.Builder
	y.WriteString("tasks:\n  - name: all\n    source:\n      registry: " + reg.Host + "\n    mappings:\n")
	for _, r := range harness.Repos(fixtures) {
		y.WriteString("      - from: " + r + "\n        to: proj/" + r + "\n        tags: ['regex: .*']\n")
	}
	mapping := filepath.Join(dir, "all.yaml")
	if err := os.WriteFile(mapping, []byte(y.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle.tar")
	home := t.TempDir()
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}},
		bin, "export", "-q", "-f", mapping, "-o", out)
	if code != 0 {
		t.Fatalf("export exit %d\n%s\n%s", code, stdout, stderr)
	}
	return out
}

func TestServeE2E(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.SmallSet())
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)

	srv := startServe(t, bin, bundlePath, "--source-names")
	insecure := []name.Option{name.Insecure}

	// Every tag, by its target name and by its source name: the source
	// digest, and every byte of the image checks out (go-containerregistry
	// checks each blob's digest as it reads it).
	srcSeg := strings.ReplaceAll(reg.Host, ":", "_")
	for _, fx := range fixtures {
		for _, repo := range []string{"proj/" + fx.Repo, srcSeg + "/" + fx.Repo} {
			ref, err := name.ParseReference(srv.addr+"/"+repo+":"+fx.Tag, insecure...)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Head(ref)
			if err != nil {
				t.Fatalf("HEAD %s: %v", ref, err)
			}
			if desc.Digest.String() != fx.Digest || string(desc.MediaType) != fx.MediaType {
				t.Errorf("HEAD %s: %s %s, source has %s %s", ref, desc.Digest, desc.MediaType, fx.Digest, fx.MediaType)
			}
			if repo != "proj/"+fx.Repo {
				continue // the full pull once per tag is enough
			}
			got, err := remote.Get(ref)
			if err != nil {
				t.Fatalf("GET %s: %v", ref, err)
			}
			if got.Digest.String() != fx.Digest {
				t.Errorf("GET %s: digest %s, want %s", ref, got.Digest, fx.Digest)
			}
			if got.MediaType.IsIndex() {
				idx, err := got.ImageIndex()
				if err == nil {
					err = pullIndex(idx)
				}
				if err != nil {
					t.Errorf("pulling index %s: %v", ref, err)
				}
			} else {
				img, err := got.Image()
				if err == nil {
					err = pullImage(img)
				}
				if err != nil {
					t.Errorf("pulling image %s: %v", ref, err)
				}
			}
		}
	}

	// skopeo: the raw manifest bytes hash to the source digest.
	skopeo := skopeoPath(t)
	home := t.TempDir()
	for _, fx := range fixtures {
		raw := runTool(t, home, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+srv.addr+"/proj/"+fx.Repo+":"+fx.Tag)
		if "sha256:"+sha256Hex([]byte(raw)) != fx.Digest {
			t.Errorf("skopeo inspect --raw %s: sha256:%s, want %s", fx.Ref(), sha256Hex([]byte(raw)), fx.Digest)
		}
	}
	// skopeo copies an OCI image into an OCI layout, digest preserved.
	oci := fixtureByRef(t, fixtures, "spaceone/plugin-a:1.4.1")
	layoutDir := filepath.Join(dir, "oci")
	runTool(t, home, skopeo, "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
		"docker://"+srv.addr+"/proj/spaceone/plugin-a:1.4.1", "oci:"+layoutDir+":1.4.1")
	var layout struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	idxJSON, err := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(idxJSON, &layout); err != nil || len(layout.Manifests) != 1 || layout.Manifests[0].Digest != oci.Digest {
		t.Errorf("skopeo copy to oci: index.json %s, want digest %s", idxJSON, oci.Digest)
	}
	for _, l := range oci.Layers {
		data, err := os.ReadFile(filepath.Join(layoutDir, "blobs/sha256", strings.TrimPrefix(l, "sha256:")))
		if err != nil || "sha256:"+sha256Hex(data) != l {
			t.Errorf("skopeo copy: layer %s missing or wrong (%v)", l, err)
		}
	}

	// Range requests return the right bytes.
	layer := oci.Layers[len(oci.Layers)-1]
	blobURL := "http://" + srv.addr + "/v2/proj/spaceone/plugin-a/blobs/" + layer
	full := httpGet(t, blobURL, "", 200)
	if "sha256:"+sha256Hex(full) != layer {
		t.Fatalf("full GET of %s hashes to sha256:%s", layer, sha256Hex(full))
	}
	part := httpGet(t, blobURL, "bytes=100-1099", 206)
	if !bytes.Equal(part, full[100:1100]) {
		t.Errorf("Range bytes=100-1099: %d bytes, not the blob's", len(part))
	}
	tail := httpGet(t, blobURL, fmt.Sprintf("bytes=%d-", len(full)-7), 206)
	if !bytes.Equal(tail, full[len(full)-7:]) {
		t.Errorf("Range suffix: %q", tail)
	}
	httpGet(t, blobURL, fmt.Sprintf("bytes=%d-", len(full)+10), 416)

	// An unknown tag: 404 MANIFEST_UNKNOWN.
	body := httpGet(t, "http://"+srv.addr+"/v2/proj/spaceone/plugin-a/manifests/9.9.9", "", 404)
	if !strings.Contains(string(body), `"code":"MANIFEST_UNKNOWN"`) {
		t.Errorf("unknown tag body: %s", body)
	}
	// Pushing is refused.
	req, _ := http.NewRequest("POST", "http://"+srv.addr+"/v2/proj/x/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST upload: %d, want 405", resp.StatusCode)
	}

	// ferry mirrors points containerd at the names this server answers
	// (checked above), and OpenShift at the target paths.
	mout, merr, code := harness.Run(t, bin, "mirrors", bundlePath, "--registry", "http://"+srv.addr, "--source-names")
	if code != 0 {
		t.Fatalf("mirrors exit %d: %s", code, merr)
	}
	for _, want := range []string{
		"# --- /etc/containerd/certs.d/" + reg.Host + "/hosts.toml ---",
		`[host."http://` + srv.addr + `/v2/` + srcSeg + `"]`,
		"override_path = true",
		"kind: ImageDigestMirrorSet",
		"  - source: " + reg.Host + "/spaceone/console\n    mirrors:\n      - " + srv.addr + "/proj/spaceone/console\n",
		"No image here comes from Docker Hub",
	} {
		if !strings.Contains(mout, want) {
			t.Errorf("ferry mirrors output lacks %q:\n%s", want, mout)
		}
	}

	// Access log lines, then a clean shutdown on SIGTERM.
	if code := srv.stop(t); code != 0 {
		t.Fatalf("ferry serve exit %d after SIGTERM\n%s", code, srv.stderr.String())
	}
	logs := srv.stderr.String()
	for _, want := range []string{"method=GET path=/v2/proj/spaceone/plugin-a/manifests/9.9.9 status=404", "method=HEAD", "status=206", "shut down"} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

func TestServeTLSAuth(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.SmallSet())
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)

	ca := harness.NewCA(t)
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := writeFile(t, filepath.Join(dir, "htpasswd"), "alice:"+string(hash)+"\n")
	srv := startServe(t, bin, bundlePath, "--tls-cert", cert, "--tls-key", key, "--htpasswd", htpasswd, "--json-log", "--prefix", "mirror")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = ca.TLSConfig()

	fx := fixtureByRef(t, fixtures, "library/redis:7.2.4")
	ref, err := name.ParseReference(srv.addr + "/mirror/proj/library/redis:7.2.4")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(ref, remote.WithTransport(tr)); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("anonymous HEAD: %v, want 401", err)
	}
	if _, err := remote.Head(ref, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: "alice", Password: "wrong"})); err == nil {
		t.Error("a wrong password was accepted")
	}
	got, err := remote.Get(ref, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := got.ImageIndex()
	if err == nil {
		err = pullIndex(idx)
	}
	if err != nil || got.Digest.String() != fx.Digest {
		t.Errorf("pull over TLS with auth: %s (%v), want %s", got.Digest, err, fx.Digest)
	}
	// The challenge names Basic auth.
	client := &http.Client{Transport: tr}
	resp, err := client.Get("https://" + srv.addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
		t.Errorf("GET /v2/ anonymous: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	// JSON access log: one object per line with the fields the issue names.
	var sawAuthed bool
	for _, line := range strings.Split(srv.stderr.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e struct {
			Msg      string `json:"msg"`
			Method   string `json:"method"`
			Path     string `json:"path"`
			Status   int    `json:"status"`
			Bytes    *int64 `json:"bytes"`
			Duration *int64 `json:"duration"`
			User     string `json:"user"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("log line is not JSON: %s", line)
			continue
		}
		if e.Msg == "request" && (e.Method == "" || e.Path == "" || e.Status == 0 || e.Bytes == nil || e.Duration == nil) {
			t.Errorf("access log line lacks a field: %s", line)
		}
		if e.User == "alice" && e.Status == 200 {
			sawAuthed = true
		}
	}
	if !sawAuthed {
		t.Errorf("no access log line for alice's pull:\n%s", srv.stderr.String())
	}
}

func httpGet(t *testing.T, url, rng string, want int) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s (Range %q): %d, want %d: %s", url, rng, resp.StatusCode, want, body)
	}
	return body
}

// pullImage reads an image's config and every layer; go-containerregistry's
// remote reader fails on a digest or size mismatch.
func pullImage(img v1.Image) error {
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		_ = rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
			return fmt.Errorf("layer %s: content is %s", d, got)
		}
	}
	return nil
}

// pullIndex pulls every image of an index.
func pullIndex(idx v1.ImageIndex) error {
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("child %s: %w", d.Digest, err)
		}
		if got, _ := img.Digest(); got != d.Digest {
			return fmt.Errorf("child %s: digest %s", d.Digest, got)
		}
		if err := pullImage(img); err != nil {
			return fmt.Errorf("child %s: %w", d.Digest, err)
		}
	}
	return nil
}
