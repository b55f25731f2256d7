package names

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		in, want string
		hub      bool
	}{
		{"docker.io", "docker.io", true},
		{"index.docker.io", "docker.io", true},
		{"registry-1.docker.io", "docker.io", true},
		{"registry.hub.docker.com", "docker.io", true},
		{"Registry.Hub.Docker.COM", "docker.io", true},
		{" docker.io ", "docker.io", true},
		{"docker.io:443", "docker.io", true},
		{"https://index.docker.io/v1/", "docker.io", true}, // docker config.json's key for Docker Hub
		{"http://registry-1.docker.io", "docker.io", true},
		{"docker.io/library", "docker.io", true},
		{"hub.docker.com", "hub.docker.com", false}, // the web site, not a registry
		{"docker.io:5000", "docker.io:5000", false},
		{"Harbor.Example.com:8443", "harbor.example.com:8443", false},
		{"harbor.local:443", "harbor.local", false},
		{"localhost:5000", "localhost:5000", false},
		{"[::1]:5000", "[::1]:5000", false},
		{"quay.io", "quay.io", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got := CanonicalHost(tt.in); got != tt.want {
			t.Errorf("CanonicalHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := IsDockerHub(tt.in); got != tt.hub {
			t.Errorf("IsDockerHub(%q) = %v, want %v", tt.in, got, tt.hub)
		}
	}
	if DockerHubAPI != "registry-1.docker.io" || !IsDockerHub(DockerHubAPI) {
		t.Errorf("DockerHubAPI = %q", DockerHubAPI)
	}
}

func TestLibraryPath(t *testing.T) {
	tests := []struct{ host, path, want string }{
		{"docker.io", "redis", "library/redis"},
		{"registry.hub.docker.com", "redis", "library/redis"},
		{"index.docker.io", "bitnami/redis", "bitnami/redis"},
		{"docker.io", "library/redis", "library/redis"},
		{"quay.io", "redis", "redis"},
		{"docker.io:5000", "redis", "redis"},
		{"docker.io", "", ""},
	}
	for _, tt := range tests {
		if got := LibraryPath(tt.host, tt.path); got != tt.want {
			t.Errorf("LibraryPath(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
}

// checkValid says which of good valid refuses and which of bad it accepts.
func checkValid(t *testing.T, name string, valid func(string) bool, good, bad []string) {
	t.Helper()
	for _, s := range good {
		if !valid(s) {
			t.Errorf("%s(%q) = false", name, s)
		}
	}
	for _, s := range bad {
		if valid(s) {
			t.Errorf("%s(%q) = true", name, s)
		}
	}
}

func TestValidRepository(t *testing.T) {
	good := []string{"a", "redis", "library/redis", "cloudforet/spaceone/console", "a.b_c__d---e/f", "0/1", strings.Repeat("a", MaxNameLength)}
	bad := []string{"", "Redis", "a//b", "/a", "a/", "a_", "_a", "a___b", "a..b", "a:b", "a@b", "a b", "../a", "a/../b", strings.Repeat("a", MaxNameLength+1)}
	checkValid(t, "ValidRepository", ValidRepository, good, bad)
	if !ValidComponent("spaceone") || ValidComponent("a/b") || ValidComponent("") {
		t.Error("ValidComponent accepts a path or refuses a component")
	}
}

func TestValidTag(t *testing.T) {
	good := []string{"latest", "1.11.3", "v1.0.0-rc.1", "_x", "A", strings.Repeat("a", MaxTagLength)}
	bad := []string{"", ".x", "-x", "a:b", "a/b", "a b", "a@b", strings.Repeat("a", MaxTagLength+1), "ümlaut"}
	checkValid(t, "ValidTag", ValidTag, good, bad)
}

func TestValidHost(t *testing.T) {
	good := []string{"docker.io", "localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "Harbor.Example.com"}
	bad := []string{"", "https://x", "a/b", "-a.com", "a.com:", "a.com:123456", "a b"}
	checkValid(t, "ValidHost", ValidHost, good, bad)
}

func TestLooksLikeHost(t *testing.T) {
	for in, want := range map[string]bool{
		"quay.io/org/app": true, "localhost/app": true, "host:5000/app": true,
		"/quay.io/app": true, "org/app": false, "quay.io": false, "quay.io/": false,
	} {
		if got := LooksLikeHost(in); got != want {
			t.Errorf("LooksLikeHost(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseDigest(t *testing.T) {
	h64, h128 := strings.Repeat("a", 64), strings.Repeat("0", 128)
	d, err := ParseDigest("sha256:" + h64)
	if err != nil || d.Algorithm != "sha256" || d.Hex != h64 || d.String() != "sha256:"+h64 {
		t.Errorf("ParseDigest(sha256) = %+v, %v", d, err)
	}
	for _, s := range []string{"sha512:" + h128, "blake3:abcd", "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564"} {
		if !ValidDigest(s) {
			t.Errorf("ValidDigest(%q) = false", s)
		}
	}
	bad := map[string]string{
		"":                               "malformed digest",
		"sha256":                         "malformed sha256 digest",
		"sha256:" + h64[:63]:             "malformed sha256 digest",
		"sha256:" + strings.ToUpper(h64): "malformed sha256 digest",
		"sha256:../../etc/passwd":        "malformed sha256 digest",
		"sha512:" + h64:                  "malformed sha512 digest",
		"SHA256:" + h64:                  "malformed digest",
		"md5":                            "malformed digest",
		":abc":                           "malformed digest",
		"md5:a/b":                        "malformed digest",
	}
	for s, want := range bad {
		_, err := ParseDigest(s)
		if !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDigest(%q) = %v; want ErrDigest saying %q", s, err, want)
		}
	}
}

func TestParseSHA256(t *testing.T) {
	h64 := strings.Repeat("f", 64)
	if hex, err := ParseSHA256("sha256:" + h64); err != nil || hex != h64 {
		t.Errorf("ParseSHA256 = %q, %v", hex, err)
	}
	if _, err := ParseSHA256("sha512:" + strings.Repeat("0", 128)); !errors.Is(err, ErrAlgorithm) || !strings.Contains(err.Error(), `"sha512"`) {
		t.Errorf("ParseSHA256(sha512) = %v; want ErrAlgorithm naming sha512", err)
	}
	if _, err := ParseSHA256("sha256:xyz"); !errors.Is(err, ErrDigest) {
		t.Errorf("ParseSHA256(sha256:xyz) = %v; want ErrDigest", err)
	}
	if !IsSHA256Hex(h64) || IsSHA256Hex(h64[1:]) || IsSHA256Hex(strings.ToUpper(h64)) {
		t.Error("IsSHA256Hex")
	}
	long := "sha256:" + strings.Repeat("x", 500)
	if _, err := ParseSHA256(long); err == nil || len(err.Error()) > 200 {
		t.Errorf("an error about a long digest quotes all of it: %d bytes", len(err.Error()))
	}
}

func TestParseReference(t *testing.T) {
	dg := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		in   string
		want Reference
	}{
		{"docker.io/library/redis:7.2", Reference{"docker.io", "library/redis", "7.2", ""}},
		{"registry.hub.docker.com/redis:7", Reference{"docker.io", "library/redis", "7", ""}},
		{"index.docker.io/bitnami/nginx@" + dg, Reference{"docker.io", "bitnami/nginx", "", dg}},
		{"Quay.IO/org/app:1.0@" + dg, Reference{"quay.io", "org/app", "1.0", dg}},
		{"127.0.0.1:5000/spaceone/console:1.11.0", Reference{"127.0.0.1:5000", "spaceone/console", "1.11.0", ""}},
		{"localhost:5000/a/b", Reference{"localhost:5000", "a/b", "", ""}},
		{"harbor.local:443/a", Reference{"harbor.local", "a", "", ""}},
	}
	for _, tt := range tests {
		got, err := ParseReference(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseReference(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	if r, _ := ParseReference("docker.io/redis:7@" + dg); r.String() != "docker.io/library/redis:7@"+dg || r.Name() != "docker.io/library/redis" {
		t.Errorf("String/Name = %q, %q", r.String(), r.Name())
	}
	bad := map[string]string{
		"redis":                               "no registry host",
		"/redis":                              "no registry host",
		"quay.io/":                            "no repository",
		"quay.io/:1":                          "no repository",
		"quay.io/Org/App":                     "repository is not",
		"quay.io/a:b:c":                       "repository is not",
		"quay.io/a:-x":                        "bad tag",
		"quay.io/a@sha256:zz":                 "bad digest",
		"https://quay.io/a":                   "is not a registry host",
		"quay.io/a/../../b":                   "repository is not",
		"quay.io/" + strings.Repeat("a", 250): "repository is not",
	}
	for in, want := range bad {
		_, err := ParseReference(in)
		if !errors.Is(err, ErrReference) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseReference(%q) = %v; want ErrReference saying %q", in, err, want)
		}
	}
}
