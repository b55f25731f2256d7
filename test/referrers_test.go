package test

import (
	"path/filepath"
	"strings"
	"testing"

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
