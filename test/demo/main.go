// Command demo runs ferry's main job end to end on this machine alone: it
// starts two local registries (the "internet" source and the "internal"
// target), fills the source with a small image set that shares base layers
// and includes a multi-arch index, then runs ferry export, inspect, verify
// and import, and checks that every tag arrived with its source digest.
//
// Usage: go run ./test/demo -ferry bin/ferry [-dir demo-work]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	ferry := flag.String("ferry", "bin/ferry", "path to the ferry binary")
	dir := flag.String("dir", "demo-work", "working directory for the bundle and mapping file")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*ferry, *dir); err != nil {
		log.Fatalf("demo failed: %v", err)
	}
}

func serve() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(ioDiscard{}, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }

// image builds a small image from named layers; the same name gives the
// same bytes, so images share base layers as real ones do.
func image(mt types.MediaType, platform string, layers ...string) (v1.Image, error) {
	img := empty.Image
	for _, l := range layers {
		content := bytes.Repeat([]byte(l+"\n"), 4096)
		lmt := types.OCILayer
		if mt == types.DockerManifestSchema2 {
			lmt = types.DockerLayer
		}
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer(content, lmt)); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	os, arch, _ := strings.Cut(platform, "/")
	cf.OS, cf.Architecture = os, arch
	cf.Created = v1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, mt)
	if mt == types.DockerManifestSchema2 {
		img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	} else {
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return img, nil
}

func seed(host string) (map[string]string, error) {
	digests := map[string]string{}
	put := func(ref string, t remote.Taggable) error {
		r, err := name.ParseReference(host+"/"+ref, name.Insecure)
		if err != nil {
			return err
		}
		switch v := t.(type) {
		case v1.Image:
			err = remote.Write(r, v)
		case v1.ImageIndex:
			err = remote.WriteIndex(r, v)
		}
		if err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		d, _ := t.(interface{ Digest() (v1.Hash, error) }).Digest()
		digests[ref] = d.String()
		return nil
	}
	for _, v := range []string{"1.11.0", "1.11.3", "1.12.0"} {
		img, err := image(types.DockerManifestSchema2, "linux/amd64", "base-os", "node-runtime", "console "+v)
		if err != nil {
			return nil, err
		}
		if err := put("spaceone/console:"+v, img); err != nil {
			return nil, err
		}
	}
	for _, v := range []string{"1.0.0", "1.4.1", "1.4.2-rc1", "2.0.0"} {
		img, err := image(types.OCIManifestSchema1, "linux/amd64", "base-os", "python-runtime", "plugin "+v)
		if err != nil {
			return nil, err
		}
		if err := put("spaceone/plugin-aws-ec2-inven-collector:"+v, img); err != nil {
			return nil, err
		}
	}
	amd, err := image(types.OCIManifestSchema1, "linux/amd64", "base-os", "redis amd64")
	if err != nil {
		return nil, err
	}
	arm, err := image(types.OCIManifestSchema1, "linux/arm64", "base-os arm64", "redis arm64")
	if err != nil {
		return nil, err
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := put("library/redis:latest", idx); err != nil {
		return nil, err
	}
	return digests, nil
}

const mapping = `# A Cloudforet-style mapping file (dregsy format), pointed at the demo's source registry.
tasks:
  - name: sync_spaceone_core
    source:
      registry: %[1]s
    mappings:
      - from: spaceone/console
        to: cloudforet/spaceone/console
        tags:
          - 'regex: 1\.11\.(?:[0-9]?[0-9]).*'
      - from: library/redis
        to: cloudforet/spaceone/redis
        tags:
          - latest
  - name: sync_spaceone_plugin
    source:
      registry: %[1]s
    mappings:
      - from: spaceone/plugin-aws-ec2-inven-collector
        to: cloudforet/spaceone/plugin-aws-ec2-inven-collector
        tags:
          - 'semver: >=1.0.0 <1.99.0'
          - 'keep: latest 2'
`

func step(ferry string, args ...string) error {
	fmt.Printf("\n$ ferry %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(context.Background(), ferry, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ferry %s: %w", args[0], err)
	}
	return nil
}

func run(ferry, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	src, stopSrc, err := serve()
	if err != nil {
		return err
	}
	defer stopSrc()
	dst, stopDst, err := serve()
	if err != nil {
		return err
	}
	defer stopDst()
	fmt.Printf("source registry (internet side):  %s\ntarget registry (internal side):  %s\n", src, dst)
	digests, err := seed(src)
	if err != nil {
		return err
	}
	fmt.Printf("seeded %d tags into the source registry\n", len(digests))
	mfile := filepath.Join(dir, "mappings.yaml")
	if err := os.WriteFile(mfile, []byte(fmt.Sprintf(mapping, src)), 0o644); err != nil {
		return err
	}
	bundle := filepath.Join(dir, "cloudforet.tar")
	for _, args := range [][]string{
		{"export", "-f", mfile, "-o", bundle},
		{"inspect", bundle},
		{"verify", bundle},
		{"import", bundle, "--to", dst},
	} {
		if err := step(ferry, args...); err != nil {
			return err
		}
	}
	// Every exported tag must be in the target with its source digest.
	want := map[string]string{
		"cloudforet/spaceone/console:1.11.0":                           digests["spaceone/console:1.11.0"],
		"cloudforet/spaceone/console:1.11.3":                           digests["spaceone/console:1.11.3"],
		"cloudforet/spaceone/redis:latest":                             digests["library/redis:latest"],
		"cloudforet/spaceone/plugin-aws-ec2-inven-collector:1.4.1":     digests["spaceone/plugin-aws-ec2-inven-collector:1.4.1"],
		"cloudforet/spaceone/plugin-aws-ec2-inven-collector:1.4.2-rc1": digests["spaceone/plugin-aws-ec2-inven-collector:1.4.2-rc1"],
	}
	fmt.Println("\nchecking the target registry:")
	for ref, d := range want {
		r, err := name.ParseReference(dst+"/"+ref, name.Insecure)
		if err != nil {
			return err
		}
		desc, err := remote.Head(r)
		if err != nil {
			return fmt.Errorf("%s is missing in the target: %w", ref, err)
		}
		if desc.Digest.String() != d {
			return fmt.Errorf("%s has digest %s in the target, %s in the source", ref, desc.Digest, d)
		}
		fmt.Printf("  ok  %s  %s\n", ref, d[:19])
	}
	fmt.Printf("\ndemo passed: %d tags carried across with identical digests; bundle at %s\n", len(want), bundle)
	return nil
}
