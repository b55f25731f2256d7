package registry

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

// fakeKeychain stands in for the docker default keychain.
type fakeKeychain map[string]authn.AuthConfig

func (f fakeKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if cfg, ok := f[r.RegistryStr()]; ok {
		return authn.FromConfig(cfg), nil
	}
	return authn.Anonymous, nil
}

func userPass(t *testing.T, a authn.Authenticator) (string, string) {
	t.Helper()
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Username, cfg.Password
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const dockerConfig = `{"auths":{
  "https://index.docker.io/v1/": {"auth": "%s"},
  "harbor.internal": {"username": "robot$ferry", "password": "file-pass"},
  "both.example": {"auth": "%s"}
}}`

func writeDockerConfig(t *testing.T) string {
	return writeFile(t, filepath.Join(t.TempDir(), "config.json"),
		fmt.Appendf(nil, dockerConfig, b64("hubuser:hub-pass"), b64("fileuser:file-pass2")))
}

func TestKeychainOrder(t *testing.T) {
	k, err := NewKeychain(writeDockerConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	k.fallback = fakeKeychain{
		"both.example":    {Username: "dockeruser", Password: "docker-pass"},
		"only.docker":     {Username: "dockeruser", Password: "docker-pass"},
		"harbor.internal": {Username: "x", Password: "y"},
	}
	k.Set("both.example", "flaguser", "flag-pass")

	cases := []struct{ host, user, pass string }{
		{"both.example", "flaguser", "flag-pass"},           // explicit beats file and docker
		{"harbor.internal", "robot$ferry", "file-pass"},     // file beats docker
		{"HARBOR.internal:443", "robot$ferry", "file-pass"}, // same host
		{"only.docker", "dockeruser", "docker-pass"},        // docker keychain last
		{"nobody.example", "", ""},                          // anonymous
	}
	for _, tc := range cases {
		a, err := k.Resolve(tc.host)
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		if tc.user == "" {
			if a != authn.Anonymous {
				t.Errorf("%s: got %v, want anonymous", tc.host, a)
			}
			continue
		}
		if u, p := userPass(t, a); u != tc.user || p != tc.pass {
			t.Errorf("%s: got %s, want user %s", tc.host, a, tc.user)
		}
	}
}

func TestKeychainDockerHubAliases(t *testing.T) {
	k, err := NewKeychain(writeDockerConfig(t)) // stored as https://index.docker.io/v1/
	if err != nil {
		t.Fatal(err)
	}
	k.fallback = nil
	for _, h := range []string{"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "https://registry.hub.docker.com"} {
		a, err := k.Resolve(h)
		if err != nil {
			t.Fatal(err)
		}
		if u, _ := userPass(t, a); u != "hubuser" {
			t.Errorf("%s: user %q, want hubuser from the auth file", h, u)
		}
	}
	k.Set("registry.hub.docker.com", "flaguser", "flag-pass")
	a, _ := k.Resolve("docker.io")
	if u, _ := userPass(t, a); u != "flaguser" {
		t.Errorf("docker.io after Set(registry.hub.docker.com): user %q, want flaguser", u)
	}
	if canonicalHost("registry-1.docker.io") != DockerHub || canonicalHost("quay.io") == DockerHub {
		t.Error("canonicalHost: Docker Hub aliases")
	}
}

func TestAuthFileFormats(t *testing.T) {
	dcj := fmt.Sprintf(`{"auths":{"harbor.internal:8443":{"auth":%q}}}`, b64("bob:pull-secret-pass"))
	cases := map[string]string{
		"config.json":     dcj,
		"secret.json":     fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/dockerconfigjson","data":{".dockerconfigjson":%q}}`, b64(dcj)),
		"secret.yaml":     "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\nmetadata:\n  name: pull\ndata:\n  .dockerconfigjson: " + b64(dcj) + "\n",
		"stringdata.yaml": "apiVersion: v1\nkind: Secret\nstringData:\n  .dockerconfigjson: '" + dcj + "'\n",
		"dockercfg.json":  fmt.Sprintf(`{"kind":"Secret","data":{".dockercfg":%q}}`, b64(fmt.Sprintf(`{"harbor.internal:8443":{"auth":%q}}`, b64("bob:pull-secret-pass")))),
		"config.yaml":     "auths:\n  harbor.internal:8443:\n    username: bob\n    password: pull-secret-pass\n",
	}
	for file, content := range cases {
		t.Run(file, func(t *testing.T) {
			k, err := NewKeychain(writeFile(t, filepath.Join(t.TempDir(), file), []byte(content)))
			if err != nil {
				t.Fatal(err)
			}
			k.fallback = nil
			a, err := k.Resolve("harbor.internal:8443")
			if err != nil {
				t.Fatal(err)
			}
			if u, p := userPass(t, a); u != "bob" || p != "pull-secret-pass" {
				t.Errorf("got user %q", u)
			}
			if got := k.Hosts(); !slices.Equal(got, []string{"harbor.internal:8443"}) {
				t.Errorf("Hosts() = %q, want [harbor.internal:8443]", got)
			}
		})
	}
}

func TestKeychainHosts(t *testing.T) {
	k, err := NewKeychain(writeDockerConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	k.Set("flag.example", "flaguser", "flag-pass")
	want := []string{"both.example", "docker.io", "harbor.internal"}
	if got := k.Hosts(); !slices.Equal(got, want) {
		t.Errorf("Hosts() = %q, want %q (the file's hosts, canonical and sorted)", got, want)
	}
	none, err := NewKeychain("")
	if err != nil {
		t.Fatal(err)
	}
	if got := none.Hosts(); len(got) != 0 {
		t.Errorf("Hosts() without an auth file = %q, want none", got)
	}
}

func TestAuthFileErrorsDoNotQuoteContent(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":   "password: [not closed\n\t- sup3r-secret",
		"badbase64": `{"kind":"Secret","data":{".dockerconfigjson":"sup3r-secret!!"}}`,
		"noauths":   `{"kind":"Secret","data":{"other":"x"}}`,
		"badauth":   `{"auths":{"h":{"auth":"sup3r-secret!!"}}}`,
	} {
		_, err := NewKeychain(writeFile(t, filepath.Join(t.TempDir(), name), []byte(content)))
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
			continue
		}
		if strings.Contains(err.Error(), "sup3r-secret") {
			t.Errorf("%s: error quotes the file: %q", name, err)
		}
	}
	if _, err := NewKeychain(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrConfig) {
		t.Errorf("missing auth file: %v", err)
	}
}

func TestCredentialNeverPrintsSecret(t *testing.T) {
	k, _ := NewKeychain("")
	k.fallback = fakeKeychain{"helper.example": {Username: "h", Password: "helper-secret", IdentityToken: "id-secret"}}
	k.Set("r.example", "alice", "hunter2-secret")
	for _, host := range []string{"r.example", "helper.example"} {
		a, err := k.Resolve(host)
		if err != nil {
			t.Fatal(err)
		}
		var logbuf bytes.Buffer
		slog.New(slog.NewJSONHandler(&logbuf, nil)).Info("auth", "cred", a)
		slog.New(slog.NewTextHandler(&logbuf, nil)).Info("auth", "cred", a)
		out := fmt.Sprintf("%v %+v %#v %s %q", a, a, a, a, a) + fmt.Sprint(a) + logbuf.String()
		for _, secret := range []string{"hunter2-secret", "helper-secret", "id-secret", b64("alice:hunter2-secret")} {
			if strings.Contains(out, secret) {
				t.Errorf("%s: secret %q printed: %s", host, secret, out)
			}
		}
		if !strings.Contains(out, host) {
			t.Errorf("%s: printed form %q does not name the host", host, out)
		}
	}
}
