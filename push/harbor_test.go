package push_test

// There is no real Harbor in these tests. fakeHarbor answers the documented
// Harbor v2.0 endpoints ferry uses (systeminfo, ping, users/current,
// HEAD/POST projects) the way Harbor 2.x does, in front of
// go-containerregistry's in-process registry for /v2/, and adds Harbor's
// registry behaviours that matter here: a push into a missing project
// answers 401 "project X not found", a project quota answers 403 "Quota
// exceeded", and (like Harbor's token service) /v2/ itself lets bad
// credentials through, so only the API or a write shows them.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

type fakeHarbor struct {
	srv  *httptest.Server
	host string

	mu       sync.Mutex
	users    map[string]string // robot accounts: users/current answers 403 to them
	projects map[string]int64  // name → quota in bytes (0 = unlimited)
	used     map[string]int64
	created  []map[string]any // POST /api/v2.0/projects bodies
	writes   []string         // non-GET/HEAD /v2/ requests that succeeded
	// hideProjects makes HEAD /api/v2.0/projects answer 401, as Harbor
	// does for accounts that may not see the project.
	hideProjects bool
	// pullOnly refuses every write, as Harbor does for an account that
	// may pull but not push.
	pullOnly bool
}

func newFakeHarbor(t *testing.T, projects map[string]int64) *fakeHarbor {
	t.Helper()
	fh := &fakeHarbor{users: map[string]string{"robot$proj+ci": "pw"}, projects: projects, used: map[string]int64{}}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2.0/systeminfo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"harbor_version":"v2.15.0-fake","auth_mode":"db_auth","with_chartmuseum":false}`)
	})
	mux.HandleFunc("GET /api/v2.0/ping", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `"Pong"`) })
	mux.HandleFunc("GET /api/v2.0/users/current", func(w http.ResponseWriter, r *http.Request) {
		if !fh.authOK(r) {
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		harborErr(w, http.StatusForbidden, "FORBIDDEN", "get user info is not supported by the security context robot")
	})
	mux.HandleFunc("HEAD /api/v2.0/projects", func(w http.ResponseWriter, r *http.Request) {
		fh.mu.Lock()
		_, ok := fh.projects[r.URL.Query().Get("project_name")]
		hide := fh.hideProjects
		fh.mu.Unlock()
		if hide {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if !ok {
			w.WriteHeader(http.StatusNotFound)
		}
	})
	mux.HandleFunc("POST /api/v2.0/projects", func(w http.ResponseWriter, r *http.Request) {
		if !fh.authOK(r) {
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			harborErr(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
			return
		}
		name, _ := body["project_name"].(string)
		fh.mu.Lock()
		defer fh.mu.Unlock()
		fh.created = append(fh.created, body)
		if _, ok := fh.projects[name]; ok {
			harborErr(w, http.StatusConflict, "CONFLICT", "The project named "+name+" already exists")
			return
		}
		fh.projects[name] = 0
		w.Header().Set("Location", "/api/v2.0/projects/1")
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK) // Harbor's anonymous token passes /v2/
			return
		}
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		fh.mu.Lock()
		pullOnly := fh.pullOnly
		fh.mu.Unlock()
		if !read && (!fh.authOK(r) || pullOnly) {
			w.Header().Set("WWW-Authenticate", `Basic realm="harbor"`)
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized to access repository")
			return
		}
		proj := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/v2/"), "/", 2)[0]
		fh.mu.Lock()
		quota, ok := fh.projects[proj]
		used := fh.used[proj]
		fh.mu.Unlock()
		if !ok {
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "project "+proj+" not found")
			return
		}
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			if quota > 0 && used+r.ContentLength > quota {
				harborErr(w, http.StatusForbidden, "DENIED", fmt.Sprintf("Quota exceeded when processing the request of adding %d B of storage resource, which when updated to current usage of %d B will exceed the configured upper limit of %d B.", r.ContentLength, used, quota))
				return
			}
			fh.mu.Lock()
			fh.used[proj] += r.ContentLength
			fh.mu.Unlock()
		}
		sw := &statusWriter{ResponseWriter: w, status: 200}
		reg.ServeHTTP(sw, r)
		if !read && sw.status < 300 {
			fh.mu.Lock()
			fh.writes = append(fh.writes, r.Method+" "+r.URL.Path)
			fh.mu.Unlock()
		}
	})
	fh.srv = httptest.NewServer(mux)
	t.Cleanup(fh.srv.Close)
	fh.host = strings.TrimPrefix(fh.srv.URL, "http://")
	return fh
}

func (fh *fakeHarbor) authOK(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	return ok && fh.users[u] == p && p != ""
}

func (fh *fakeHarbor) blobWrites() []string {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	var out []string
	for _, w := range fh.writes {
		if strings.HasPrefix(w, "PUT") || strings.HasPrefix(w, "PATCH") {
			out = append(out, w)
		}
	}
	return out
}

func harborErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func asRobot(pw string) func(*push.Options) {
	return func(o *push.Options) { o.Username, o.Password = "robot$proj+ci", pw }
}

// TestHarborMissingProject: a missing project stops the run before any
// upload with one error naming the project and the flag, not one failure
// per image.
func TestHarborMissingProject(t *testing.T) {
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{})
	sum, err := run(t, path, fh.host+"/mirror", asRobot("pw"))
	want := "Harbor project mirror does not exist on " + fh.host + "; create it in the Harbor UI or rerun with --create-projects"
	var pe *push.HarborProjectError
	if !errors.As(err, &pe) || !errors.Is(err, push.ErrProjectMissing) || err.Error() != want {
		t.Fatalf("err = %v\nwant %q", err, want)
	}
	if !sum.Harbor {
		t.Error("Harbor not detected")
	}
	if len(sum.Failures) != 0 || sum.Pushed != 0 {
		t.Errorf("failures listed one by one: %+v; pushed %d", sum.Failures, sum.Pushed)
	}
	if w := fh.blobWrites(); len(w) != 0 {
		t.Errorf("writes into a missing project: %v", w)
	}
}

// TestHarborMissingProjects: several missing projects are named in one
// error.
func TestHarborMissingProjects(t *testing.T) {
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{})
	_, err := run(t, path, fh.host, asRobot("pw"))
	want := "Harbor projects library, spaceone do not exist on " + fh.host + "; create them in the Harbor UI or rerun with --create-projects"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %q", err, want)
	}
}

func TestHarborMissingProjectAtPushTime(t *testing.T) {
	// When Harbor's API will not say whether a project exists (the account
	// may not list projects), the 401 "project X not found" of the survey
	// is recognised and explained once, before any blob is uploaded.
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{})
	fh.hideProjects = true
	sum, err := run(t, path, fh.host+"/mirror", asRobot("pw"))
	want := "Harbor project mirror does not exist on " + fh.host + "; create it in the Harbor UI or rerun with --create-projects"
	if !errors.Is(err, push.ErrProjectMissing) || err.Error() != want {
		t.Fatalf("err = %v\nwant %q", err, want)
	}
	if len(sum.Failures) != 0 {
		t.Errorf("failures listed one by one: %+v", sum.Failures)
	}
	if w := fh.blobWrites(); len(w) != 0 {
		t.Errorf("writes into a missing project: %v", w)
	}
}

// TestHarborPushDenied: an account that logs in but may not push gets one
// error naming it, the project and the permission, before any upload.
func TestHarborPushDenied(t *testing.T) {
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{"mirror": 0})
	fh.pullOnly = true
	sum, err := run(t, path, fh.host+"/mirror", asRobot("pw"))
	var pd *push.PushDeniedError
	if !errors.As(err, &pd) || !errors.Is(err, push.ErrPushDenied) {
		t.Fatalf("err = %v, want a PushDeniedError", err)
	}
	for _, w := range []string{`"robot$proj+ci" may not push to Harbor project mirror on ` + fh.host, "unauthorized to access repository", "push and pull permissions"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q: %v", w, err)
		}
	}
	if len(sum.Failures) != 0 || len(fh.writes) != 0 {
		t.Errorf("failures %v, writes %v", sum.Failures, fh.writes)
	}
}

func TestHarborCreateProjects(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run("public="+strconv.FormatBool(public), func(t *testing.T) {
			path, _ := testBundle(t)
			fh := newFakeHarbor(t, map[string]int64{"library": 0})
			sum, err := run(t, path, fh.host+"/mirror", func(o *push.Options) {
				asRobot("pw")(o)
				o.CreateProjects, o.Public = true, public
			})
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if len(fh.created) != 1 {
				t.Fatalf("create calls: %v", fh.created)
			}
			body := fh.created[0]
			meta, _ := body["metadata"].(map[string]any)
			if body["project_name"] != "mirror" || meta["public"] != strconv.FormatBool(public) {
				t.Errorf("POST /api/v2.0/projects body %v", body)
			}
			if len(sum.ProjectsCreated) != 1 || sum.ProjectsCreated[0] != "mirror" || sum.Pushed != len(sum.Images) {
				t.Errorf("summary: created %v, pushed %d of %d", sum.ProjectsCreated, sum.Pushed, len(sum.Images))
			}
		})
	}
	// Existing projects are not created again; a dry run creates nothing.
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{})
	sum, err := run(t, path, fh.host+"/mirror", func(o *push.Options) {
		asRobot("pw")(o)
		o.CreateProjects, o.DryRun = true, true
	})
	if err != nil || len(fh.created) != 0 || len(fh.blobWrites()) != 0 {
		t.Fatalf("dry run: err %v, created %v, writes %v", err, fh.created, fh.blobWrites())
	}
	if len(sum.Warnings) != 1 || !strings.Contains(sum.Warnings[0], "would be created (private)") {
		t.Errorf("dry run warnings: %v", sum.Warnings)
	}
}

func TestHarborQuota(t *testing.T) {
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{"mirror": 6000})
	sum, err := run(t, path, fh.host+"/mirror", asRobot("pw"))
	if !errors.Is(err, push.ErrFailed) {
		t.Fatalf("err = %v", err)
	}
	if sum.Failed == 0 {
		t.Fatal("no image failed")
	}
	for _, f := range sum.Failures {
		if !strings.Contains(f.Error, `storage quota of project "mirror" on `+fh.host+" exceeded") || !strings.Contains(f.Error, "more bytes") {
			t.Errorf("not a quota error: %+v", f)
		}
		var needed int64
		if i := strings.Index(f.Error, "exceeded; "); i >= 0 {
			_, _ = fmt.Sscanf(f.Error[i+len("exceeded; "):], "%d", &needed)
		}
		t.Log(f.Error)
		if needed <= 0 {
			t.Errorf("no bytes still needed in %q", f.Error)
		}
	}
	// No tag for a failed image.
	for _, im := range sum.Images {
		if im.Status != push.StatusFailed {
			continue
		}
		for _, tag := range im.Tags {
			resp, err := http.Head(fh.srv.URL + "/v2/" + strings.TrimPrefix(im.Repository, fh.host+"/") + "/manifests/" + tag.Tag)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s:%s exists after a quota failure", im.Repository, tag.Tag)
			}
		}
	}
}

func TestHarborWrongPassword(t *testing.T) {
	// Harbor's /v2/ lets bad credentials through (anonymous token); the
	// API check catches them before any upload.
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{"mirror": 0})
	sum, err := run(t, path, fh.host+"/mirror", asRobot("wrong"))
	if !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), fh.host) || !strings.Contains(err.Error(), "robot$proj+ci") {
		t.Errorf("error does not name registry and user: %v", err)
	}
	if sum.Pushed != 0 || len(fh.writes) != 0 {
		t.Errorf("writes after a wrong password: %v", fh.writes)
	}
}

func TestMappingFileTargetAuth(t *testing.T) {
	path, _ := testBundle(t)
	fh := newFakeHarbor(t, map[string]int64{"mirror": 0})
	auth := base64.StdEncoding.EncodeToString([]byte(`{"username": "robot$proj+ci", "password": "pw"}`))
	m := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(m, []byte(`
tasks:
  - name: placeholder-target
    source:
      registry: registry.hub.docker.com
    target:
      registry: {registry_address}
      auth: `+auth+`
    mappings:
      - from: spaceone/console
`), 0o600); err != nil {
		t.Fatal(err)
	}
	logins, warnings, err := mapping.LoadTargetLogins(fh.host, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(logins) != 1 || logins[0].Username != "robot$proj+ci" {
		t.Fatalf("logins from the mapping file: %+v", logins)
	}
	sum, err := run(t, path, fh.host+"/mirror", func(o *push.Options) { o.Logins, o.Warnings = logins, warnings })
	if err != nil {
		t.Fatalf("push with the mapping file's target auth: %v", err)
	}
	if sum.Pushed != len(sum.Images) {
		t.Errorf("pushed %d of %d", sum.Pushed, len(sum.Images))
	}
	if len(sum.Warnings) == 0 {
		t.Error("no warning about the placeholder registry")
	}
}
