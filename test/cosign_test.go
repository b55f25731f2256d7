package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// cosignPath finds cosign on PATH or in $(go env GOPATH)/bin.
func cosignPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "cosign")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("cosign not found: install it with `go install github.com/sigstore/cosign/v2/cmd/cosign@v2.4.1` (.ci/run does)")
	return ""
}

// TestCosignVerifyAfterImport: an image signed with cosign upstream, carried
// with --with-referrers, passes `cosign verify` against the internal
// registry; carried without it, it does not.
func TestCosignVerifyAfterImport(t *testing.T) {
	cosign := cosignPath(t)
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/signed", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "COSIGN_PASSWORD=", "DOCKER_CONFIG=" + filepath.Join(dir, ".docker"), "TUF_ROOT=" + filepath.Join(dir, "tuf")}
	run := func(want int, args ...string) string {
		t.Helper()
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Dir: dir, Env: env}, cosign, args...)
		if (want == 0) != (code == 0) {
			t.Fatalf("cosign %s: exit %d, want %s\n%s\n%s", strings.Join(args, " "), code, map[bool]string{true: "0", false: "non-zero"}[want == 0], stdout, stderr)
		}
		return stdout + stderr
	}
	run(0, "generate-key-pair")
	run(0, "sign", "--yes", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry", src.Host+"/app/signed@"+fx[0].Digest)

	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/signed\n        to: mirror/signed\n        tags: ['1.0']\n")
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	for _, c := range []struct {
		flags  []string
		prefix string
		want   int
	}{
		{[]string{"--with-referrers"}, "with", 0},
		{nil, "without", 1}, // any non-zero exit: "no signatures found"
	} {
		out := filepath.Join(dir, c.prefix+".tar")
		args := append([]string{"export", "-q", "-f", mapping, "-o", out}, c.flags...)
		if stdout, stderr, code := harness.Run(t, bin, args...); code != 0 {
			t.Fatalf("export: %s %s", stdout, stderr)
		}
		if stdout, stderr, code := harness.Run(t, bin, "import", "-q", out, "--to", dst.Host+"/"+c.prefix); code != 0 {
			t.Fatalf("import: %s %s", stdout, stderr)
		}
		got := run(c.want, "verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", dst.Host+"/"+c.prefix+"/mirror/signed:1.0")
		if c.want == 0 && !strings.Contains(got, fx[0].Digest) {
			t.Errorf("cosign verify output does not name the image digest:\n%s", got)
		}
	}
}
