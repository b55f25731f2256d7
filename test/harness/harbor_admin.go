package harness

import (
	"bufio"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Harbor administration the refusal and interop tests need: project
// quotas, immutable tag rules, proxy-cache projects and plain users.

// ProjectID returns the id of Harbor project name.
func (h *Harbor) ProjectID(t testing.TB, name string) int64 {
	t.Helper()
	var p struct {
		ID int64 `json:"project_id"`
	}
	h.MustAPI(t, http.MethodGet, "/projects/"+url.PathEscape(name), nil, &p, http.StatusOK)
	if p.ID == 0 {
		t.Fatalf("Harbor project %s has no id", name)
	}
	return p.ID
}

// SetQuota sets project's storage quota to bytes (-1: unlimited) with
// PUT /quotas/{id}, and returns the quota's id.
func (h *Harbor) SetQuota(t testing.TB, project string, bytes int64) int64 {
	t.Helper()
	var qs []struct {
		ID int64 `json:"id"`
	}
	h.MustAPI(t, http.MethodGet, fmt.Sprintf("/quotas?reference=project&reference_id=%d", h.ProjectID(t, project)), nil, &qs, http.StatusOK)
	if len(qs) != 1 {
		t.Fatalf("Harbor project %s has %d quotas", project, len(qs))
	}
	h.MustAPI(t, http.MethodPut, fmt.Sprintf("/quotas/%d", qs[0].ID), map[string]any{"hard": map[string]int64{"storage": bytes}}, nil, http.StatusOK)
	return qs[0].ID
}

// AddImmutableRule adds an enabled immutable tag rule to project: tags
// matching tagPattern in repositories matching repoPattern (doublestar
// patterns; "**" is everything), with the JSON shape of Harbor v2.15's
// swagger (ImmutableRule).
func (h *Harbor) AddImmutableRule(t testing.TB, project, repoPattern, tagPattern string) {
	t.Helper()
	h.MustAPI(t, http.MethodPost, "/projects/"+url.PathEscape(project)+"/immutabletagrules", map[string]any{
		"disabled": false, "action": "immutable", "template": "immutable_template",
		"tag_selectors":   []map[string]string{{"kind": "doublestar", "decoration": "matches", "pattern": tagPattern}},
		"scope_selectors": map[string][]map[string]string{"repository": {{"kind": "doublestar", "decoration": "repoMatches", "pattern": repoPattern}}},
	}, nil, http.StatusCreated)
}

// NewRegistryEndpoint registers upstreamURL (a docker-registry the test
// runs, http://127.0.0.1:PORT) as a Harbor registry endpoint and returns
// its id. Harbor pings it first: it must be up.
func (h *Harbor) NewRegistryEndpoint(t testing.TB, name, upstreamURL string) int64 {
	t.Helper()
	h.MustAPI(t, http.MethodPost, "/registries", map[string]any{
		"name": name, "type": "docker-registry", "url": upstreamURL, "insecure": true,
	}, nil, http.StatusCreated)
	var regs []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	h.MustAPI(t, http.MethodGet, "/registries?q="+url.QueryEscape("name="+name), nil, &regs, http.StatusOK)
	for _, r := range regs {
		if r.Name == name {
			return r.ID
		}
	}
	t.Fatalf("Harbor lists no registry endpoint %s after creating it", name)
	return 0
}

// NewProxyCacheProject makes a proxy-cache project of upstreamURL and
// returns its name.
//
// Shortcut: Harbor's API cannot create one here. POST /projects with
// registry_id also creates the project's default retention policy, whose
// schedule goes to jobservice, which this Harbor does not run (core answers
// 500 and rolls the project back). So the project is created as a normal
// one, and its registry_id is set in Harbor's PostgreSQL: the one column
// by which Harbor tells a proxy-cache project (project.IsProxy() is
// registry_id > 0), which is what both the push refusal and
// GET /api/v2.0/projects read. Premise: core reads projects from the
// database on every request (no project cache: CACHE_ENABLED is unset in
// up.sh's core env). The test that relies on it checks that Harbor itself
// then refuses a push into the project (TestHarborRefusesProxyCacheProject).
func (h *Harbor) NewProxyCacheProject(t testing.TB, prefix, upstreamURL string) string {
	t.Helper()
	p := h.NewProject(t, prefix)
	id := h.NewRegistryEndpoint(t, "up-"+p, upstreamURL)
	h.SQL(t, fmt.Sprintf("UPDATE project SET registry_id = %d WHERE name = '%s'", id, p))
	var got struct {
		RegistryID int64 `json:"registry_id"`
	}
	h.MustAPI(t, http.MethodGet, "/projects/"+p, nil, &got, http.StatusOK)
	if got.RegistryID != id {
		t.Fatalf("Harbor project %s: registry_id %d after the update, want %d", p, got.RegistryID, id)
	}
	return p
}

// SQL runs one statement in Harbor's database with Debian's psql.
func (h *Harbor) SQL(t testing.TB, stmt string) string {
	t.Helper()
	env := h.coreEnv(t)
	psqls, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
	psql, err := exec.LookPath("psql")
	if len(psqls) > 0 {
		psql, err = psqls[len(psqls)-1], nil
	}
	if err != nil {
		t.Fatalf("no psql for Harbor's PostgreSQL: %v", err)
	}
	cmd := exec.Command(psql, "-q", "-w", "-At", "-h", env["POSTGRESQL_HOST"], "-p", env["POSTGRESQL_PORT"],
		"-U", env["POSTGRESQL_USERNAME"], "-d", env["POSTGRESQL_DATABASE"], "-c", stmt)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+env["POSTGRESQL_PASSWORD"])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", stmt, err, out)
	}
	return string(out)
}

// coreEnv reads the environment up.sh gave Harbor's core.
func (h *Harbor) coreEnv(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(h.StateDir, "conf", "core", "env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env
}

// NewUser creates a Harbor user (not an admin) with a unique name and
// returns name and password. Tests that need a failed login use such a
// user: a failed login locks that user for 1.5 s.
func (h *Harbor) NewUser(t testing.TB, prefix string) (name, password string) {
	t.Helper()
	name = strings.ReplaceAll(UniqueProject(prefix), "-", "")
	password = "Passw0rd-" + name
	h.MustAPI(t, http.MethodPost, "/users", map[string]any{
		"username": name, "password": password, "email": name + "@example.test", "realname": name,
	}, nil, http.StatusCreated)
	return name, password
}

// AddMember gives user role on project (1 admin, 2 developer, 3 guest,
// 4 maintainer).
func (h *Harbor) AddMember(t testing.TB, project, user string, role int) {
	t.Helper()
	h.MustAPI(t, http.MethodPost, "/projects/"+url.PathEscape(project)+"/members", map[string]any{
		"role_id": role, "member_user": map[string]string{"username": user},
	}, nil, http.StatusCreated)
}
