package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Harbor is a real Harbor v2.15.2 (core, PostgreSQL, Redis and Debian's
// docker-registry behind it) started from ../shared/harbor with its up.sh.
// One Harbor serves the whole test binary: StartHarbor starts it on first
// use, StopHarbor (called from TestMain) stops it. Tests keep out of each
// other's way by using their own projects (NewProject).
type Harbor struct {
	Host          string // 127.0.0.1:PORT (core: /api/v2.0, /service/token, /v2/)
	URL           string // http://127.0.0.1:PORT
	Admin         string // "admin"
	AdminPassword string
	// StateDir holds Harbor's data, configs and logs (logs/core.log, ...).
	StateDir string
	// RegistryPort is the port of Harbor's own registry behind core.
	RegistryPort int
	// PIDs of the services (core, registry, postgres, redis), for CPU
	// accounting in benchmarks.
	PIDs map[string]int

	script string // folder of up.sh and down.sh
}

// HarborDir is where up.sh and down.sh live: $FERRY_HARBOR_DIR, else
// ../shared/harbor beside the repository (where CI lays shared/).
func HarborDir(t testing.TB) string {
	if d := os.Getenv("FERRY_HARBOR_DIR"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(t), "..", "shared", "harbor")
}

var harborShared sharedServer[Harbor]

// StartHarbor returns the test binary's Harbor, starting it on first use
// (about 5-10 s; longer on a fresh machine, where up.sh installs
// PostgreSQL and Redis). It needs root and ../shared/harbor: where either is
// missing the test fails, unless FERRY_SKIP_HARBOR=1 asks to skip.
func StartHarbor(t testing.TB) *Harbor {
	t.Helper()
	return harborShared.get(t, "a real Harbor", "FERRY_SKIP_HARBOR", func() (*Harbor, error) { return startHarbor(HarborDir(t)) })
}

// StopHarbor stops the test binary's Harbor, if one was started, and
// removes its state (unless FERRY_KEEP_HARBOR=1 keeps it for a look).
func StopHarbor() {
	h := harborShared.take()
	if h == nil {
		return
	}
	out, err := exec.Command("bash", filepath.Join(h.script, "down.sh"), h.StateDir).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: stopping Harbor: %v\n%s", err, out)
		return
	}
	if os.Getenv("FERRY_KEEP_HARBOR") != "1" {
		_ = os.RemoveAll(h.StateDir)
	}
}

func startHarbor(dir string) (*Harbor, error) {
	if _, err := os.Stat(filepath.Join(dir, "up.sh")); err != nil {
		return nil, fmt.Errorf("no Harbor scripts in %s (set FERRY_HARBOR_DIR): %w", dir, err)
	}
	state, err := os.MkdirTemp("", "ferry-harbor-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	h := &Harbor{
		Host: fmt.Sprintf("127.0.0.1:%d", ports[0]), URL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		Admin: "admin", AdminPassword: "Harbor12345", StateDir: state, RegistryPort: ports[1], script: dir,
	}
	cmd := exec.Command("bash", filepath.Join(dir, "up.sh"), state)
	cmd.Env = append(os.Environ(),
		"HARBOR_PORT="+strconv.Itoa(ports[0]), "REGISTRY_PORT="+strconv.Itoa(ports[1]),
		"PG_PORT="+strconv.Itoa(ports[2]), "REDIS_PORT="+strconv.Itoa(ports[3]),
		"ADMIN_PASSWORD="+h.AdminPassword)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(state)
		return nil, fmt.Errorf("%s %s: %w\n%s", cmd.Args[1], state, err, out)
	}
	h.PIDs = map[string]int{}
	for _, name := range []string{"core", "registry", "postgres", "redis"} {
		if b, err := os.ReadFile(filepath.Join(state, "pids", name+".pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])); err == nil {
				h.PIDs[name] = pid
			}
		}
	}
	return h, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// API sends one request to Harbor's API (/api/v2.0 + path) as admin and
// returns the status and body. body is marshalled as JSON unless nil.
func (h *Harbor) API(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	return h.APIAs(t, h.Admin, h.AdminPassword, method, path, body)
}

// APIAs is API with other credentials ("" user: anonymous).
func (h *Harbor) APIAs(t testing.TB, user, password, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.URL+"/api/v2.0"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("Harbor API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// MustAPI is API that fails the test unless the status is one of want,
// and decodes a JSON answer into out (if not nil).
func (h *Harbor) MustAPI(t testing.TB, method, path string, body, out any, want ...int) {
	t.Helper()
	code, b := h.API(t, method, path, body)
	for _, w := range want {
		if code == w {
			if out != nil && len(b) > 0 {
				if err := json.Unmarshal(b, out); err != nil {
					t.Fatalf("Harbor API %s %s: decoding %s: %v", method, path, b, err)
				}
			}
			return
		}
	}
	t.Fatalf("Harbor API %s %s: %d %s, want %v", method, path, code, b, want)
}

var projectSeq struct {
	sync.Mutex
	n int
}

// UniqueProject returns a project name no other test of this binary uses
// (prefix plus a counter and the process id); it is not created.
func UniqueProject(prefix string) string {
	projectSeq.Lock()
	defer projectSeq.Unlock()
	projectSeq.n++
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), projectSeq.n)
}

// NewProject creates a private project with a unique name and returns it.
func (h *Harbor) NewProject(t testing.TB, prefix string) string {
	t.Helper()
	p := UniqueProject(prefix)
	h.MustAPI(t, http.MethodPost, "/projects", map[string]any{
		"project_name": p, "metadata": map[string]string{"public": "false"},
	}, nil, http.StatusCreated)
	return p
}

// RobotPermission is one access of a project robot: resource ("repository",
// "artifact", "tag", ...) and action ("pull", "push", "list", ...).
type RobotPermission struct {
	Resource string `json:"resource"`
	Action   string `json:"action"`
}

// PushPull is what an importing robot needs on its project.
var PushPull = []RobotPermission{{"repository", "pull"}, {"repository", "push"}, {"artifact", "read"}, {"tag", "list"}, {"tag", "create"}, {"artifact", "list"}}

// NewRobot creates a project robot with the given access and returns its
// full name (robot$project+name) and secret.
func (h *Harbor) NewRobot(t testing.TB, project, name string, access []RobotPermission) (user, secret string) {
	t.Helper()
	var out struct {
		ID     int64  `json:"id"`
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}
	h.MustAPI(t, http.MethodPost, "/robots", map[string]any{
		"name": name, "duration": -1, "level": "project", "disable": false,
		"permissions": []map[string]any{{"kind": "project", "namespace": project, "access": access}},
	}, &out, http.StatusCreated)
	if out.Name == "" || out.Secret == "" {
		t.Fatalf("Harbor created robot %s in %s without a name or secret", name, project)
	}
	return out.Name, out.Secret
}

// Tags returns the tags of project/repo that Harbor lists through the
// registry API, as admin.
func (h *Harbor) Tags(t testing.TB, repo string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.URL+"/v2/"+repo+"/tags/list", nil)
	req.SetBasicAuth(h.Admin, h.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var v struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("Harbor tags of %s: %v", repo, err)
	}
	return v.Tags
}

// Logs returns the tail of one of Harbor's logs (core, registry, postgres,
// redis) for a failing test's message.
func (h *Harbor) Logs(name string, lines int) string {
	b, err := os.ReadFile(filepath.Join(h.StateDir, "logs", name+".log"))
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// CPU is the CPU time Harbor's services have used so far, by service:
// each service's process with all its descendants, living or gone
// (PostgreSQL forks a backend per connection; the postmaster's cutime
// holds the ones that ended).
func (h *Harbor) CPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range h.PIDs {
		out[name] = treeCPU(pid)
	}
	return out
}

// Registry describes Harbor's core as a Registry (plain HTTP, admin in
// Users), for CountingProxy, Ref and RemoteOptions.
func (h *Harbor) Registry() *Registry {
	return &Registry{Host: h.Host, URL: h.URL, Users: map[string]string{h.Admin: h.AdminPassword}}
}

// Repositories returns the names (project/repo...) of the repositories
// Harbor lists in project, as admin; none for a missing project.
func (h *Harbor) Repositories(t testing.TB, project string) []string {
	t.Helper()
	var out []string
	for page := 1; ; page++ {
		code, b := h.API(t, http.MethodGet, fmt.Sprintf("/projects/%s/repositories?page=%d&page_size=100", project, page), nil)
		if code == http.StatusNotFound || code == http.StatusForbidden {
			return out
		}
		if code != http.StatusOK {
			t.Fatalf("Harbor repositories of %s: %d %s", project, code, b)
		}
		var repos []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(b, &repos); err != nil {
			t.Fatalf("Harbor repositories of %s: %v", project, err)
		}
		for _, r := range repos {
			out = append(out, r.Name)
		}
		if len(repos) < 100 {
			return out
		}
	}
}

// ProjectExists reports whether Harbor has project, as admin.
func (h *Harbor) ProjectExists(t testing.TB, project string) bool {
	t.Helper()
	code, b := h.API(t, http.MethodHead, "/projects?project_name="+project, nil)
	switch code {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	t.Fatalf("Harbor HEAD project %s: %d %s", project, code, b)
	return false
}
