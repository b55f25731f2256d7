package mapping_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-airgap/ferry/mapping"
)

const (
	coreExample   = "testdata/dregsy-spaceone-core.yaml"
	pluginExample = "testdata/dregsy-spaceone-plugin.yaml"
)

// writeFile writes content to a file named name in a fresh temp dir and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadErr loads content as file "m.yaml" and returns the error text with the
// temp dir removed, failing unless the error wraps ErrInvalid.
func loadErr(t *testing.T, content string) string {
	t.Helper()
	path := writeFile(t, "m.yaml", content)
	_, err := mapping.Load(path)
	if err == nil {
		t.Fatalf("Load succeeded, want error for:\n%s", content)
	}
	if !errors.Is(err, mapping.ErrInvalid) {
		t.Fatalf("error %q does not wrap ErrInvalid", err)
	}
	return strings.ReplaceAll(err.Error(), filepath.Dir(path)+string(filepath.Separator), "")
}

// mustLoad parses content as file "m.yaml".
func mustLoad(t *testing.T, content string) *mapping.Config {
	t.Helper()
	cfg, err := mapping.Parse("m.yaml", []byte(content))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

const minimal = `
tasks:
  - name: t1
    source:
      registry: registry.hub.docker.com
    mappings:
      - from: redis
`

func TestLoadPublishedExamples(t *testing.T) {
	cfg, err := mapping.Load(coreExample, pluginExample)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var names []string
	var counts []int
	for _, task := range cfg.Tasks {
		names = append(names, task.Name)
		counts = append(counts, len(task.Mappings))
	}
	if want := []string{"sync_spaceone_doc", "sync_spaceone_core", "sync_spaceone_plugin"}; !slices.Equal(names, want) {
		t.Errorf("task names = %q, want %q", names, want)
	}
	if want := []int{5, 17, 25}; !slices.Equal(counts, want) {
		t.Errorf("mapping counts = %v, want %v", counts, want)
	}

	doc := cfg.Tasks[0]
	if doc.File != coreExample || doc.Line != 13 {
		t.Errorf("doc task at %s:%d, want %s:13", doc.File, doc.Line, coreExample)
	}
	if doc.Interval != 6*time.Hour || !doc.Verbose {
		t.Errorf("doc task interval %v verbose %v, want 6h true", doc.Interval, doc.Verbose)
	}
	if doc.Source.Registry != "registry.hub.docker.com" || doc.Source.Auth != nil {
		t.Errorf("doc source = %+v", doc.Source)
	}
	if !slices.Equal(doc.Source.Placeholders, []string{"auth"}) {
		t.Errorf("doc source placeholders = %q, want [auth]", doc.Source.Placeholders)
	}
	if !slices.Equal(doc.Target.Placeholders, []string{"registry", "auth"}) || doc.Target.Registry != "" || !doc.Target.SkipTLSVerify {
		t.Errorf("doc target = %+v", doc.Target)
	}
	if err := doc.CheckSource(); err != nil {
		t.Errorf("CheckSource: %v", err)
	}

	redis := doc.Mappings[3]
	if redis.From != "redis" || redis.To != "your_registry_project/spaceone/redis" || !slices.Equal(redis.Tags, []string{"latest"}) || redis.Line != 38 {
		t.Errorf("redis mapping = %+v", *redis)
	}
	if repo, err := doc.SourceRepository(redis); err != nil || repo != "docker.io/library/redis" {
		t.Errorf("SourceRepository(redis) = %q, %v", repo, err)
	}
	if got := cfg.Tasks[1].Mappings[0].Tags; !slices.Equal(got, []string{`regex: 1\.11\.(?:[0-9]?[0-9]).*`}) {
		t.Errorf("core console tags = %q", got)
	}
	plugin := cfg.Tasks[2].Mappings[24]
	if plugin.From != "spaceone/plugin-google-cloud-log-mon-datasource" ||
		!slices.Equal(plugin.Tags, []string{"semver: >=1.0.0 <1.99.0", "keep: latest 2"}) || plugin.Platform != "" {
		t.Errorf("last plugin mapping = %+v", *plugin)
	}

	warnings := cfg.Warnings()
	if len(warnings) != 9 {
		t.Errorf("got %d warnings, want 9 (3 placeholders in each of 3 tasks):\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
	for _, want := range []string{
		coreExample + `:19: task "sync_spaceone_doc": source auth is a placeholder {Token}`,
		coreExample + `:21: task "sync_spaceone_doc": target registry is a placeholder {registry_address}; import takes the target from --to`,
		coreExample + `:56: task "sync_spaceone_core": target auth is a placeholder {Token}`,
		pluginExample + `:21: task "sync_spaceone_plugin": target registry is a placeholder`,
	} {
		if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("no warning starting with %q in:\n%s", want, strings.Join(warnings, "\n"))
		}
	}
}

// The example files in testdata must stay the published ones.
func TestExamplesUnchanged(t *testing.T) {
	for _, name := range []string{"dregsy-spaceone-core.yaml", "dregsy-spaceone-plugin.yaml"} {
		shared, err := os.ReadFile(filepath.Join("/work/shared/examples", name))
		if err != nil {
			t.Skipf("shared examples not available: %v", err)
		}
		local, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(shared, local) {
			t.Errorf("testdata/%s differs from the published example", name)
		}
	}
}

func TestLoadMergesFilesInOrder(t *testing.T) {
	a := writeFile(t, "a.yaml", minimal)
	b := writeFile(t, "b.yaml", strings.ReplaceAll(minimal, "t1", "t2"))
	cfg, err := mapping.Load(b, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tasks) != 2 || cfg.Tasks[0].Name != "t2" || cfg.Tasks[0].File != b || cfg.Tasks[1].Name != "t1" || cfg.Tasks[1].File != a {
		t.Errorf("tasks = %v, %v", cfg.Tasks[0], cfg.Tasks[1])
	}
}

func TestLoadDuplicateTaskAcrossFiles(t *testing.T) {
	a := writeFile(t, "a.yaml", minimal)
	b := writeFile(t, "b.yaml", "# other\n"+minimal)
	_, err := mapping.Load(a, b)
	if err == nil || !errors.Is(err, mapping.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	want := fmt.Sprintf(`%s:4: task "t1" is already defined at %s:3`, b, a)
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
}

func TestLoadDuplicateTaskInOneFile(t *testing.T) {
	got := loadErr(t, minimal+`  - name: t1
    source: {registry: quay.io}
`)
	if want := `m.yaml:8: task "t1" is already defined at `; !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "m.yaml:3") {
		t.Errorf("err = %q, want %q...m.yaml:3", got, want)
	}
}

func TestSelect(t *testing.T) {
	cfg, err := mapping.Load(coreExample, pluginExample)
	if err != nil {
		t.Fatal(err)
	}
	all, err := cfg.Select(nil)
	if err != nil || len(all) != 3 {
		t.Fatalf("Select(nil) = %d tasks, %v", len(all), err)
	}
	got, err := cfg.Select([]string{"sync_spaceone_plugin", "sync_spaceone_doc", "sync_spaceone_doc"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "sync_spaceone_doc" || got[1].Name != "sync_spaceone_plugin" {
		t.Errorf("Select = %v, want doc and plugin in file order", got)
	}
	_, err = cfg.Select([]string{"sync_spaceone_core", "nope"})
	if !errors.Is(err, mapping.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	want := `unknown task "nope"; the mapping files define: sync_spaceone_doc, sync_spaceone_core, sync_spaceone_plugin`
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"top level", "relay: skopeo\nmirrors: x\n" + minimal, `m.yaml:2: unknown top-level key "mirrors"`},
		{"task, before its name", `
tasks:
  - intervall: 60
    name: t1
    source: {registry: quay.io}
`, `m.yaml:3: unknown key "intervall" in task "t1"`},
		{"source", `
tasks:
  - name: t1
    source:
      registry: quay.io
      insecure: true
`, `m.yaml:6: unknown key "insecure" in task "t1" source`},
		{"target", `
tasks:
  - name: t1
    source: {registry: quay.io}
    target: {registry: harbor.local, path: x}
`, `m.yaml:5: unknown key "path" in task "t1" target`},
		{"mapping", `
tasks:
  - name: t1
    source: {registry: quay.io}
    mappings:
      - from: a/b
        tag: latest
`, `m.yaml:7: unknown key "tag" in mapping of task "t1"`},
		{"mappings_file is not dregsy's", `
tasks:
  - name: t1
    source: {registry: quay.io}
    mappings_file: m.yaml
`, `m.yaml:5: unknown key "mappings_file" in task "t1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loadErr(t, tt.content); got != tt.want {
				t.Errorf("err = %q\nwant  %q", got, tt.want)
			}
		})
	}
}

func TestDregsyKeysIgnored(t *testing.T) {
	cfg := mustLoad(t, `
relay: docker
watch: false
dockerhost: unix:///var/run/docker.sock
api-version: "1.41"
docker:
  dockerhost: unix:///var/run/docker.sock
  api-version: 1.41
  anything: [1, 2]
skopeo:
  binary: skopeo
  certs-dir: /etc/skopeo/certs.d
lister:
  maxItems: 100
  cacheDuration: 2h
tasks:
  - name: t1
    verbose: yes
    interval: 30
    source:
      registry: 123456789012.dkr.ecr.eu-central-1.amazonaws.com
      auth-refresh: 10h
      lister:
        type: catalog
    target:
      registry: harbor.local:8443
    mappings:
      - from: /app/web
        platform: linux/arm/v7
        preserve-digests: true
        digests: ['sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef']
`)
	task := cfg.Tasks[0]
	if !task.Verbose || task.Interval != 30*time.Second || task.Target.Registry != "harbor.local:8443" {
		t.Errorf("task = %+v", task)
	}
	m := task.Mappings[0]
	if m.From != "app/web" || m.To != "app/web" || m.Platform != "linux/arm/v7" || len(m.Digests) != 1 {
		t.Errorf("mapping = %+v", *m)
	}
	w := cfg.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], `m.yaml:22: task "t1": source auth-refresh is ignored`) {
		t.Errorf("warnings = %q, want one about auth-refresh", w)
	}
}

func TestBadYAML(t *testing.T) {
	tests := []struct{ content, want string }{
		{"tasks:\n  - name: t1\n    source: {registry: quay.io\n", "m.yaml:2: invalid YAML: did not find expected ',' or '}'"},
		{"tasks:\n  - name: t1\n     bad: indentation\n", "m.yaml:3: invalid YAML: mapping values are not allowed in this context"},
		{"tasks:\n\t- name: t1\n", "m.yaml:2: invalid YAML: found character that cannot start any token"},
		{minimal + "---\n" + minimal, "m.yaml:8: a second YAML document"},
		{"- a\n- b\n", "m.yaml:1: expected a mapping with a tasks: list at the top level, found a list"},
		{"tasks: {name: t1}\n", "m.yaml:1: tasks: expected a list of tasks, found a map"},
		{"tasks:\n  - name: a\n    name: b\n    source: {registry: quay.io}\n", `m.yaml:3: duplicate key "name" (first at line 2)`},
	}
	for _, tt := range tests {
		if got := loadErr(t, tt.content); !strings.HasPrefix(got, tt.want) {
			t.Errorf("content %q:\nerr  %q\nwant %q...", tt.content, got, tt.want)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := mapping.Load(missing)
	if !errors.Is(err, mapping.ErrInvalid) || !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), missing+": reading mapping file") {
		t.Errorf("missing file: err = %v", err)
	}
	if got := loadErr(t, "relay: skopeo\n"); !strings.HasSuffix(got, "m.yaml: no tasks defined (expected a tasks: list)") {
		t.Errorf("no tasks: err = %q", got)
	}
	if _, err := mapping.Load(); !errors.Is(err, mapping.ErrInvalid) {
		t.Errorf("no files: err = %v", err)
	}
}

func TestTaskValidation(t *testing.T) {
	tests := []struct{ name, content, want string }{
		{"no name", "tasks:\n  - source: {registry: quay.io}\n", "m.yaml:2: task 1 has no name"},
		{"no source", "tasks:\n  - name: t1\n", `m.yaml:2: task "t1" has no source:`},
		{"no source registry", "tasks:\n  - name: t1\n    source: {auth: none}\n", `m.yaml:3: task "t1": source has no registry:`},
		{"url registry", "tasks:\n  - name: t1\n    source: {registry: 'https://quay.io/'}\n", `m.yaml:3: task "t1": source registry: registry "https://quay.io/" is a URL; write the host only, e.g. "quay.io"`},
		{"bad host", "tasks:\n  - name: t1\n    source: {registry: 'quay io'}\n", `m.yaml:3: task "t1": source registry: registry "quay io" is not a host[:port]`},
		{"interval too short", "tasks:\n  - name: t1\n    interval: 29\n    source: {registry: quay.io}\n", `m.yaml:3: interval in task "t1" is 29 seconds; the minimum is 30 (as in dregsy)`},
		{"interval negative", "tasks:\n  - name: t1\n    interval: -5\n    source: {registry: quay.io}\n", `m.yaml:3: interval in task "t1" must be 0 or a positive number of seconds`},
		{"interval duration", "tasks:\n  - name: t1\n    interval: 6h\n    source: {registry: quay.io}\n", `m.yaml:3: interval in task "t1" must be whole seconds, e.g. 21600`},
		{"verbose not bool", "tasks:\n  - name: t1\n    verbose: loud\n    source: {registry: quay.io}\n", `m.yaml:3: verbose in task "t1": expected true or false`},
		{"mappings not list", "tasks:\n  - name: t1\n    source: {registry: quay.io}\n    mappings: {from: a}\n", `m.yaml:4: mappings in task "t1": expected a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loadErr(t, tt.content); !strings.HasPrefix(got, tt.want) {
				t.Errorf("err  %q\nwant %q...", got, tt.want)
			}
		})
	}
	cfg := mustLoad(t, "tasks:\n  - name: t1\n    interval: 0\n    source: {registry: quay.io}\n")
	if cfg.Tasks[0].Interval != 0 {
		t.Errorf("interval 0 = %v", cfg.Tasks[0].Interval)
	}
	if w := cfg.Warnings(); len(w) != 1 || w[0] != `m.yaml:2: task "t1" has no mappings; it copies nothing` {
		t.Errorf("warnings = %q", w)
	}
}

func mappingFile(lines string) string {
	return "tasks:\n  - name: t1\n    source: {registry: docker.io}\n    mappings:\n" + lines
}

func TestMappingValidation(t *testing.T) {
	tests := []struct{ name, mapping, want string }{
		{"regex from", "      - from: 'regex:spaceone/.*'\n        to: mirror\n",
			`m.yaml:5: task "t1": repository regex in from: is not supported by ferry; list repositories explicitly`},
		{"regex to", "      - from: a/b\n        to: 'regex:a/,b/'\n",
			`m.yaml:6: task "t1": regex in to: is not supported by ferry; write the target path explicitly`},
		{"tag in from", "      - from: redis:7\n",
			`m.yaml:5: task "t1": from: repository "redis:7" contains a tag; list tags under the mapping's tags key`},
		{"digest in from", "      - from: redis@sha256:abc\n",
			`m.yaml:5: task "t1": from: repository "redis@sha256:abc" contains a digest`},
		{"upper case", "      - from: Spaceone/Console\n",
			`m.yaml:5: task "t1": from: repository "Spaceone/Console" is not a valid repository name`},
		{"bad to", "      - from: a\n        to: 'b//c'\n",
			`m.yaml:6: task "t1": to: repository "b//c" is not a valid repository name`},
		{"no from", "      - to: a\n", `m.yaml:5: mapping in task "t1" has no from:`},
		{"bad platform", "      - from: a\n        platform: linux\n",
			`m.yaml:6: task "t1": platform "linux" is neither all nor os/arch[/variant]`},
		{"bad tag filter", "      - from: a\n        tags: ['regex: (']\n",
			`m.yaml:6: task "t1": invalid tag filter item "regex: ("`},
		{"tags not list", "      - from: a\n        tags: latest\n",
			`m.yaml:6: tags in task "t1": expected a list`},
		{"bad digest", "      - from: a\n        digests: ['sha256:abc']\n",
			`m.yaml:6: task "t1": "sha256:abc" is not a digest`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loadErr(t, mappingFile(tt.mapping)); !strings.HasPrefix(got, tt.want) {
				t.Errorf("err  %q\nwant %q...", got, tt.want)
			}
		})
	}

	cfg := mustLoad(t, mappingFile(`      - from: /library/redis
      - from: bitnami/redis
        to: /mirror/redis
        platform: all
        tags: ['7.2', 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef']
      - from: docker.io/library/nginx
`))
	ms := cfg.Tasks[0].Mappings
	if ms[0].From != "library/redis" || ms[0].To != "library/redis" {
		t.Errorf("to omitted: %+v", *ms[0])
	}
	if ms[1].To != "mirror/redis" || ms[1].Platform != "all" || len(ms[1].Tags) != 2 {
		t.Errorf("mapping 2: %+v", *ms[1])
	}
	w := cfg.Warnings()
	if len(w) != 1 || !strings.HasPrefix(w[0], `m.yaml:10: task "t1": from "docker.io/library/nginx" starts with what looks like a registry host`) {
		t.Errorf("warnings = %q", w)
	}
}

func TestErrorsAreAllReported(t *testing.T) {
	got := loadErr(t, `
tasks:
  - name: t1
    source: {registry: quay.io}
    bogus: 1
    mappings:
      - from: 'regex:.*'
      - from: a
        platform: x
`)
	for _, want := range []string{`m.yaml:5: unknown key "bogus"`, "m.yaml:7: ", "m.yaml:9: "} {
		if !strings.Contains(got, want) {
			t.Errorf("err %q lacks %q", got, want)
		}
	}
}

func TestAliasesAndMergeKeys(t *testing.T) {
	content := `
tasks:
  - name: a
    source: &hub
      registry: registry.hub.docker.com
      auth: none
    mappings: &m
      - from: redis
        tags: [latest]
  - name: b
    source:
      <<: *hub
      skip-tls-verify: true
    mappings: *m
`
	cfg := mustLoad(t, content)
	b := cfg.Tasks[1]
	if b.Source.Registry != "registry.hub.docker.com" || b.Source.Auth == nil || !b.Source.Auth.Anonymous || !b.Source.SkipTLSVerify {
		t.Errorf("merged source = %+v", b.Source)
	}
	if len(b.Mappings) != 1 || b.Mappings[0].From != "redis" {
		t.Errorf("aliased mappings = %v", b.Mappings)
	}
}

func TestAliasBombStops(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("x: &a0 [from, from, from, from, from, from, from, from, from, from]\n")
	for i := 1; i < 8; i++ {
		fmt.Fprintf(&sb, "y%d: &a%d [", i, i)
		for j := range 10 {
			if j > 0 {
				sb.WriteString(", ")
			}
			fmt.Fprintf(&sb, "*a%d", i-1)
		}
		sb.WriteString("]\n")
	}
	// Use the biggest alias where a list of tags is walked, in many tasks.
	sb.WriteString("tasks:\n")
	for i := range 20 {
		fmt.Fprintf(&sb, "  - name: t%d\n    source: {registry: quay.io}\n    mappings: [{from: a, tags: *a7}]\n", i)
	}
	done := make(chan error, 1)
	go func() {
		_, err := mapping.Parse("bomb.yaml", []byte(sb.String()))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, mapping.ErrInvalid) {
			t.Errorf("err = %v, want ErrInvalid", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Parse did not stop on an alias bomb")
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func authFile(auth string) string {
	return "tasks:\n  - name: t1\n    source:\n      registry: harbor.local\n      auth: '" + auth + "'\n"
}

func TestAuthForms(t *testing.T) {
	tests := []struct {
		name, auth string
		want       mapping.Auth
	}{
		{"dregsy JSON, echo's newline", b64(`{"username": "alex", "password": "s3cret"}` + "\n"), mapping.Auth{Username: "alex", Password: "s3cret"}},
		{"README example", "eyJ1c2VybmFtZSI6ICJhbGV4IiwgInBhc3N3b3JkIjogInNlY3JldCJ9Cg==", mapping.Auth{Username: "alex", Password: "secret"}},
		{"robot account", b64(`{"username":"robot$proj+ci","password":"tok:en"}`), mapping.Auth{Username: "robot$proj+ci", Password: "tok:en"}},
		{"user:password", b64("robot$proj+ci:pa:ss"), mapping.Auth{Username: "robot$proj+ci", Password: "pa:ss"}},
		{"user:password newline", b64("alex:pw\n"), mapping.Auth{Username: "alex", Password: "pw"}},
		{"unpadded", strings.TrimRight(b64("alex:pw1"), "="), mapping.Auth{Username: "alex", Password: "pw1"}},
		{"none", "none", mapping.Auth{Anonymous: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, authFile(tt.auth))
			got := cfg.Tasks[0].Source.Auth
			if got == nil || *got != tt.want {
				t.Errorf("Auth = %#v, want %#v", got, tt.want)
			}
		})
	}
	if cfg := mustLoad(t, authFile("")); cfg.Tasks[0].Source.Auth != nil {
		t.Errorf("empty auth = %v, want nil", cfg.Tasks[0].Source.Auth)
	}
}

const secret = "Hunter2SuperSecret"

func TestAuthErrorsDoNotLeak(t *testing.T) {
	tests := []struct{ name, auth, want string }{
		{"not base64", secret + "!!", "not valid base64"},
		{"malformed JSON", b64(`{"username": "alex", "password": "` + secret + `"`), "malformed JSON"},
		{"JSON no username", b64(`{"password": "` + secret + `"}`), "has a password but no username"},
		{"no colon", b64(secret), "neither JSON"},
		{"empty user", b64(":" + secret), "empty user"},
		{"binary", base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe, 0x00, 's'}), "binary data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadErr(t, authFile(tt.auth))
			want := `m.yaml:5: task "t1": source auth: `
			if !strings.HasPrefix(got, want) || !strings.Contains(got, tt.want) {
				t.Errorf("err = %q, want %q...%q", got, want, tt.want)
			}
			if strings.Contains(got, secret) || strings.Contains(got, tt.auth) {
				t.Errorf("err %q reveals the secret", got)
			}
		})
	}
	// A map with values is not a placeholder: an error, without the values.
	got := loadErr(t, "tasks:\n  - name: t1\n    source:\n      registry: quay.io\n      auth: {username: alex, password: "+secret+"}\n")
	if strings.Contains(got, secret) || !strings.Contains(got, `m.yaml:5: task "t1": source auth must be a base64 string`) {
		t.Errorf("map auth: err = %q", got)
	}
}

func TestAuthNeverPrintsPassword(t *testing.T) {
	a := mapping.Auth{Username: "robot$proj+ci", Password: secret}
	ep := mapping.Endpoint{Registry: "harbor.local", Auth: &a}
	var outputs []string
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3v"} {
		outputs = append(outputs, fmt.Sprintf(format, a), fmt.Sprintf(format, &a))
	}
	outputs = append(outputs, fmt.Sprintf("%v %+v %#v", ep, ep, ep), a.String(), a.GoString())
	j, err := json.Marshal(map[string]any{"v": a, "p": &a, "ep": ep})
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(map[string]any{"v": a, "p": &a})
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "auth", a, "ptr", &a)
	outputs = append(outputs, string(j), string(y), logged.String())
	for _, out := range outputs {
		if strings.Contains(out, secret) {
			t.Errorf("output reveals the password: %s", out)
		}
	}
	if s := a.String(); s != `user "robot$proj+ci", password REDACTED` {
		t.Errorf("String() = %q", s)
	}
	if s := fmt.Sprintf("%#v", a); s != `mapping.Auth{Username:"robot$proj+ci", Password:"REDACTED", Anonymous:false}` {
		t.Errorf("%%#v = %q", s)
	}
	if !strings.Contains(string(j), `"username":"robot$proj+ci"`) || !strings.Contains(string(j), `"password":"REDACTED"`) {
		t.Errorf("JSON = %s", j)
	}
	if got := fmt.Sprint(mapping.Auth{Anonymous: true}); got != "anonymous" {
		t.Errorf("anonymous prints %q", got)
	}
}

func TestPlaceholders(t *testing.T) {
	cfg := mustLoad(t, `
tasks:
  - name: needs-source
    source:
      registry: {registry_address}
      auth: "<base64 of {\"username\": \"...\", \"password\": \"...\"}>"
    target:
      registry: <your registry>
      auth: ${HARBOR_TOKEN}
    mappings:
      - from: a
  - name: fine
    source: {registry: quay.io, auth: '{Token}'}
    mappings:
      - from: b
`)
	src, tgt := cfg.Tasks[0].Source, cfg.Tasks[0].Target
	if !slices.Equal(src.Placeholders, []string{"registry", "auth"}) || !slices.Equal(tgt.Placeholders, []string{"registry", "auth"}) {
		t.Errorf("placeholders: source %q target %q", src.Placeholders, tgt.Placeholders)
	}
	if !src.HasPlaceholder("registry") || src.HasPlaceholder("skip-tls-verify") {
		t.Errorf("HasPlaceholder wrong for %q", src.Placeholders)
	}
	err := cfg.Tasks[0].CheckSource()
	if !errors.Is(err, mapping.ErrInvalid) || !strings.HasSuffix(err.Error(), `m.yaml:4: task "needs-source": source registry is a placeholder; fill in the registry address`) {
		t.Errorf("CheckSource = %v", err)
	}
	if _, err := cfg.Tasks[0].SourceRepository(cfg.Tasks[0].Mappings[0]); !errors.Is(err, mapping.ErrInvalid) {
		t.Errorf("SourceRepository on a placeholder source: err = %v", err)
	}
	if err := cfg.Tasks[1].CheckSource(); err != nil {
		t.Errorf("task with placeholder auth only: %v", err)
	}
	w := strings.Join(cfg.Warnings(), "\n")
	for _, want := range []string{
		`m.yaml:5: task "needs-source": source registry is a placeholder {registry_address}; the task cannot be exported until it is filled in`,
		`m.yaml:6: task "needs-source": source auth is a placeholder "<base64 of {\"username\": \"...\", \"password\": \"...\"}>"; credentials come from flags, --auth-file or the docker keychain instead`,
		`m.yaml:8: task "needs-source": target registry is a placeholder "<your registry>"`,
		`m.yaml:9: task "needs-source": target auth is a placeholder "${HARBOR_TOKEN}"`,
		`m.yaml:13: task "fine": source auth is a placeholder "{Token}"`,
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
}
