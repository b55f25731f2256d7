package test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestWithReferrersCarriesCosignTags: what cosign stores next to an image
// (sha256-<digest>.sig / .att) travels with --with-referrers and arrives in
// the target with identical digests, which is what `cosign verify` reads.
func TestWithReferrersCarriesCosignTags(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/signed", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "app/signed", Tag: "2.0", Kind: harness.OCIIndex, Bases: []string{"os"}},
	}})
	// A signature artifact as cosign writes it: a manifest whose layer is
	// the simple-signing payload, annotated with the signature.
	artifact := func(payload string) v1.Image {
		l := static.NewLayer([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json")
		img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l, Annotations: map[string]string{
			"dev.cosignproject.cosign/signature": "MEUCIQDfake" + payload[:4],
		}})
		if err != nil {
			t.Fatal(err)
		}
		return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	sigs := map[string]string{} // tag → digest
	put := func(tag string, a v1.Image) {
		ref := src.Ref(t, "app/signed:"+tag)
		if err := remote.Write(ref, a, src.RemoteOptions("")...); err != nil {
			t.Fatal(err)
		}
		d, err := remote.Head(ref, src.RemoteOptions("")...)
		if err != nil {
			t.Fatal(err)
		}
		sigs[tag] = d.Digest.String()
	}
	for _, f := range fx {
		hexd := strings.TrimPrefix(f.Digest, "sha256:")
		put("sha256-"+hexd+".sig", artifact(`{"critical":{"image":{"docker-manifest-digest":"`+f.Digest+`"}}}`))
	}
	put("sha256-"+strings.TrimPrefix(fx[0].Digest, "sha256:")+".att", artifact(`{"payloadType":"application/vnd.in-toto+json","for":"`+fx[0].Digest+`"}`))

	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/signed\n        to: mirror/signed\n        tags: ['1.0', '2.0']\n")

	// Without the flag only the two tags travel.
	plain := filepath.Join(dir, "plain.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", plain); code != 0 {
		t.Fatalf("export: %s %s", stdout, stderr)
	}
	stdout, _, _ := harness.Run(t, bin, "inspect", "--json", plain)
	if strings.Contains(stdout, ".sig") {
		t.Fatal("signatures exported without --with-referrers")
	}

	out := filepath.Join(dir, "signed.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "--with-referrers", "-f", mapping, "-o", out); code != 0 {
		t.Fatalf("export --with-referrers: %s %s", stdout, stderr)
	}
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	if stdout, stderr, code := harness.Run(t, bin, "import", out, "--to", dst.Host); code != 0 {
		t.Fatalf("import: %s %s", stdout, stderr)
	}
	for tag, want := range sigs {
		d, err := remote.Head(dst.Ref(t, "mirror/signed:"+tag), dst.RemoteOptions("")...)
		if err != nil {
			t.Fatalf("%s missing in the target: %v", tag, err)
		}
		if d.Digest.String() != want {
			t.Errorf("%s: target %s, source %s", tag, d.Digest, want)
		}
	}
	for _, f := range fx {
		d, err := remote.Head(dst.Ref(t, "mirror/signed:"+f.Tag), dst.RemoteOptions("")...)
		if err != nil || d.Digest.String() != f.Digest {
			t.Errorf("%s: %v %v", f.Tag, d, err)
		}
	}
}

// TestWithReferrersCarriesOCIReferrers: artifacts a registry lists through
// the OCI referrers API travel as the referrers tag schema's sha256-<hex>
// index, so that they are found on a target without the API (distribution
// 2.8 here), with identical digests.
func TestWithReferrersCarriesOCIReferrers(t *testing.T) {
	bin := harness.BuildFerry(t)
	src := harness.StartInProcess(t) // go-containerregistry's registry answers the referrers API
	fx := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/sbom", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}},
	}})
	subject, err := remote.Head(src.Ref(t, "app/sbom:1.0"), src.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	l := static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3"}`), "application/spdx+json")
	art, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l})
	if err != nil {
		t.Fatal(err)
	}
	art = mutate.MediaType(art, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, "application/vnd.oci.empty.v1+json")
	art = mutate.Subject(art, *subject).(v1.Image)
	artDigest, _ := art.Digest()
	if err := remote.Write(src.Ref(t, "app/sbom@"+artDigest.String()), art, src.RemoteOptions("")...); err != nil {
		t.Fatal(err)
	}
	// The source lists it through the API, with no fallback tag.
	listed, err := remote.Referrers(src.Ref(t, "app/sbom@"+fx[0].Digest).(name.Digest), src.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := listed.IndexManifest(); len(m.Manifests) != 1 {
		t.Fatalf("source lists %d referrers", len(m.Manifests))
	}

	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+src.Host+"\n    mappings:\n      - from: app/sbom\n        tags: ['1.0']\n")
	out := filepath.Join(dir, "b.tar")
	if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "--with-referrers", "-f", mapping, "-o", out); code != 0 {
		t.Fatalf("export: %s %s", stdout, stderr)
	}
	dst := harness.StartRegistry(t, harness.RegistryOptions{})
	if stdout, stderr, code := harness.Run(t, bin, "import", out, "--to", dst.Host); code != 0 {
		t.Fatalf("import: %s %s", stdout, stderr)
	}
	got, err := remote.Referrers(dst.Ref(t, "app/sbom@"+fx[0].Digest).(name.Digest), dst.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := got.IndexManifest()
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != artDigest {
		t.Fatalf("target referrers of %s: %+v, want %s", fx[0].Digest, m.Manifests, artDigest)
	}
	// ferry serve answers the referrers API from the bundle.
	srv := startServe(t, bin, out)
	served := &harness.Registry{Host: srv.addr, URL: "http://" + srv.addr}
	sl, err := remote.Referrers(served.Ref(t, "app/sbom@"+fx[0].Digest).(name.Digest), served.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := sl.IndexManifest(); len(m.Manifests) != 1 || m.Manifests[0].Digest != artDigest {
		t.Fatalf("ferry serve referrers: %+v", m)
	}
	srv.stop(t)

	// The artifact itself is there, byte for byte.
	d, err := remote.Head(dst.Ref(t, "app/sbom@"+artDigest.String()), dst.RemoteOptions("")...)
	if err != nil || d.Digest != artDigest {
		t.Fatalf("artifact in the target: %v %v", d, err)
	}
}
