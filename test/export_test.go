package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// exportSummary is the part of `ferry export --json` the tests read.
type exportSummary struct {
	Output string `json:"output"`
	Images []struct {
		Source    string   `json:"source"`
		Target    string   `json:"target"`
		Tags      []string `json:"tags"`
		Digest    string   `json:"digest"`
		MediaType string   `json:"mediaType"`
	} `json:"images"`
	Failures []struct {
		Source string `json:"source"`
		Error  string `json:"error"`
	} `json:"failures"`
	Blobs int `json:"blobs"`
}

func TestExportSmoke(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{"alice": "s3cret"}})
	fixtures := harness.Seed(t, reg, "alice", harness.SmallSet())
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), `
tasks:
  - name: t1
    source:
      registry: `+reg.Host+`
    mappings:
      - from: spaceone/console
        to: proj/spaceone/console
        tags:
          - 'regex: 1\.11\.(?:[0-9]?[0-9]).*'
      - from: spaceone/plugin-a
        to: proj/spaceone/plugin-a
        tags:
          - 'semver: >=1.0.0 <1.99.0'
          - 'keep: latest 2'
      - from: library/redis
        to: proj/redis
        tags: [latest]
`)
	out := filepath.Join(dir, "bundle.tar")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: []string{"FERRY_PASSWORD=s3cret"}}, bin,
		"export", "-f", mapping, "-o", out, "--ca-cert", reg.CAFile, "--username", "alice", "--json")
	if code != 0 {
		t.Fatalf("export exit %d\nstdout:%s\nstderr:%s", code, stdout, stderr)
	}
	var sum exportSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout)
	}
	var refs []string
	for _, im := range sum.Images {
		for _, tag := range im.Tags {
			refs = append(refs, im.Target+":"+tag)
		}
	}
	sort.Strings(refs)
	want := []string{
		"proj/redis:latest",
		"proj/spaceone/console:1.11.0", "proj/spaceone/console:1.11.12", "proj/spaceone/console:1.11.12-rc1", "proj/spaceone/console:1.11.5",
		"proj/spaceone/plugin-a:1.4.1", "proj/spaceone/plugin-a:1.4.2-rc1",
	}
	if strings.Join(refs, " ") != strings.Join(want, " ") {
		t.Fatalf("exported %v\nwant %v", refs, want)
	}
	digests := map[string]string{}
	for _, f := range fixtures {
		digests[f.Repo+":"+f.Tag] = f.Digest
	}
	for _, im := range sum.Images {
		src := im.Source[strings.Index(im.Source, "/")+1:]
		if digests[src] != im.Digest {
			t.Errorf("%s: digest %s, source has %s", im.Source, im.Digest, digests[src])
		}
	}
	stdout, stderr, code = harness.Run(t, bin, "verify", out)
	if code != 0 || !strings.Contains(stdout, "OK") {
		t.Fatalf("verify exit %d: %s %s", code, stdout, stderr)
	}
	stdout, _, code = harness.Run(t, bin, "inspect", out)
	t.Log(stdout)
	if code != 0 {
		t.Fatal("inspect failed")
	}
}
