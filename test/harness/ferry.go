package harness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
	buildOut  []byte
)

// RepoRoot returns the directory holding go.mod, walking up from the
// working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getting working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildFerry builds ./cmd/ferry once per test binary, into a temporary
// directory, and returns the binary's path. The directory is left for the
// operating system's temp cleaning; call RemoveFerryBuild from TestMain to
// remove it earlier.
func BuildFerry(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-harness-build-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "ferry")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", buildBin, "./cmd/ferry")
		cmd.Dir = root
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("building ./cmd/ferry: %v\n%s", buildErr, buildOut)
	}
	return buildBin
}

// RemoveFerryBuild removes the binary BuildFerry built, if any.
func RemoveFerryBuild() {
	if buildBin != "" {
		_ = os.RemoveAll(filepath.Dir(buildBin))
	}
}

// RunOptions tune RunWith.
type RunOptions struct {
	Dir     string        // working directory; "" = the test's
	Env     []string      // added to os.Environ()
	Stdin   []byte        // standard input; nil = none
	Timeout time.Duration // default 2 minutes
	// Hosts are /etc/hosts lines ("127.0.0.1 b.s3.ferry.test") the program
	// sees added to the machine's, in a mount namespace of its own (see
	// WithHosts); the machine's /etc/hosts is not touched.
	Hosts []string
}

// Run runs bin with args and returns its output and exit code. It fails
// the test if the program cannot be started or runs past the timeout.
func Run(t testing.TB, bin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return RunWith(t, RunOptions{}, bin, args...)
}

// RunWith is Run with options.
func RunWith(t testing.TB, o RunOptions, bin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	if len(o.Hosts) > 0 {
		bin, args = WithHosts(t, o.Hosts, bin, args...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), o.Env...)
	if o.Stdin != nil {
		cmd.Stdin = bytes.NewReader(o.Stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out after %s\nstdout:\n%s\nstderr:\n%s", bin, args, o.Timeout, so.String(), se.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return so.String(), se.String(), 0
	case errors.As(err, &ee):
		return so.String(), se.String(), ee.ExitCode()
	default:
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	return so.String(), se.String(), -1
}

// WithHosts returns the command line that runs bin with args seeing
// /etc/hosts with lines added: util-linux unshare gives it a private mount
// namespace (as root, or as root of a new user namespace otherwise) in
// which a copy of /etc/hosts plus lines is bind-mounted over the original.
// Registry clients then reach a virtual-hosted bucket
// (BUCKET.s3.ferry.test) on loopback without DNS or a change to the machine.
func WithHosts(t testing.TB, lines []string, bin string, args ...string) (string, []string) {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("running with extra hosts needs unshare (util-linux): %v", err)
	}
	orig, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	data := append(append(orig, '\n'), []byte(strings.Join(lines, "\n")+"\n")...)
	if err := os.WriteFile(hosts, data, 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		flags = append([]string{"--map-root-user"}, flags...)
	}
	script := `mount --bind "$0" /etc/hosts && exec "$@"`
	return unshare, append(append(flags, "sh", "-c", script, hosts, bin), args...)
}
