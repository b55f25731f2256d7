package serve

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/bundle"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// mirrorRecords is a bundle record built in code: Docker Hub images kept at
// their paths under a project, one renamed, and other registries.
func mirrorRecords() []*bundle.Record {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	im := func(source, target string, tags ...string) bundle.Image {
		return bundle.Image{Source: source, Target: target, Tags: tags, Digest: "sha256:" + sha256Hex([]byte(source)), MediaType: "application/vnd.oci.image.index.v1+json"}
	}
	return []*bundle.Record{{
		FormatVersion: 1, FerryVersion: "test", Created: created, ID: "B7Q2-test",
		Images: []bundle.Image{
			im("docker.io/library/redis:7.2", "library/redis", "7.2", "latest"),
			im("registry.hub.docker.com/bitnami/nginx:1.25", "bitnami/nginx", "1.25"),
			im("docker.io/library/busybox:1.36", "tools/busybox", "1.36"), // renamed
			im("quay.io/org/app:1.0", "mirror/quay/org/app", "1.0"),
			im("quay.io/org/worker:1.0", "mirror/quay/org/worker", "1.0"),
			im("registry.k8s.io/pause:3.9", "registry.k8s.io/pause", "3.9"),
		},
	}}
}

func TestServeMirrorsGolden(t *testing.T) {
	cases := []struct {
		name string
		o    MirrorOptions
	}{
		{"mirrors-default", MirrorOptions{Registry: "harbor.internal"}},
		{"mirrors-prefix", MirrorOptions{Registry: "harbor.internal:8443", Prefix: "airgap"}},
		{"mirrors-source-names", MirrorOptions{Registry: "http://10.0.0.5:5000", SourceNames: true, Name: "lab"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms, err := Mirrors(mirrorRecords(), c.o)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := ms.Write(&buf); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./serve -run TestServeMirrorsGolden -update)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("output differs from %s (run with -update if intended):\n%s", golden, buf.String())
			}
		})
	}
}

func TestServeMirrorsMapping(t *testing.T) {
	ms, err := Mirrors(mirrorRecords(), MirrorOptions{Registry: "harbor.internal"})
	if err != nil {
		t.Fatal(err)
	}
	byUp := map[string]Mirror{}
	for _, m := range ms.Mirrors {
		byUp[m.Upstream] = m
	}
	// Docker Hub: redis and nginx at their own path, busybox renamed.
	hub := byUp["docker.io"]
	if hub.Path != "" || len(hub.Reachable) != 2 || len(hub.Unreachable) != 1 {
		t.Errorf("docker.io mirror %+v", hub)
	}
	if q := byUp["quay.io"]; q.Path != "mirror/quay" || len(q.Reachable) != 2 {
		t.Errorf("quay.io mirror %+v", q)
	}
	if k := byUp["registry.k8s.io"]; k.Path != "registry.k8s.io" || len(k.Reachable) != 1 {
		t.Errorf("registry.k8s.io mirror %+v", k)
	}
	if got := ms.Digest["docker.io/library/busybox"]; len(got) != 1 || got[0] != "harbor.internal/tools/busybox" {
		t.Errorf("IDMS busybox mirrors %v", got)
	}
	// --registry HOST/PATH is HOST with --prefix PATH, as import's --to.
	withPath, err := Mirrors(mirrorRecords(), MirrorOptions{Registry: "harbor.internal/airgap"})
	if err != nil {
		t.Fatal(err)
	}
	withPrefix, err := Mirrors(mirrorRecords(), MirrorOptions{Registry: "harbor.internal", Prefix: "airgap"})
	if err != nil {
		t.Fatal(err)
	}
	if withPath.Host != "harbor.internal" || fmt.Sprint(withPath.Mirrors) != fmt.Sprint(withPrefix.Mirrors) || fmt.Sprint(withPath.Digest) != fmt.Sprint(withPrefix.Digest) {
		t.Errorf("--registry host/airgap: %+v\n--prefix airgap: %+v", withPath, withPrefix)
	}
	for _, bad := range []MirrorOptions{{Registry: ""}, {Registry: "ftp://x"}, {Registry: "host/path", Prefix: "other"}, {Registry: "host/Bad"}, {Registry: "h", Prefix: "Bad"}} {
		if _, err := Mirrors(mirrorRecords(), bad); !errors.Is(err, ErrMirrorOptions) {
			t.Errorf("Mirrors(%+v) = %v, want ErrMirrorOptions", bad, err)
		}
	}
}
