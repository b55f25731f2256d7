package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageKind is the manifest type a fixture is pushed as.
type ImageKind int

// Fixture kinds.
const (
	OCIImage    ImageKind = iota // application/vnd.oci.image.manifest.v1+json
	DockerImage                  // application/vnd.docker.distribution.manifest.v2+json
	OCIIndex                     // OCI index of linux/amd64 and linux/arm64 OCI images
	DockerList                   // Docker manifest list of linux/amd64 and linux/arm64 Docker images
)

func (k ImageKind) String() string {
	return [...]string{"oci-image", "docker-image", "oci-index", "docker-list"}[k]
}

// FixtureCreated is the timestamp written into every fixture config.
var FixtureCreated = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// FixtureSpec describes one tag to push.
type FixtureSpec struct {
	Repo, Tag string
	Kind      ImageKind
	// Bases names shared base layers (same name = same bytes = same digest,
	// in any repository and either kind). Platform-specific bytes for arm64.
	Bases []string
	// AppSize is the size of the tag's own layer content (default 2 KiB).
	AppSize int
	// AliasOf names another tag of the same repository; this tag then points
	// at the same image (as "latest" usually does).
	AliasOf string
	// LargeLayer > 0 replaces bases and app layer with one streamed,
	// uncompressed layer of about this many bytes (see LargeLayerSet).
	LargeLayer int64
}

// FixtureSet is a list of tags to push.
type FixtureSet struct {
	Name  string
	Specs []FixtureSpec
}

// Fixture is what Seed pushed for one tag.
type Fixture struct {
	Repo, Tag string
	Digest    string // manifest or index digest
	MediaType string // manifest or index media type
	Kind      ImageKind
	Platforms []string // "linux/amd64" … for indexes; nil for images
	Layers    []string // layer digests (of every child, for indexes)
}

// Ref returns "repo:tag".
func (f Fixture) Ref() string { return f.Repo + ":" + f.Tag }

// SmallSet is a few repositories with KB-sized layers: shared bases, both
// manifest kinds, an OCI index, a Docker manifest list, and tags that
// exercise dregsy-style filters.
func SmallSet() FixtureSet {
	var s []FixtureSpec
	add := func(repo string, kind ImageKind, bases []string, tags []string, latestOf string) {
		for _, tag := range tags {
			s = append(s, FixtureSpec{Repo: repo, Tag: tag, Kind: kind, Bases: bases})
		}
		if latestOf != "" {
			s = append(s, FixtureSpec{Repo: repo, Tag: "latest", Kind: kind, AliasOf: latestOf})
		}
	}
	node := []string{"os", "node-runtime"}
	py := []string{"os", "python-runtime"}
	add("spaceone/console", DockerImage, node,
		[]string{"1.10.3", "1.11.0", "1.11.5", "1.11.12", "1.11.12-rc1", "1.12.0"}, "1.12.0")
	add("spaceone/plugin-a", OCIImage, py,
		[]string{"1.0.0", "1.2.0", "1.4.1", "1.4.2-rc1", "2.0.0", "v1.3.0"}, "2.0.0")
	add("spaceone/plugin-b", DockerImage, py, []string{"1.0.0", "1.1.0"}, "")
	add("library/redis", OCIIndex, []string{"os"}, []string{"7.2.4"}, "7.2.4")
	add("library/alpine", DockerList, []string{"os"}, []string{"3.19"}, "3.19")
	add("library/busybox", OCIImage, []string{"os"}, []string{"1.36"}, "")
	return FixtureSet{Name: "small", Specs: s}
}

// LargeLayerSet is one OCI image "large/blob:latest" with one uncompressed
// layer of size bytes (rounded up to a multiple of 512, at least 2048) of
// seeded random data, streamed and never held in memory.
func LargeLayerSet(size int64) FixtureSet {
	return FixtureSet{Name: "large", Specs: []FixtureSpec{{Repo: "large/blob", Tag: "latest", Kind: OCIImage, LargeLayer: size}}}
}

// ManySmallSet looks like the Cloudforet set: repos repositories under
// "cloudforet/", tagsPerRepo tags each plus "latest", alternating OCI and
// Docker kinds, every image on one shared OS layer and one of a few shared
// runtime layers, with a small layer of its own.
func ManySmallSet(repos, tagsPerRepo int) FixtureSet {
	components := []string{"console", "console-api", "identity", "inventory", "monitoring", "notification",
		"plugin", "repository", "secret", "statistics", "config", "cost-analysis", "board", "file-manager",
		"dashboard", "search", "opsflow", "alert-manager", "spacectl", "supervisor"}
	var s []FixtureSpec
	for i := range repos {
		repo := "cloudforet/" + components[i%len(components)]
		if i >= len(components) {
			repo = fmt.Sprintf("cloudforet/plugin-%s-%02d", components[i%len(components)], i/len(components))
		}
		kind := OCIImage
		if i%2 == 1 {
			kind = DockerImage
		}
		bases := []string{"many-os", fmt.Sprintf("many-runtime-%d", i%4)}
		var last string
		for j := range tagsPerRepo {
			tag := fmt.Sprintf("%d.%d.%d", 1+j/40, 10+(j/8)%5, j%8)
			if j%7 == 6 {
				tag += "-rc1"
			} else {
				last = tag
			}
			s = append(s, FixtureSpec{Repo: repo, Tag: tag, Kind: kind, Bases: bases, AppSize: 512})
		}
		if last != "" {
			s = append(s, FixtureSpec{Repo: repo, Tag: "latest", Kind: kind, AliasOf: last})
		}
	}
	return FixtureSet{Name: fmt.Sprintf("many-%dx%d", repos, tagsPerRepo), Specs: s}
}

// Seed pushes set into r as user and returns a Fixture per spec, in order.
func Seed(t testing.TB, r *Registry, user string, set FixtureSet) []Fixture {
	t.Helper()
	type built struct {
		t   remote.Taggable
		fix Fixture
	}
	images := map[string]*built{} // repo:tag
	byRepo := map[string][]string{}
	var order []string
	for _, sp := range set.Specs {
		if sp.AliasOf != "" {
			continue
		}
		key := sp.Repo + ":" + sp.Tag
		tg, fix, err := buildFixture(sp)
		if err != nil {
			t.Fatalf("building fixture %s: %v", key, err)
		}
		images[key] = &built{tg, fix}
	}
	for _, sp := range set.Specs {
		key := sp.Repo + ":" + sp.Tag
		if sp.AliasOf != "" {
			b, ok := images[sp.Repo+":"+sp.AliasOf]
			if !ok {
				t.Fatalf("fixture %s: alias of unknown tag %s", key, sp.AliasOf)
			}
			fix := b.fix
			fix.Tag = sp.Tag
			images[key] = &built{b.t, fix}
		}
		if _, seen := byRepo[sp.Repo]; !seen {
			order = append(order, sp.Repo)
		}
		byRepo[sp.Repo] = append(byRepo[sp.Repo], key)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opts := append(r.RemoteOptions(user), remote.WithContext(ctx), remote.WithJobs(4))
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 4)
		mu   sync.Mutex
		errs []error
	)
	for _, repo := range order {
		m := map[name.Reference]remote.Taggable{}
		for _, key := range byRepo[repo] {
			ref, err := name.ParseReference(r.Host+"/"+key, refOpts(r)...)
			if err != nil {
				t.Fatalf("parsing %s: %v", key, err)
			}
			m[ref] = images[key].t
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := remote.MultiWrite(m, opts...); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("pushing %s: %w", repo, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("seeding %s into %s: %v", set.Name, r.Host, errs)
	}
	out := make([]Fixture, 0, len(set.Specs))
	for _, sp := range set.Specs {
		out = append(out, images[sp.Repo+":"+sp.Tag].fix)
	}
	return out
}

func refOpts(r *Registry) []name.Option {
	if r.TLS() {
		return nil
	}
	return []name.Option{name.Insecure}
}

func buildFixture(sp FixtureSpec) (remote.Taggable, Fixture, error) {
	fix := Fixture{Repo: sp.Repo, Tag: sp.Tag, Kind: sp.Kind}
	var tg interface {
		Digest() (v1.Hash, error)
		MediaType() (types.MediaType, error)
	}
	switch sp.Kind {
	case OCIImage, DockerImage:
		img, err := buildImage(sp, "amd64")
		if err != nil {
			return nil, fix, err
		}
		if fix.Layers, err = layerDigests(img); err != nil {
			return nil, fix, err
		}
		tg = img
	case OCIIndex, DockerList:
		var idx v1.ImageIndex = empty.Index
		child := OCIImage
		if sp.Kind == DockerList {
			idx = mutate.IndexMediaType(idx, types.DockerManifestList)
			child = DockerImage
		} else {
			idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
		}
		for _, arch := range []string{"amd64", "arm64"} {
			csp := sp
			csp.Kind = child
			img, err := buildImage(csp, arch)
			if err != nil {
				return nil, fix, err
			}
			ls, err := layerDigests(img)
			if err != nil {
				return nil, fix, err
			}
			fix.Layers = append(fix.Layers, ls...)
			mt, err := img.MediaType()
			if err != nil {
				return nil, fix, err
			}
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add:        img,
				Descriptor: v1.Descriptor{MediaType: mt, Platform: &v1.Platform{OS: "linux", Architecture: arch}},
			})
			fix.Platforms = append(fix.Platforms, "linux/"+arch)
		}
		tg = idx
	default:
		return nil, fix, fmt.Errorf("unknown kind %d", sp.Kind)
	}
	d, err := tg.Digest()
	if err != nil {
		return nil, fix, err
	}
	mt, err := tg.MediaType()
	if err != nil {
		return nil, fix, err
	}
	fix.Digest, fix.MediaType = d.String(), string(mt)
	return tg.(remote.Taggable), fix, nil
}

func layerDigests(img v1.Image) ([]string, error) {
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		out = append(out, d.String())
	}
	return out, nil
}

func buildImage(sp FixtureSpec, arch string) (v1.Image, error) {
	manifestMT, configMT, layerMT := types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
	if sp.Kind == DockerImage {
		manifestMT, configMT, layerMT = types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	}
	img := mutate.MediaType(empty.Image, manifestMT)
	img = mutate.ConfigMediaType(img, configMT)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: arch,
		OS:           "linux",
		Created:      v1.Time{Time: FixtureCreated},
		Config: v1.Config{
			Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			Labels: map[string]string{"org.opencontainers.image.version": sp.Tag, "org.opencontainers.image.title": sp.Repo},
		},
	})
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	hist := func(what string) v1.History {
		return v1.History{Created: v1.Time{Time: FixtureCreated}, CreatedBy: "ferry fixture: " + what}
	}
	if sp.LargeLayer > 0 {
		l := NewStreamLayer(sp.Repo+":"+sp.Tag, sp.LargeLayer)
		adds = append(adds, mutate.Addendum{Layer: l, History: hist("large layer")})
	} else {
		for _, b := range sp.Bases {
			key := b
			if arch != "amd64" {
				key += "-" + arch
			}
			l, err := gzipLayer("base/"+key, 4<<10, layerMT)
			if err != nil {
				return nil, err
			}
			adds = append(adds, mutate.Addendum{Layer: l, History: hist("base " + key)})
		}
		size := sp.AppSize
		if size == 0 {
			size = 2 << 10
		}
		l, err := gzipLayer("app/"+sp.Repo+"/"+sp.Tag+"/"+arch, size, layerMT)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: l, History: hist("app " + sp.Tag)})
	}
	return mutate.Append(img, adds...)
}

var layerCache sync.Map // name → []byte (gzipped tar)

// gzipLayer returns a layer whose tar holds one file of size seeded bytes,
// gzipped with a fixed header: the same name gives the same bytes.
func gzipLayer(name string, size int, mt types.MediaType) (v1.Layer, error) {
	key := fmt.Sprintf("%s/%d", name, size)
	gz, ok := layerCache.Load(key)
	if !ok {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		data := make([]byte, size)
		_, _ = seededRand(name).Read(data)
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name + "/data.bin", Size: int64(size), Mode: 0o644,
			ModTime: FixtureCreated, Format: tar.FormatUSTAR,
		}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		var zb bytes.Buffer
		zw, err := gzip.NewWriterLevel(&zb, gzip.BestSpeed)
		if err != nil {
			return nil, err
		}
		zw.Header = gzip.Header{OS: 255} // no name, no mtime
		if _, err := zw.Write(tb.Bytes()); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		gz, _ = layerCache.LoadOrStore(key, zb.Bytes())
	}
	b := gz.([]byte)
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(mt))
}

// seededRand is a ChaCha8 stream seeded from name.
func seededRand(name string) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256([]byte("ferry-fixture/" + name)))
}

// StreamLayer is an uncompressed OCI layer (a tar with one file of seeded
// random bytes) generated while it is read; its size is known up front and
// its digest takes one streaming pass, computed on first use.
type StreamLayer struct {
	name     string
	dataSize int64
	size     int64

	once   sync.Once
	digest v1.Hash
	err    error
}

var _ v1.Layer = (*StreamLayer)(nil)

// NewStreamLayer returns a layer of size bytes (rounded up to a multiple of
// 512, at least 2048) whose content depends only on name and size.
func NewStreamLayer(name string, size int64) *StreamLayer {
	data := max(size-3*512, 1)
	return &StreamLayer{name: name, dataSize: data, size: 512 + (data+511)/512*512 + 1024}
}

func (l *StreamLayer) open() io.ReadCloser {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	// Writing only the header: the tar's data and trailer follow below.
	_ = tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: "large.bin", Size: l.dataSize, Mode: 0o644,
		ModTime: FixtureCreated, Format: tar.FormatUSTAR,
	})
	rng := seededRand(fmt.Sprintf("stream/%s/%d", l.name, l.dataSize))
	pad := l.size - int64(hdr.Len()) - l.dataSize
	return io.NopCloser(io.MultiReader(
		bytes.NewReader(hdr.Bytes()),
		io.LimitReader(rng, l.dataSize),
		io.LimitReader(zeroReader{}, pad),
	))
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Digest returns the sha256 of the layer, computed once by streaming it.
func (l *StreamLayer) Digest() (v1.Hash, error) {
	l.once.Do(func() {
		rc := l.open()
		defer rc.Close()
		l.digest, _, l.err = v1.SHA256(rc)
	})
	return l.digest, l.err
}

// DiffID equals Digest: the layer is not compressed.
func (l *StreamLayer) DiffID() (v1.Hash, error) { return l.Digest() }

// Compressed streams the layer bytes.
func (l *StreamLayer) Compressed() (io.ReadCloser, error) { return l.open(), nil }

// Uncompressed streams the layer bytes.
func (l *StreamLayer) Uncompressed() (io.ReadCloser, error) { return l.open(), nil }

// Size returns the layer's size in bytes.
func (l *StreamLayer) Size() (int64, error) { return l.size, nil }

// MediaType is the uncompressed OCI layer type.
func (l *StreamLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }

// Repos returns the distinct repositories of fixtures, sorted.
func Repos(fs []Fixture) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range fs {
		if !seen[f.Repo] {
			seen[f.Repo] = true
			out = append(out, f.Repo)
		}
	}
	sort.Strings(out)
	return out
}
