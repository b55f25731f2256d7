package harness

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testUsers = map[string]string{"alice": "correct horse", "robot$ci": "battery staple"}

func TestHtpasswdTLS(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{Users: testUsers, TLS: true, AccessLog: true})
	fixtures := Seed(t, r, "alice", SmallSet())
	checkFixtures(t, r, "robot$ci", fixtures)
	checkDenied(t, r, fixtures[0])
	if n := len(r.Requests()); n == 0 {
		t.Errorf("access log recorded no requests")
	}
}

func TestTokenAuthTLS(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{Users: testUsers, TLS: true, TokenAuth: true})
	fixtures := Seed(t, r, "alice", SmallSet())
	before := len(r.TokenRequests())
	if before == 0 {
		t.Fatalf("seeding used no token")
	}
	checkFixtures(t, r, "robot$ci", fixtures)
	reqs := r.TokenRequests()
	if len(reqs) <= before {
		t.Errorf("pulling used no token: %d requests before, %d after", before, len(reqs))
	}
	if last := reqs[len(reqs)-1]; last.User != "robot$ci" || last.Status != http.StatusOK || last.Service != TokenService {
		t.Errorf("last token request = %+v, want robot$ci granted for %s", last, TokenService)
	}
	checkDenied(t, r, fixtures[0])
	if !slices.ContainsFunc(r.TokenRequests(), func(q TokenRequest) bool { return q.Status == http.StatusUnauthorized }) {
		t.Errorf("token issuer never refused a wrong password")
	}

	// A counting proxy in front keeps token auth working and sees the
	// token request.
	p, c := CountingProxy(t, r)
	ref := p.Ref(t, fixtures[0].Ref())
	desc, err := remote.Get(ref, p.RemoteOptions("alice")...)
	if err != nil {
		t.Fatalf("pulling %s through proxy: %v", ref, err)
	}
	if desc.Digest.String() != fixtures[0].Digest {
		t.Errorf("through proxy: digest %s, want %s", desc.Digest, fixtures[0].Digest)
	}
	if got := c.Count(http.MethodGet, KindManifest); got != 1 {
		t.Errorf("GET manifest count = %d, want 1 (%s)", got, c)
	}
	if got := c.Count("", KindToken); got < 1 {
		t.Errorf("token requests through proxy = %d, want ≥ 1 (%s)", got, c)
	}
}

func TestInProcess(t *testing.T) {
	t.Parallel()
	r := StartInProcess(t)
	fixtures := Seed(t, r, "", SmallSet())
	checkFixtures(t, r, "", fixtures)

	p, c := CountingProxy(t, r)
	img, err := remote.Image(p.Ref(t, "spaceone/plugin-a:1.0.0"), p.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if got, want := c.Count(http.MethodGet, KindBlob), len(layers); got != want {
		t.Errorf("GET blob count = %d, want %d layers (%s)", got, want, c)
	}
	if got := c.Count(http.MethodGet, KindManifest); got != 1 {
		t.Errorf("GET manifest count = %d, want 1 (%s)", got, c)
	}
}

func TestLargeLayerStreams(t *testing.T) {
	t.Parallel()
	const size = 1<<20 + 100
	l := NewStreamLayer("large/blob:latest", size)
	n, _ := l.Size()
	if n%512 != 0 || n < size {
		t.Fatalf("size %d: want a multiple of 512 ≥ %d", n, size)
	}
	rc, _ := l.Compressed()
	h, read, err := sha256Reader(rc)
	if err != nil || read != n {
		t.Fatalf("read %d bytes (err %v), want %d", read, err, n)
	}
	d, _ := l.Digest()
	if h != d.String() {
		t.Fatalf("digest %s, stream hashes to %s", d, h)
	}
	if d2, _ := NewStreamLayer("large/blob:latest", size).Digest(); d2 != d {
		t.Fatalf("not deterministic: %s vs %s", d, d2)
	}

	r := StartInProcess(t)
	fixtures := Seed(t, r, "", LargeLayerSet(size))
	checkFixtures(t, r, "", fixtures)
	if len(fixtures[0].Layers) != 1 || fixtures[0].Layers[0] != d.String() {
		t.Errorf("pushed layers %v, want [%s]", fixtures[0].Layers, d)
	}
}

func TestFixturesDeterministic(t *testing.T) {
	t.Parallel()
	for _, set := range []FixtureSet{SmallSet(), ManySmallSet(3, 10)} {
		for _, sp := range set.Specs {
			if sp.AliasOf != "" {
				continue
			}
			_, a, err := buildFixture(sp)
			if err != nil {
				t.Fatal(err)
			}
			layerCache.Clear()
			_, b, err := buildFixture(sp)
			if err != nil {
				t.Fatal(err)
			}
			if a.Digest != b.Digest {
				t.Errorf("%s: digest %s then %s", a.Ref(), a.Digest, b.Digest)
			}
		}
	}
	many := ManySmallSet(50, 8)
	if len(Repos(seedless(many))) != 50 {
		t.Errorf("ManySmallSet(50, 8) has %d repos", len(Repos(seedless(many))))
	}
}

func seedless(set FixtureSet) []Fixture {
	var out []Fixture
	for _, sp := range set.Specs {
		out = append(out, Fixture{Repo: sp.Repo, Tag: sp.Tag})
	}
	return out
}

func TestBuildFerryAndRun(t *testing.T) {
	t.Parallel()
	bin := BuildFerry(t)
	if bin2 := BuildFerry(t); bin2 != bin {
		t.Errorf("second build gave %s, want %s", bin2, bin)
	}
	_, _, code := Run(t, bin, "--help")
	if code < 0 {
		t.Errorf("exit code %d", code)
	}
	_, _, code = Run(t, "/bin/sh", "-c", "exit 3")
	if code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
}

// checkFixtures pulls every fixture as user and checks digests, media
// types, shared layers and index children.
func checkFixtures(t *testing.T, r *Registry, user string, fixtures []Fixture) {
	t.Helper()
	opts := r.RemoteOptions(user)
	layerRepos := map[string]map[string]bool{} // layer digest → repos
	var sawIndex, sawList, sawDocker, sawOCI bool
	for _, f := range fixtures {
		desc, err := remote.Get(r.Ref(t, f.Ref()), opts...)
		if err != nil {
			t.Fatalf("pulling %s: %v", f.Ref(), err)
		}
		if desc.Digest.String() != f.Digest {
			t.Errorf("%s: digest %s, recorded %s", f.Ref(), desc.Digest, f.Digest)
		}
		if string(desc.MediaType) != f.MediaType {
			t.Errorf("%s: media type %s, recorded %s", f.Ref(), desc.MediaType, f.MediaType)
		}
		switch f.Kind {
		case DockerImage:
			sawDocker = true
			if desc.MediaType != types.DockerManifestSchema2 {
				t.Errorf("%s: Docker fixture served as %s", f.Ref(), desc.MediaType)
			}
		case OCIImage:
			sawOCI = desc.MediaType == types.OCIManifestSchema1
		case OCIIndex, DockerList:
			idx, err := desc.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != 2 {
				t.Errorf("%s: %d children, want 2", f.Ref(), len(im.Manifests))
			}
			for i, m := range im.Manifests {
				if got := m.Platform.OS + "/" + m.Platform.Architecture; got != f.Platforms[i] {
					t.Errorf("%s child %d: platform %s, want %s", f.Ref(), i, got, f.Platforms[i])
				}
			}
			sawIndex = sawIndex || desc.MediaType == types.OCIImageIndex
			sawList = sawList || desc.MediaType == types.DockerManifestList
		}
		for _, l := range f.Layers {
			if layerRepos[l] == nil {
				layerRepos[l] = map[string]bool{}
			}
			layerRepos[l][f.Repo] = true
		}
	}
	if len(fixtures) > 1 {
		shared := 0
		for _, repos := range layerRepos {
			if len(repos) >= 3 {
				shared++
			}
		}
		if shared == 0 {
			t.Errorf("no layer digest is shared by three or more repositories")
		}
		if !sawIndex || !sawList || !sawDocker || !sawOCI {
			t.Errorf("kinds seen: OCI index %t, Docker list %t, Docker image %t, OCI image %t", sawIndex, sawList, sawDocker, sawOCI)
		}
		// A shared base layer can be fetched from each repository.
		for l, repos := range layerRepos {
			if len(repos) < 3 {
				continue
			}
			for repo := range repos {
				if _, err := remote.Layer(r.Ref(t, repo+"@"+l).Context().Digest(l), opts...); err != nil {
					t.Errorf("layer %s in %s: %v", l, repo, err)
				}
			}
			break
		}
	}
}

// checkDenied: a wrong password and anonymous access both fail with 401.
func checkDenied(t *testing.T, r *Registry, f Fixture) {
	t.Helper()
	ref := r.Ref(t, f.Ref())
	for name, a := range map[string]authn.Authenticator{
		"wrong password": &authn.Basic{Username: "alice", Password: "wrong"},
		"unknown user":   &authn.Basic{Username: "mallory", Password: "x"},
		"anonymous":      authn.Anonymous,
	} {
		_, err := remote.Get(ref, r.RemoteOptionsAuth(a)...)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: pulling %s: err %v, want a 401", name, f.Ref(), err)
		}
	}
}

func sha256Reader(rc io.ReadCloser) (string, int64, error) {
	defer rc.Close()
	h, n, err := v1SHA256(rc)
	return h, n, err
}

func TestTokenAuthPlainHTTP(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{Users: testUsers, TokenAuth: true})
	if r.TLS() || r.CAFile != "" {
		t.Fatalf("plain HTTP registry has TLS %t, CA file %q", r.TLS(), r.CAFile)
	}
	fixtures := Seed(t, r, "alice", SmallSet())
	checkFixtures(t, r, "alice", fixtures)
	checkDenied(t, r, fixtures[0])
}
