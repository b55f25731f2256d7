package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/push"
	"github.com/ferry-airgap/ferry/replicate"
)

// These tests check flags → options → library call with the library call
// replaced (runners), so that flag handling, exit codes and --json errors
// are tested without registries. test/cli_test.go drives the built binary.

type cliResult struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, ctx context.Context, r runners, stdin string, args ...string) cliResult {
	t.Helper()
	var so, se strings.Builder
	e := &env{stdin: strings.NewReader(stdin), stdout: &so, stderr: &se}
	code := execute(ctx, e, newRootCmd(e, r), args)
	return cliResult{code, so.String(), se.String()}
}

// neverCalled fails the test if a command reaches its library call.
func neverCalled(t *testing.T) runners {
	return runners{
		export: func(context.Context, export.Options) (*export.Summary, error) {
			t.Error("export.Run called; the command should have stopped before")
			return nil, nil
		},
		push: func(context.Context, push.Options) (*push.Summary, error) {
			t.Error("push.Run called; the command should have stopped before")
			return nil, nil
		},
		sync: func(context.Context, replicate.Options, *replicate.WatchOptions) error {
			t.Error("replicate called; the command should have stopped before")
			return nil
		},
	}
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const mappingYAML = "tasks:\n- name: t\n  source: {registry: r.example}\n  mappings: [{from: a/b}]\n"

func TestExportFlagsToOptions(t *testing.T) {
	t.Setenv("FERRY_PASSWORD", "s3cret")
	m := writeTemp(t, "m.yaml", mappingYAML)
	since := writeTemp(t, "prev.json", "{}")
	out := filepath.Join(t.TempDir(), "b.tar")
	var got export.Options
	r := runners{export: func(_ context.Context, o export.Options) (*export.Summary, error) {
		got = o
		return &export.Summary{Output: o.Output, Images: []export.ImageSummary{{Source: "r.example/a/b:1", Target: "a/b", Tags: []string{"1"}}},
			Failures: []export.FailureSummary{}, Tags: 1, Blobs: 1, SHA256: "abc", Warnings: []string{"m.yaml:3: a warning"}}, nil
	}}
	res := runCLI(t, context.Background(), r, "", "export", "-f", m, "-o", out, "--task", "t", "--task", "u",
		"--platform", "linux/amd64,linux/arm64", "--mirror", "docker.io=mirror.example", "--jobs", "7", "--keep-going",
		"--split", "4GiB", "--cache", "c", "--since", since, "--with-referrers", "--min-quota", "5", "--username", "ci")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	want := export.Options{Files: []string{m}, Tasks: []string{"t", "u"}, Output: out, Jobs: 7, KeepGoing: true,
		Platforms: []string{"linux/amd64", "linux/arm64"}, Mirrors: map[string]string{"index.docker.io": "mirror.example"},
		Username: "ci", Password: "s3cret", Since: since, WithReferrers: true, Split: 4 << 30, CacheDir: "c", MinQuota: 5}
	if fmt.Sprint(got.Files, got.Tasks, got.Output, got.Jobs, got.KeepGoing, got.Platforms, got.Username, got.Password, got.Since, got.WithReferrers, got.Split, got.CacheDir, got.MinQuota) !=
		fmt.Sprint(want.Files, want.Tasks, want.Output, want.Jobs, want.KeepGoing, want.Platforms, want.Username, want.Password, want.Since, want.WithReferrers, want.Split, want.CacheDir, want.MinQuota) {
		t.Errorf("options = %+v\nwant      %+v", got, want)
	}
	if len(got.Mirrors) != 1 || got.Client == nil || got.Keychain == nil || got.Progress == nil || got.FerryVersion == "" {
		t.Errorf("mirrors %v, client %v, keychain %v, progress %v, version %q", got.Mirrors, got.Client, got.Keychain, got.Progress, got.FerryVersion)
	}
	if !strings.Contains(res.stdout, "1 image, 1 tag, 1 unique blob,") {
		t.Errorf("summary without singulars:\n%s", res.stdout)
	}
	if n := strings.Count(res.stderr, "a warning"); n != 1 {
		t.Errorf("the warning is printed %d times:\n%s", n, res.stderr)
	}
}

// TestExportOutputChecks: -o mistakes are refused with exit 2 before the
// library (and so any registry) is called.
func TestExportOutputChecks(t *testing.T) {
	dir := t.TempDir()
	m := writeTemp(t, "m.yaml", mappingYAML)
	notBundle := writeTemp(t, "notes.txt", "my notes")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"output is the mapping file", []string{"-o", m}, "would overwrite the input " + m},
		{"a directory", []string{"-o", dir}, "is a folder"},
		{"missing folder", []string{"-o", filepath.Join(dir, "nope", "b.tar")}, "does not exist"},
		{"not a bundle", []string{"-o", notBundle}, "is not a ferry bundle; not overwriting it (--force replaces it)"},
		{"stdout", []string{"-o", "-"}, "-o -"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, context.Background(), neverCalled(t), "", append([]string{"export", "-f", m}, tc.args...)...)
			if res.code != 2 || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", res.code, res.stderr, tc.want)
			}
		})
	}
	t.Run("sidecar of the output is an input", func(t *testing.T) {
		in := writeTemp(t, "b.tar.sha256", mappingYAML)
		res := runCLI(t, context.Background(), neverCalled(t), "", "export", "-f", in, "-o", strings.TrimSuffix(in, ".sha256"))
		if res.code != 2 || !strings.Contains(res.stderr, "would overwrite the input") {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
	})
	t.Run("force, empty file, existing bundle", func(t *testing.T) {
		called := 0
		r := runners{export: func(_ context.Context, o export.Options) (*export.Summary, error) {
			called++
			return nil, nil
		}}
		empty := writeTemp(t, "empty.tar", "")
		old := filepath.Join(t.TempDir(), "old.tar")
		if err := os.WriteFile(old, tarWithFirstEntry(t, "oci-layout"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"-o", notBundle, "--force"}, {"-o", empty}, {"-o", old}} {
			if res := runCLI(t, context.Background(), r, "", append([]string{"export", "-f", m}, args...)...); res.code != 0 {
				t.Errorf("%v: exit %d: %s", args, res.code, res.stderr)
			}
		}
		if called != 3 {
			t.Errorf("export called %d times, want 3", called)
		}
		if b, _ := os.ReadFile(notBundle); string(b) != "my notes" {
			t.Errorf("checking touched the file: %q", b)
		}
	})
}

func tarWithFirstEntry(t *testing.T, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 2, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestExportMappingFromStdin(t *testing.T) {
	var got []byte
	r := runners{export: func(_ context.Context, o export.Options) (*export.Summary, error) {
		var err error
		got, err = os.ReadFile(o.Files[0])
		return nil, err
	}}
	res := runCLI(t, context.Background(), r, mappingYAML, "export", "-f", "-", "--dry-run")
	if res.code != 0 || string(got) != mappingYAML {
		t.Fatalf("exit %d (%s); the library read %q", res.code, res.stderr, got)
	}
	res = runCLI(t, context.Background(), neverCalled(t), "pw\n", "export", "-f", "-", "--dry-run", "--username", "u", "--password-stdin")
	if res.code != 2 || !strings.Contains(res.stderr, "both read standard input") {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
}

func TestEmptyPasswordOnStdin(t *testing.T) {
	m := writeTemp(t, "m.yaml", mappingYAML)
	for _, args := range [][]string{
		{"export", "-f", m, "--dry-run", "--username", "u", "--password-stdin"},
		{"sync", "-f", m, "--username", "u", "--password-stdin"},
	} {
		res := runCLI(t, context.Background(), neverCalled(t), "\n", args...)
		if res.code != 2 || !strings.Contains(res.stderr, "standard input holds no password") {
			t.Errorf("%v: exit %d: %s", args, res.code, res.stderr)
		}
	}
	b := writeTemp(t, "b.tar", "x")
	res := runCLI(t, context.Background(), neverCalled(t), "", "import", b, "--to", "r.example", "--username", "u", "--password-stdin")
	if res.code != 2 || !strings.Contains(res.stderr, "no password") {
		t.Errorf("import: exit %d: %s", res.code, res.stderr)
	}
}

// TestJSONCarriesTheError: a fatal error is an "error" object in the JSON
// result, beside what the command did, with its kind and registry.
func TestJSONCarriesTheError(t *testing.T) {
	m := writeTemp(t, "m.yaml", mappingYAML)
	authErr := fmt.Errorf("checking credentials: %w", &registry.AuthError{Registry: "r.example:5000", User: "ci", Status: 401})
	r := runners{export: func(context.Context, export.Options) (*export.Summary, error) {
		return &export.Summary{Images: []export.ImageSummary{}, Failures: []export.FailureSummary{}}, authErr
	}}
	res := runCLI(t, context.Background(), r, "", "export", "-f", m, "--dry-run", "--json")
	var out struct {
		Images []any      `json:"images"`
		Failed *int       `json:"failed"`
		Error  *jsonError `json:"error"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, res.stdout)
	}
	if res.code != 1 || out.Images == nil || out.Error == nil || out.Error.Kind != "auth" || out.Error.Registry != "r.example:5000" ||
		out.Error.ExitCode != 1 || !strings.Contains(out.Error.Message, "checking credentials") {
		t.Fatalf("exit %d, %+v\n%s", res.code, out.Error, res.stdout)
	}

	// Failing before the library call: the error alone.
	for _, tc := range []struct {
		args []string
		kind string
		code int
	}{
		{[]string{"export", "-f", "/nonexistent.yaml", "--dry-run", "--json"}, "input", 2},
		{[]string{"verify", "/nonexistent.tar", "--json"}, "input", 2},
		{[]string{"inspect", writeTemp(t, "junk.tar", "not a tar at all, not a tar at all"), "--json"}, "input", 2},
		{[]string{"import", "/nonexistent.tar", "--to", "r.example", "--json"}, "input", 2},
		{[]string{"sync", "-f", m, "--to", "host//x", "--json"}, "input", 2},
	} {
		res := runCLI(t, context.Background(), neverCalled(t), "", tc.args...)
		var out struct{ Error *jsonError }
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || out.Error == nil || out.Error.Kind != tc.kind || res.code != tc.code || out.Error.ExitCode != tc.code {
			t.Errorf("%v: exit %d, stdout %s (err %v); want kind %s, exit %d", tc.args, res.code, res.stdout, err, tc.kind, tc.code)
		}
	}
}

func TestImportFlagsToOptions(t *testing.T) {
	b := writeTemp(t, "b.tar", "x")
	var got push.Options
	r := runners{push: func(_ context.Context, o push.Options) (*push.Summary, error) {
		got = o
		return &push.Summary{Target: o.To, DryRun: o.DryRun, Pushed: 1, Images: []push.ImageResult{{Repository: "r.example/p/a"}}}, nil
	}}
	t.Setenv("FERRY_PASSWORD", "pw")
	res := runCLI(t, context.Background(), r, "", "import", b, "--to", "r.example:5000/p", "--dry-run", "--create-projects", "--public", "--jobs", "3", "--username", "robot$p+ci")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if got.Bundle != b || got.To != "r.example:5000/p" || !got.DryRun || !got.CreateProjects || !got.Public || got.Jobs != 3 ||
		got.Username != "robot$p+ci" || got.Password != "pw" || got.Client == nil || got.Progress == nil || got.VerifyProgress == nil {
		t.Errorf("options = %+v", got)
	}
	if !strings.Contains(res.stdout, "dry run into r.example:5000/p: 1 image to push") {
		t.Errorf("summary:\n%s", res.stdout)
	}
}

// TestUsageErrorsExit2: what the user can fix before anything runs is
// exit 2, and no library call happens.
func TestUsageErrorsExit2(t *testing.T) {
	b := writeTemp(t, "b.tar", "x")
	m := writeTemp(t, "m.yaml", mappingYAML)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"exprot"}, `unknown command "exprot" for ferry (did you mean export?)`},
		{[]string{"export", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"export", "-f", m, "--dry-run", "--jobs", "x"}, "invalid argument"},
		{[]string{"export", "-f", m, "--dry-run", "--jobs", "0"}, "--jobs must be at least 1"},
		{[]string{"import", b, "--to", "127.0.0.1:99999"}, `port "99999" is not a number from 1 to 65535`},
		{[]string{"import", b, "--to", "host//x"}, "an empty path component (//)"},
		{[]string{"import", b, "--to", "host/-bad"}, `"-bad" is not a valid path component`},
		{[]string{"import", b, "--to", "https://host"}, "without a scheme"},
		{[]string{"import", "/nonexistent.tar", "--to", "host"}, "/nonexistent.tar: no such file or directory"},
		{[]string{"import", b}, "import needs a target"},
		{[]string{"verify"}, "accepts 1 arg(s), received 0"},
		{[]string{"verify", "/nonexistent.tar"}, "/nonexistent.tar: no such file or directory"},
		{[]string{"inspect", "/nonexistent.tar"}, "no such file or directory"},
		{[]string{"serve", "/nonexistent.tar"}, "no such file or directory"},
		{[]string{"mirrors", "/nonexistent.tar", "--registry", "h"}, "no such file or directory"},
		{[]string{"sync", "-f", "-", "--watch"}, "-f - cannot be watched"},
		{[]string{"sync", "-f", "/nonexistent.yaml"}, "no such file or directory"},
		{[]string{"export", "--dry-run", "--chart-exclude", "busybox", "--chart", "https://c.example/demo@1.0.0"}, "--chart-exclude\" flag: applies to the --chart before it"},
		{[]string{"export", "--dry-run", "--chart", "https://c.example/demo@1.0.0", "--chart-exclude", "a(b"}, "chart https://c.example/demo: exclude: invalid name pattern "},
		{[]string{"export", "--dry-run", "--chart", "https://c.example/demo@1.0.0", "--chart-extra-image", "nginx"}, "no tag or digest"},
	} {
		res := runCLI(t, context.Background(), neverCalled(t), "", tc.args...)
		if res.code != 2 || !strings.Contains(res.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, res.code, res.stderr, tc.want)
		}
	}
}

func TestSyncFlagsToOptions(t *testing.T) {
	m := writeTemp(t, "m.yaml", mappingYAML)
	var got replicate.Options
	var watched bool
	r := runners{sync: func(_ context.Context, o replicate.Options, wo *replicate.WatchOptions) error {
		got, watched = o, wo != nil
		return nil
	}}
	res := runCLI(t, context.Background(), r, "", "sync", "-f", m, "--to", "h.example/p", "--task", "t", "--dry-run", "--platform", "all", "--watch")
	if res.code != 0 || !watched || got.To != "h.example/p" || !got.DryRun || !slices.Equal(got.Tasks, []string{"t"}) ||
		!slices.Equal(got.Platforms, []string{"all"}) || got.OnRound == nil || got.Abort == nil {
		t.Fatalf("exit %d (%s), watched %v, options %+v", res.code, res.stderr, watched, got)
	}
}

// TestInterrupted: a signal ends with 128+N, says so, and prints no result
// table (the summary of a cancelled run would be misleading).
func TestInterrupted(t *testing.T) {
	m := writeTemp(t, "m.yaml", mappingYAML)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		ctx, cancel := context.WithCancelCause(context.Background())
		r := runners{export: func(ctx context.Context, o export.Options) (*export.Summary, error) {
			cancel(interrupted{sig})
			return &export.Summary{Images: []export.ImageSummary{{Source: "x"}}}, fmt.Errorf("resolving: %w", ctx.Err())
		}}
		for _, json := range []bool{false, true} {
			args := []string{"export", "-f", m, "--dry-run"}
			if json {
				args = append(args, "--json")
			}
			res := runCLI(t, ctx, r, "", args...)
			if res.code != 128+int(sig) || !strings.Contains(res.stderr, "interrupted by") || strings.Contains(res.stdout, "SOURCE") {
				t.Errorf("%v json=%v: exit %d\nstdout %s\nstderr %s", sig, json, res.code, res.stdout, res.stderr)
			}
			if json && !strings.Contains(res.stdout, `"kind": "interrupted"`) {
				t.Errorf("--json: %s", res.stdout)
			}
		}
	}
}

func TestDescribeBuild(t *testing.T) {
	settings := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	rev := "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		ld   string
		bi   debug.BuildInfo
		want string
	}{
		{"", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings(rev, "true")}, "dev (commit 0123456789ab, modified)"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101120000-0123456789ab"}, Settings: settings(rev, "false")}, "v0.0.0-20260101120000-0123456789ab"},
		{"v1.5.0", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings(rev, "false")}, "v1.5.0 (commit 0123456789ab)"},
		{"v1.5.0-2-g0123456", debug.BuildInfo{Settings: settings(rev, "false")}, "v1.5.0-2-g0123456"},
	} {
		if got := describeBuild(tc.ld, &tc.bi); got != tc.want {
			t.Errorf("describeBuild(%q, %v) = %q, want %q", tc.ld, tc.bi.Main.Version, got, tc.want)
		}
	}
}

// TestHelpHasExamples: every command's --help shows the commands a user
// types first.
func TestHelpHasExamples(t *testing.T) {
	e := &env{}
	root := newRootCmd(e, runners{})
	for _, c := range append([]*cobra.Command{root}, root.Commands()...) {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		if !strings.Contains(c.Example, "ferry "+c.Name()) && c != root {
			t.Errorf("ferry %s --help has no example running it", c.Name())
		}
	}
	res := runCLI(t, context.Background(), runners{}, "", "--help")
	if !strings.Contains(res.stdout, "Examples:") || !strings.Contains(res.stdout, "Exit status: 0 success; 1") {
		t.Errorf("ferry --help:\n%s", res.stdout)
	}
}

func TestPlural(t *testing.T) {
	if got := plural(1, "multi-platform image") + "/" + plural(0, "blob") + "/" + plural(2, "tag"); got != "1 multi-platform image/0 blobs/2 tags" {
		t.Errorf("got %q", got)
	}
	s := &export.Summary{DryRun: true, Images: []export.ImageSummary{{Platforms: []string{"linux/amd64", "linux/arm64"}}}}
	var b strings.Builder
	printExportSummary(&b, s)
	if !strings.Contains(b.String(), "note: 1 multi-platform image keep") {
		t.Errorf("summary:\n%s", b.String())
	}
}

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind string
	}{
		{usagef("bad"), "input"},
		{fmt.Errorf("x: %w", registry.ErrUnauthorized), "auth"},
		{fmt.Errorf("x: %w", registry.ErrUnavailable), "network"},
		{&registry.TLSError{Registry: "h", Err: errors.New("x509")}, "network"},
		{fmt.Errorf("x: %w", export.ErrOutput), "input"},
		{fmt.Errorf("%w: 1 of 2 images failed; %w: carry back", push.ErrFailed, push.ErrStale), "stale-inventory"},
		{fmt.Errorf("x: %w", push.ErrHaveMissing), "stale-inventory"},
		{errors.New("other"), "failed"},
	} {
		if got := errorKind(tc.err); got != tc.kind {
			t.Errorf("errorKind(%v) = %s, want %s", tc.err, got, tc.kind)
		}
	}
}

// TestCheckBundles: a split bundle is named by its base path; only the
// first volume exists under a numbered name.
func TestCheckBundles(t *testing.T) {
	first := writeTemp(t, "b.tar.000", "x")
	base := strings.TrimSuffix(first, ".000")
	if err := checkBundles([]string{base, first}); err != nil {
		t.Errorf("split bundle refused: %v", err)
	}
	err := checkBundles([]string{filepath.Join(filepath.Dir(first), "other.tar")})
	if err == nil || exitCode(err) != exitBadUsage || !strings.Contains(err.Error(), "other.tar: no such file or directory") {
		t.Errorf("missing bundle: %v", err)
	}
}

// TestVerifyNotABundle: a mapping file given to verify or inspect is the
// wrong file, not a damaged bundle: exit 2, "not a ferry bundle", and no
// advice to copy it again.
func TestVerifyNotABundle(t *testing.T) {
	yaml := "tasks:\n  - name: cloudforet\n    source:\n      registry: docker.io\n    mappings:\n" +
		strings.Repeat("      - from: cloudforet/console\n        tags: ['regex: ^1\\.12\\.']\n", 12)
	m := writeTemp(t, "mappings.yaml", yaml)
	small := writeTemp(t, "small.yaml", "tasks: []\n")
	for _, args := range [][]string{
		{"verify", m}, {"verify", small}, {"verify", m, "--json"}, {"inspect", m},
	} {
		res := runCLI(t, context.Background(), neverCalled(t), "", args...)
		out := res.stdout + res.stderr
		if res.code != exitBadUsage || !strings.Contains(out, "not a ferry bundle") || strings.Contains(out, "copy it again") {
			t.Errorf("%v: exit %d, want 2 and \"not a ferry bundle\" without \"copy it again\"\nstdout:\n%s\nstderr:\n%s", args, res.code, res.stdout, res.stderr)
		}
		if slices.Contains(args, "--json") && !strings.Contains(res.stdout, `"kind": "input"`) {
			t.Errorf("%v: --json error is not of kind input:\n%s", args, res.stdout)
		}
	}
}

// TestDiffJSONErrorObject: diff --json fails with the error object every
// command prints ({"error": {"message", "kind", "exitCode"}}), not a
// bare string, and only once.
func TestDiffJSONErrorObject(t *testing.T) {
	junk := writeTemp(t, "junk.tar", "not a tar at all, not a tar at all")
	for _, tc := range []struct {
		args []string
		kind string
	}{
		{[]string{"diff", "--json", junk, junk}, "input"},
		{[]string{"diff", "--json", junk}, "input"},
		{[]string{"diff", "--json", filepath.Join(t.TempDir(), "missing.tar"), junk}, "input"},
	} {
		res := runCLI(t, context.Background(), neverCalled(t), "", tc.args...)
		var out struct{ Error *jsonError }
		dec := json.NewDecoder(strings.NewReader(res.stdout))
		if err := dec.Decode(&out); err != nil || out.Error == nil || dec.More() {
			t.Errorf("%v: stdout is not one error object (err %v):\n%s", tc.args, err, res.stdout)
			continue
		}
		if out.Error.Kind != tc.kind || out.Error.ExitCode != exitBadUsage || res.code != exitBadUsage || out.Error.Message == "" {
			t.Errorf("%v: exit %d, error %+v; want kind %s, exit 2", tc.args, res.code, out.Error, tc.kind)
		}
	}
}

// TestKeygenSaysWhereKeysGo: the same key pair signs bundles (outside) or
// inventories (inside); keygen's words fit both, and its help names both.
func TestKeygenSaysWhereKeysGo(t *testing.T) {
	key := filepath.Join(t.TempDir(), "site.key")
	res := runCLI(t, context.Background(), neverCalled(t), "", "keygen", "-o", key)
	if res.code != 0 || strings.Contains(res.stdout, "export side") ||
		!strings.Contains(res.stdout, "side that signs") || !strings.Contains(res.stdout, "side that checks") {
		t.Errorf("keygen: exit %d, stdout:\n%s", res.code, res.stdout)
	}
	help := runCLI(t, context.Background(), neverCalled(t), "", "keygen", "--help")
	for _, want := range []string{"inventories: KEY stays inside", "bundles:     KEY stays on the export side", "ferry inventory", "--have have.json --trust-key site.key.pub"} {
		if !strings.Contains(help.stdout, want) {
			t.Errorf("keygen --help lacks %q:\n%s", want, help.stdout)
		}
	}
}

// TestManyTagsKeepTableRowsNarrow: an image with 152 tags gets a table
// row of the first few tags and "… and N more" (a moved tag among them
// comes first); --json still lists every tag.
func TestManyTagsKeepTableRowsNarrow(t *testing.T) {
	var names []string
	var results []push.TagResult
	for i := range 152 {
		names = append(names, fmt.Sprintf("build-%04d", i))
		results = append(results, push.TagResult{Tag: names[i], Status: push.TagPushed})
	}
	results[100] = push.TagResult{Tag: names[100], Status: push.TagMoved, Previous: "sha256:" + strings.Repeat("b", 64)}
	widest := func(out string) int {
		w := 0
		for _, l := range strings.Split(out, "\n") {
			w = max(w, len(l))
		}
		return w
	}

	var b strings.Builder
	printExportSummary(&b, &export.Summary{Images: []export.ImageSummary{{Source: "docker.io/cloudforet/console", Digest: "sha256:" + strings.Repeat("a", 64),
		Target: "cloudforet/console", Tags: names, Size: 1 << 20}}})
	if w := widest(b.String()); w > 200 || !strings.Contains(b.String(), "build-0000,build-0001,build-0002,build-0003,build-0004,… and 147 more") {
		t.Errorf("export table (widest line %d):\n%s", w, b.String())
	}

	sum := &push.Summary{Target: "r.example/p", Pushed: 1, Images: []push.ImageResult{{Repository: "r.example/p/cloudforet/console",
		Digest: "sha256:" + strings.Repeat("a", 64), Status: push.StatusPushed, Tags: results}}}
	b.Reset()
	printImportSummary(&b, sum)
	if w := widest(b.String()); w > 200 || !strings.Contains(b.String(), "build-0100 (moved sha256:bbbbbbbbbbbb → sha256:aaaaaaaaaaaa),build-0000,") ||
		!strings.Contains(b.String(), "… and 147 more") {
		t.Errorf("import table (widest line %d):\n%s", w, b.String())
	}

	bundlePath := writeTemp(t, "b.tar", "x")
	r := runners{push: func(context.Context, push.Options) (*push.Summary, error) { return sum, nil }}
	res := runCLI(t, context.Background(), r, "", "import", bundlePath, "--to", "r.example/p", "--json")
	var out push.Summary
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || len(out.Images) != 1 || len(out.Images[0].Tags) != 152 {
		t.Errorf("import --json: exit %d, %v; want all 152 tags:\n%.300s", res.code, err, res.stdout)
	}
}

// TestChartFlagsApplyToTheChartBefore: --chart-exclude and
// --chart-extra-image belong to the --chart given before them.
func TestChartFlagsApplyToTheChartBefore(t *testing.T) {
	var got export.Options
	r := runners{export: func(_ context.Context, o export.Options) (*export.Summary, error) {
		got = o
		return &export.Summary{DryRun: true, Images: []export.ImageSummary{}, Failures: []export.FailureSummary{}}, nil
	}}
	res := runCLI(t, context.Background(), r, "", "export", "--dry-run",
		"--chart", "https://c.example/a@1.0.0", "--chart-exclude", "busybox", "--chart-exclude", "!docker.io/.*",
		"--chart", "oci://r.example/charts/b@2.0.0", "--chart-extra-image", "quay.io/org/op:1")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if len(got.Charts) != 2 {
		t.Fatalf("charts: %+v", got.Charts)
	}
	a, b := got.Charts[0], got.Charts[1]
	if a.Name != "a" || len(a.Exclude) != 2 || a.Exclude[1].String() != "!docker.io/.*" || len(a.ExtraImages) != 0 || !a.Images {
		t.Errorf("first chart: %+v", a)
	}
	if b.Name != "b" || len(b.Exclude) != 0 || strings.Join(b.ExtraImages, ",") != "quay.io/org/op:1" {
		t.Errorf("second chart: %+v", b)
	}
}

func TestImportStrict(t *testing.T) {
	b := writeTemp(t, "b.tar", "x")
	var got push.Options
	r := runners{push: func(_ context.Context, o push.Options) (*push.Summary, error) {
		got = o
		return &push.Summary{Target: o.To, Images: []push.ImageResult{}}, nil
	}}
	if res := runCLI(t, context.Background(), r, "", "import", b, "--to", "r.example", "--strict"); res.code != 0 || !got.Strict {
		t.Fatalf("exit %d, strict %v: %s", res.code, got.Strict, res.stderr)
	}
}
