package mapping_test

import (
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/mapping"
)

// TestCanonicalRegistry: a task's registry is its host made canonical by
// names.CanonicalHost (whose own test holds the host rules: Docker Hub's
// aliases, ports, case) with any path after it kept as written.
func TestCanonicalRegistry(t *testing.T) {
	tests := []struct{ registry, want string }{
		{"Registry.Hub.Docker.COM", "docker.io"},
		{" docker.io:443 ", "docker.io"},
		{"Harbor.Example.com:8443", "harbor.example.com:8443"},
		{"harbor.local/Team", "harbor.local/Team"},           // a path after the host is kept
		{"registry.hub.docker.com/myorg", "docker.io/myorg"}, // a host with a path prefix
		{" harbor.local:443/a/b ", "harbor.local/a/b"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := mapping.CanonicalRegistry(tt.registry); got != tt.want {
			t.Errorf("CanonicalRegistry(%q) = %q, want %q", tt.registry, got, tt.want)
		}
		host, _, _ := strings.Cut(strings.TrimSpace(tt.registry), "/")
		if got, _, _ := strings.Cut(mapping.CanonicalRegistry(tt.registry), "/"); got != names.CanonicalHost(host) {
			t.Errorf("CanonicalRegistry(%q) has host %q; names.CanonicalHost(%q) = %q", tt.registry, got, host, names.CanonicalHost(host))
		}
	}
}

func TestSourceRepository(t *testing.T) {
	tests := []struct{ registry, from, want string }{
		{"registry.hub.docker.com", "redis", "docker.io/library/redis"},
		{"docker.io", "/redis", "docker.io/library/redis"},
		{"index.docker.io", "library/redis", "docker.io/library/redis"},
		{"registry-1.docker.io", "spaceone/console", "docker.io/spaceone/console"},
		{"quay.io", "redis", "quay.io/redis"}, // library/ is Docker Hub only
		{"Harbor.Local:8443", "a/b.c/d_e/f__g/h-i/j--k", "harbor.local:8443/a/b.c/d_e/f__g/h-i/j--k"},
		{"harbor.local/mirror", "redis", "harbor.local/mirror/redis"},
		{"registry.hub.docker.com/myorg", "app", "docker.io/myorg/app"},
		{"[::1]:5000", "x", "[::1]:5000/x"},
		{"10.0.0.1:5000", "x", "10.0.0.1:5000/x"},
	}
	for _, tt := range tests {
		got, err := mapping.SourceRepository(tt.registry, tt.from)
		if err != nil || got != tt.want {
			t.Errorf("SourceRepository(%q, %q) = %q, %v; want %q", tt.registry, tt.from, got, err, tt.want)
		}
	}
}

func TestSourceRepositoryRejects(t *testing.T) {
	tests := []struct{ registry, from, want string }{
		{"docker.io", "redis:7", "contains a tag"},
		{"localhost:5000", "team/app:v1", "contains a tag"},
		{"docker.io", "redis@sha256:" + strings.Repeat("a", 64), "contains a digest"},
		{"docker.io", "Redis", "not a valid repository name"},
		{"docker.io", "a//b", "not a valid repository name"},
		{"docker.io", "a/", "not a valid repository name"},
		{"docker.io", "-a", "not a valid repository name"},
		{"docker.io", "a_-b", "not a valid repository name"},
		{"docker.io", "a___b", "not a valid repository name"},
		{"docker.io", "", "empty repository path"},
		{"docker.io", "regex:.*", "regular expression"},
		{"docker.io", strings.Repeat("a", 256), "longer than 255"},
		{"", "redis", "registry not set"},
		{"https://quay.io", "redis", "is a URL"},
		{"quay io", "redis", "not a host[:port]"},
		{"quay.io:", "redis", "not a host[:port]"},
		{"harbor.local/UPPER", "redis", "not a valid repository path"},
	}
	for _, tt := range tests {
		got, err := mapping.SourceRepository(tt.registry, tt.from)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SourceRepository(%q, %q) = %q, %v; want error containing %q", tt.registry, tt.from, got, err, tt.want)
		}
	}
}
