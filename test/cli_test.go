package test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// cliError is the "error" object of any command's --json output.
type cliError struct {
	Message  string `json:"message"`
	Kind     string `json:"kind"`
	ExitCode int    `json:"exitCode"`
	Registry string `json:"registry"`
	Blob     string `json:"blob"`
}

// jsonResult reads a command's --json output: one object, with "error"
// when the command failed.
func jsonResult(t *testing.T, stdout string) (map[string]json.RawMessage, *cliError) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	raw, ok := m["error"]
	if !ok {
		return m, nil
	}
	var e cliError
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("error object: %v\n%s", err, raw)
	}
	return m, &e
}

// TestCLIFirstContact drives the mistakes and failures a user meets first
// through the built binary: what is refused before any request (exit 2,
// nothing sent, nothing overwritten), what --json says when a run fails,
// and the texts a first run shows.
func TestCLIFirstContact(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{"alice": "s3cret"}})
	harness.Seed(t, reg, "alice", harness.SmallSet())
	proxy, counter := harness.CountingProxy(t, reg)
	env := ferryEnv(t, "FERRY_PASSWORD=s3cret")
	dir := t.TempDir()
	mappingText := `
tasks:
  - name: console
    source:
      registry: ` + proxy.Host + `
    mappings:
      - from: spaceone/console
        to: e/console
        tags: ['1.11.0']
  - name: empty
    source:
      registry: ` + proxy.Host + `
`
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), mappingText)
	auth := []string{"--ca-cert", proxy.CAFile, "--username", "alice"}
	run := func(t *testing.T, o harness.RunOptions, args ...string) (string, string, int) {
		t.Helper()
		if o.Env == nil {
			o.Env = env
		}
		counter.Reset()
		return harness.RunWith(t, o, bin, args...)
	}

	t.Run("output refused before any request", func(t *testing.T) {
		notes := writeFile(t, filepath.Join(dir, "notes.txt"), "keep me")
		for _, tc := range []struct {
			output, want string
		}{
			{mapping, "would overwrite the input " + mapping},
			{dir, "is a folder"},
			{filepath.Join(dir, "missing", "b.tar"), "folder " + filepath.Join(dir, "missing") + " does not exist"},
			{notes, "is not a ferry bundle; not overwriting it (--force replaces it)"},
			{"-", "-o -: a bundle is written with seeks"},
		} {
			stdout, stderr, code := run(t, harness.RunOptions{}, append([]string{"export", "-f", mapping, "-o", tc.output}, auth...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("-o %s: exit %d, stderr %q; want 2 and %q", tc.output, code, stderr, tc.want)
			}
			if n := counter.Total(); n != 0 {
				t.Errorf("-o %s: %d requests before the refusal: %s", tc.output, n, counter)
			}
			if strings.Contains(stderr, ".tmp") || stdout != "" {
				t.Errorf("-o %s: stdout %q, stderr names a temporary file: %q", tc.output, stdout, stderr)
			}
		}
		if b, _ := os.ReadFile(mapping); string(b) != mappingText {
			t.Errorf("the mapping file changed")
		}
		if b, _ := os.ReadFile(notes); string(b) != "keep me" {
			t.Errorf("the notes changed: %q", b)
		}
	})

	t.Run("mapping file from stdin, plurals, warnings once", func(t *testing.T) {
		stdout, stderr, code := run(t, harness.RunOptions{Stdin: []byte(mappingText)}, append([]string{"export", "-f", "-", "--dry-run"}, auth...)...)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "e/console") || !strings.Contains(stdout, "dry run: 1 image, 1 tag,") {
			t.Errorf("stdout:\n%s", stdout)
		}
		if n := strings.Count(stderr, `task "empty" has no mappings`); n != 1 {
			t.Errorf("the warning is printed %d times:\n%s", n, stderr)
		}
		if strings.Contains(stderr, "level=WARN") {
			t.Errorf("a warning as a log line:\n%s", stderr)
		}
	})

	t.Run("empty password on stdin", func(t *testing.T) {
		_, stderr, code := run(t, harness.RunOptions{Env: ferryEnv(t), Stdin: []byte("\n")},
			"export", "-f", mapping, "--dry-run", "--ca-cert", proxy.CAFile, "--username", "alice", "--password-stdin")
		if code != 2 || !strings.Contains(stderr, "no password") || counter.Total() != 0 {
			t.Errorf("exit %d, %d requests, stderr %q", code, counter.Total(), stderr)
		}
	})

	t.Run("usage errors exit 2 before any request", func(t *testing.T) {
		bundlePath := filepath.Join(dir, "missing.tar")
		for _, args := range [][]string{
			{"exprot", "-f", mapping},
			{"export", "-f", mapping, "--dry-run", "--jobs", "many"},
			{"import", mapping, "--to", "127.0.0.1:99999"},
			{"import", mapping, "--to", proxy.Host + "//x"},
			{"import", mapping, "--to", proxy.Host + "/-bad"},
			{"import", bundlePath, "--to", proxy.Host},
			{"verify", bundlePath},
			{"inspect", bundlePath},
			{"serve", bundlePath, "--addr", "127.0.0.1:0"},
			{"export", "-f", filepath.Join(dir, "missing.yaml"), "--dry-run"},
		} {
			stdout, stderr, code := run(t, harness.RunOptions{}, append(args, auth...)...)
			if code != 2 || !strings.HasPrefix(stderr, "error: ") || stdout != "" {
				t.Errorf("%v: exit %d\nstdout %q\nstderr %q", args, code, stdout, stderr)
			}
			if counter.Total() != 0 {
				t.Errorf("%v: %d requests", args, counter.Total())
			}
		}
	})

	t.Run("json: wrong password", func(t *testing.T) {
		stdout, stderr, code := run(t, harness.RunOptions{Env: ferryEnv(t, "FERRY_PASSWORD=Wr0ng-pa55")},
			append([]string{"export", "-f", mapping, "-o", filepath.Join(t.TempDir(), "b.tar"), "--json"}, auth...)...)
		m, e := jsonResult(t, stdout)
		if code != 1 || e == nil || e.Kind != "auth" || e.Registry != proxy.Host || e.ExitCode != 1 {
			t.Fatalf("exit %d, error %+v\nstdout %s\nstderr %s", code, e, stdout, stderr)
		}
		if _, ok := m["failures"]; !ok {
			t.Errorf("the summary is gone; want it beside the error: %s", stdout)
		}
		if strings.Contains(stdout+stderr, "Wr0ng-pa55") {
			t.Errorf("the password is printed")
		}
	})

	t.Run("json: registry down", func(t *testing.T) {
		down := closedPort(t)
		m := writeFile(t, filepath.Join(t.TempDir(), "down.yaml"), "tasks:\n  - name: d\n    source:\n      registry: "+down+"\n    mappings:\n      - from: a/b\n        tags: ['1']\n")
		stdout, stderr, code := run(t, harness.RunOptions{}, "export", "-f", m, "--dry-run", "--json", "--plain-http", "--username", "alice")
		_, e := jsonResult(t, stdout)
		if code != 1 || e == nil || e.Kind != "network" || e.Registry != down {
			t.Fatalf("exit %d, error %+v\nstdout %s\nstderr %s", code, e, stdout, stderr)
		}
		// Without credentials to check first, each image fails on its own
		// (connection refused); the run that failed by them is still of
		// kind network, for export as for sync.
		stdout, stderr, code = run(t, harness.RunOptions{}, "export", "-f", m, "--dry-run", "--json", "--plain-http")
		if _, e := jsonResult(t, stdout); code != 1 || e == nil || e.Kind != "network" || e.Registry != down {
			t.Errorf("export from a closed port without credentials: exit %d, error %+v\nstdout %s\nstderr %s", code, e, stdout, stderr)
		}
		dm := writeFile(t, filepath.Join(t.TempDir(), "sync-down.yaml"), "tasks:\n  - name: d\n    source:\n      registry: "+down+
			"\n    target:\n      registry: "+down+"/m\n    mappings:\n      - from: a/b\n        tags: ['1']\n      - from: a/c\n        tags: ['1']\n")
		stdout, stderr, code = run(t, harness.RunOptions{}, "sync", "-f", dm, "--json", "--plain-http")
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		var last struct{ Error *cliError }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || code != 1 || last.Error == nil ||
			last.Error.Kind != "network" || last.Error.Registry != down {
			t.Errorf("sync to a closed port: exit %d, last line %s (%v)\nstderr %s", code, lines[len(lines)-1], err, stderr)
		}
	})

	t.Run("json: truncated bundle", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "b.tar")
		if _, stderr, code := run(t, harness.RunOptions{}, append([]string{"export", "-f", mapping, "-o", out}, auth...)...); code != 0 {
			t.Fatalf("export: exit %d\n%s", code, stderr)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(out, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		// verify reports a damaged bundle (exit 1); import refuses it as
		// bad input before any request (exit 2). Both: kind bundle.
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"verify", out, "--json"}, 1},
			{[]string{"import", out, "--to", proxy.Host + "/t", "--json", "--ca-cert", proxy.CAFile, "--username", "alice"}, 2},
		} {
			stdout, stderr, code := run(t, harness.RunOptions{}, tc.args...)
			_, e := jsonResult(t, stdout)
			if code != tc.code || e == nil || e.Kind != "bundle" || e.ExitCode != tc.code {
				t.Errorf("%s: exit %d, error %+v; want exit %d, kind bundle\nstdout %s\nstderr %s", tc.args[0], code, e, tc.code, stdout, stderr)
			}
		}
	})

	t.Run("help has examples", func(t *testing.T) {
		for _, c := range []string{"export", "import", "verify", "inspect", "serve", "sync", "mirrors", "keygen"} {
			stdout, _, code := run(t, harness.RunOptions{}, c, "--help")
			if code != 0 || !strings.Contains(stdout, "Examples:\n  ") || !strings.Contains(stdout, "ferry "+c+" ") {
				t.Errorf("ferry %s --help: exit %d\n%s", c, code, stdout)
			}
		}
	})
}

// closedPort is a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestCLISignals: SIGINT and SIGTERM end an export that waits on a
// registry with 130 and 143, say "interrupted", print no result table and
// leave nothing in the output folder.
func TestCLISignals(t *testing.T) {
	bin := harness.BuildFerry(t)
	got := make(chan struct{}, 16)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- struct{}{}:
		default:
		}
		<-r.Context().Done() // a registry that never answers
	}))
	t.Cleanup(hang.Close)
	host := strings.TrimPrefix(hang.URL, "http://")
	m := writeFile(t, filepath.Join(t.TempDir(), "m.yaml"), "tasks:\n  - name: h\n    source:\n      registry: "+host+"\n    mappings:\n      - from: a/b\n        tags: ['1']\n")
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command(bin, "export", "-f", m, "-o", filepath.Join(out, "b.tar"), "--plain-http")
			cmd.Env = append(os.Environ(), ferryEnv(t)...)
			var so, se bytes.Buffer
			cmd.Stdout, cmd.Stderr = &so, &se
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-got:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("ferry sent no request\n%s", se.String())
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("ferry did not stop after %v\n%s", tc.sig, se.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Errorf("exit %d, want %d\nstderr %s", code, tc.code, se.String())
			}
			if !strings.Contains(se.String(), "interrupted by "+map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[tc.sig]) || so.Len() != 0 {
				t.Errorf("stdout %q\nstderr %q", so.String(), se.String())
			}
			if names := dirEntries(t, out); len(names) != 0 {
				t.Errorf("left in the output folder: %v", names)
			}
		})
	}
}
