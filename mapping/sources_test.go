package mapping

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// userOf returns the user name auth logs in as ("" anonymous).
func userOf(t *testing.T, a authn.Authenticator) string {
	t.Helper()
	if a == authn.Anonymous {
		return ""
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Username
}

// TestSourceCredentialOrder: --username, then the task's source auth, then
// --auth-file, then the docker keychain; a mirror host gets only the last
// two, and `auth: none` means anonymous whatever else is there.
func TestSourceCredentialOrder(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "none.json"))
	if err := os.MkdirAll(filepath.Join(dir, "docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker", "config.json"), []byte(`{"auths":{"docker.example":{"username":"dockeruser","password":"d"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(authFile, []byte(`{"auths":{"reg.example:5000":{"username":"fileuser","password":"f"},"mirror.example":{"username":"mirroruser","password":"m"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kc, err := registry.NewKeychain(authFile)
	if err != nil {
		t.Fatal(err)
	}
	withAuth := &Task{Name: "a", Source: Endpoint{Registry: "reg.example:5000/proj", Auth: &Auth{Username: "taskuser", Password: "t"}}}
	without := &Task{Name: "b", Source: Endpoint{Registry: "reg.example:5000"}}
	none := &Task{Name: "c", Source: Endpoint{Registry: "reg.example:5000", Auth: &Auth{Anonymous: true}}}
	dockerTask := &Task{Name: "d", Source: Endpoint{Registry: "docker.example"}}
	flags := &Sources{Keychain: kc, Username: "flaguser", Password: "x"}
	plain := &Sources{Keychain: kc}
	for _, tc := range []struct {
		s    *Sources
		host string
		task *Task
		want string
	}{
		{flags, "reg.example:5000", withAuth, "flaguser"},
		{plain, "reg.example:5000", withAuth, "taskuser"},
		{plain, "reg.example:5000", without, "fileuser"},
		{plain, "reg.example:5000", none, ""},
		{flags, "mirror.example", withAuth, "mirroruser"}, // a mirror: neither flags nor task auth
		{plain, "docker.example", dockerTask, "dockeruser"},
		{plain, "other.example", without, ""},
	} {
		a, err := tc.s.Auth(tc.host, tc.task)
		if err != nil {
			t.Fatal(err)
		}
		if got := userOf(t, a); got != tc.want {
			t.Errorf("%s for task %s (flags %q): user %q, want %q", tc.host, tc.task.Name, tc.s.Username, got, tc.want)
		}
	}
}

// TestTargetLogins: a task's target auth counts for the --to host when the
// task names that host, no host, or a placeholder; the first one wins and
// a different later one is a warning.
func TestTargetLogins(t *testing.T) {
	tasks := []*Task{
		{Name: "elsewhere", Target: Endpoint{Registry: "other.example", Auth: &Auth{Username: "o", Password: "o"}}},
		{Name: "placeholder", Target: Endpoint{Placeholders: []string{"registry"}, Auth: &Auth{Username: "p", Password: "p"}}},
		{Name: "same", Target: Endpoint{Registry: "harbor.example/mirror", Auth: &Auth{Username: "s", Password: "s"}}},
		{Name: "noauth", Target: Endpoint{Registry: "harbor.example"}},
	}
	logins, warnings := TargetLogins(tasks, "harbor.example")
	if len(logins) != 2 || logins[0].Username != "p" || logins[1].Username != "s" {
		t.Fatalf("logins %+v", logins)
	}
	if len(warnings) != 1 {
		t.Errorf("warnings %q, want one about task same", warnings)
	}
	kc, _ := registry.NewKeychain("")
	a, err := kc.Resolve("harbor.example", logins...)
	if err != nil || userOf(t, a) != "p" {
		t.Errorf("resolved %v, %v; want the first login", a, err)
	}
}
