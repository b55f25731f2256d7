package mapping

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/filter"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/registry"
)

// Options configure Resolve.
type Options struct {
	// Sources reads the source registries: credentials, mirrors, one
	// authenticated handle per repository. Required.
	Sources *Sources
	// Platforms overrides every mapping's `platform:`: nil keeps the
	// mapping's choice; ["all"] keeps every platform.
	Platforms []string
	// Cache keeps manifests by digest across runs: a tag whose HEAD shows a
	// digest already cached costs no GET. Optional.
	Cache ManifestCache
	// BeforeGet is called before every manifest GET (the request Docker Hub
	// counts against its pull limit); its error stops that image. Optional.
	BeforeGet func(host string) error
	// Skip is asked, once a tag's digest is known (from its HEAD, or a
	// digest pin) and before any manifest GET, whether the image is needed
	// at all. When it returns true the image goes to Resolution.Skipped and
	// costs nothing more; an error fails that tag. ferry sync uses it to
	// leave alone what the target already has. Optional.
	Skip func(ctx context.Context, c Candidate) (bool, error)
	// WithReferrers also resolves what cosign stored for each image under
	// the sha256-<digest>.sig/.att/.sbom tags, as extra tags of the same
	// repository.
	WithReferrers bool
	// Jobs bounds parallel requests (default registry.DefaultJobs).
	Jobs   int
	Logger *slog.Logger
}

// Candidate is a selected tag (or digest pin) whose digest is known but
// whose manifests have not been fetched: what Options.Skip decides on.
type Candidate struct {
	Task   *Task
	Source string // as Image.Source
	Target string // as Image.Target
	Tag    string // "" for a digest pin without tag
	// Digest and MediaType are what upstream serves for the tag; with a
	// platform subset the stored index will have another digest.
	Digest    v1.Hash
	MediaType types.MediaType
	// Platforms is the platform subset asked for; nil keeps every platform.
	Platforms []string
}

// Manifest is a manifest or index document as served.
type Manifest struct {
	Digest    v1.Hash
	MediaType types.MediaType
	Data      []byte
	// FromCache is set when the cache, not the registry, supplied Data.
	FromCache bool
}

// Image is one resolved image: a tag pinned to a digest, with every
// manifest and blob it needs.
type Image struct {
	Task string
	// Source is the canonical reference the image was selected as, e.g.
	// docker.io/library/redis:7.2 or docker.io/library/redis@sha256:....
	Source string
	// Registry is the canonical source registry (docker.io for Docker Hub).
	Registry string
	// Repository is where the bytes are fetched from (a mirror if one is set).
	Repository name.Repository
	// Target is the repository path the image goes to.
	Target string
	// Tag is the tag (empty for a digest pin without tag).
	Tag string
	// Root is the manifest or index the tag points at, as stored in the
	// bundle (a rewritten index when only some platforms are kept).
	Root Manifest
	// UpstreamDigest is set when Root was rewritten for a platform subset.
	UpstreamDigest v1.Hash
	// Children are the platform manifests of an index.
	Children []Manifest
	// Blobs are the configs and layers, each once.
	Blobs     []v1.Descriptor
	Platforms []string
}

// Size is the total size of the image's manifests and blobs.
func (im *Image) Size() int64 {
	n := int64(len(im.Root.Data))
	for _, c := range im.Children {
		n += int64(len(c.Data))
	}
	for _, b := range im.Blobs {
		n += b.Size
	}
	return n
}

// Failure is a mapping, or one tag of it, that could not be resolved.
type Failure struct {
	Task   string
	Source string // the repository or reference concerned
	Err    error
}

func (f Failure) Error() string { return fmt.Sprintf("task %q: %s: %v", f.Task, f.Source, f.Err) }

// ManifestCache stores manifests by digest.
type ManifestCache interface {
	Get(h v1.Hash) ([]byte, bool)
	Put(h v1.Hash, data []byte) error
}

// Resolution is the outcome of Resolve.
type Resolution struct {
	Images []*Image
	// Skipped are the images Options.Skip declined: Task, Source, Registry,
	// Repository, Target and Tag are set, Root has only Digest and
	// MediaType (the upstream ones), and no manifest was fetched.
	Skipped  []*Image
	Failures []Failure
	// ManifestGETs counts manifest GETs sent; CachedManifests those the
	// cache answered instead.
	ManifestGETs, CachedManifests int64
}

// ErrTagNotFound: a literal tag or pin names nothing upstream.
var ErrTagNotFound = errors.New("not found upstream")

// Resolve lists tags, applies each mapping's filter, pins every selected
// tag to a digest and reads every manifest the images need. Configs and
// layers are not fetched. Failures of single mappings or tags are collected
// in the result; the error is only for cancellation and bad options.
func Resolve(ctx context.Context, tasks []*Task, opts Options) (*Resolution, error) {
	if opts.Sources == nil {
		return nil, errors.New("mapping.Resolve: Options.Sources is required")
	}
	if opts.Jobs < 1 {
		opts.Jobs = registry.DefaultJobs
	}
	opts.Sources.Prepare(tasks)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &resolver{opts: opts, docs: map[string]*docResult{}}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	var lg errgroup.Group
	lg.SetLimit(opts.Jobs)
	var mu sync.Mutex
	res := &Resolution{}
	fail := func(f Failure) {
		mu.Lock()
		res.Failures = append(res.Failures, f)
		mu.Unlock()
	}
	type job struct {
		task  *Task
		m     *Mapping
		order int
	}
	c := &collected{skipped: map[*Image]bool{}}
	add := func(im *Image, o int, skip bool) {
		mu.Lock()
		c.images = append(c.images, im)
		c.order = append(c.order, o)
		if skip {
			c.skipped[im] = true
		}
		mu.Unlock()
	}
	n := 0
	for _, t := range tasks {
		for _, m := range t.Mappings {
			j := job{t, m, n}
			n += 100000
			if err := t.CheckSource(); err != nil {
				fail(Failure{Task: t.Name, Source: m.From, Err: err})
				continue
			}
			// Listing jobs have their own limit: they only queue tag jobs
			// on g, so they never wait for a slot they hold themselves.
			lg.Go(func() error {
				if err := r.mapping(gctx, g, j.task, j.m, func(im *Image, k int, skip bool) { add(im, j.order+k, skip) }, fail); err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					fail(Failure{Task: j.task.Name, Source: j.m.From, Err: err})
				}
				return nil
			})
		}
	}
	lerr := lg.Wait()
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.into(res)
	res.ManifestGETs, res.CachedManifests = r.gets.Load(), r.cached.Load()
	return res, nil
}

// collected is what the resolution's jobs found, in the order they
// finished, with each image's place in the mapping files.
type collected struct {
	images  []*Image
	order   []int
	skipped map[*Image]bool
}

// into puts the images into res in the mapping files' order, the skipped
// ones apart, and sorts the failures.
func (c *collected) into(res *Resolution) {
	idx := make([]int, len(c.images))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return c.order[idx[a]] < c.order[idx[b]] })
	for _, i := range idx {
		if c.skipped[c.images[i]] {
			res.Skipped = append(res.Skipped, c.images[i])
		} else {
			res.Images = append(res.Images, c.images[i])
		}
	}
	sort.SliceStable(res.Failures, func(a, b int) bool { return res.Failures[a].Source < res.Failures[b].Source })
}

type resolver struct {
	opts Options
	mu   sync.Mutex
	docs map[string]*docResult // manifest fetches by repository@digest, each once

	gets   atomic.Int64 // manifest GETs sent
	cached atomic.Int64 // manifests served from the cache
}

func (r *resolver) beforeGet(repo name.Repository) error {
	if r.opts.BeforeGet == nil {
		return nil
	}
	return r.opts.BeforeGet(repo.RegistryStr())
}

func (r *resolver) cachePut(h v1.Hash, data []byte) {
	if r.opts.Cache != nil {
		if err := r.opts.Cache.Put(h, data); err != nil {
			r.opts.Logger.Warn("caching manifest", "digest", h.String(), "error", err)
		}
	}
}

// headUnsupported tells a HEAD failure worth retrying as GET (a registry
// that does not answer HEAD properly) from one that a GET would only repeat:
// credentials refused, rate limited.
func headUnsupported(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
			return false
		}
		return true
	}
	return false
}

type docResult struct {
	once sync.Once
	m    Manifest
	err  error
}

// mappingPlan is one mapping, ready to resolve: where its images are read
// from and go to, its filter and the platforms it keeps.
type mappingPlan struct {
	task      *Task
	source    string          // canonical source repository
	registry  string          // canonical source registry
	fetch     name.Repository // where the bytes come from (a mirror if set)
	target    string
	filter    *filter.Filter
	platforms []string
	ropts     []remote.Option
}

// selection is a tag or digest pin of a mapping to resolve.
type selection struct{ tag, digest string }

// mapping resolves one mapping: it lists tags when the filter needs them,
// then schedules one job per selected tag on g.
func (r *resolver) mapping(ctx context.Context, g *errgroup.Group, t *Task, m *Mapping, add func(*Image, int, bool), fail func(Failure)) error {
	p, err := r.planMapping(ctx, t, m)
	if err != nil {
		return err
	}
	sels, err := r.selections(p, m)
	if err != nil {
		return err
	}
	for k, s := range sels {
		g.Go(func() error { return r.selected(ctx, p, s, func(im *Image, skip bool) { add(im, k, skip) }, fail) })
	}
	return nil
}

// planMapping works out where m reads from and writes to, and opens its
// source repository.
func (r *resolver) planMapping(ctx context.Context, t *Task, m *Mapping) (*mappingPlan, error) {
	fetch, src, err := r.opts.Sources.FetchRepository(t, m)
	if err != nil {
		return nil, err
	}
	p := &mappingPlan{task: t, source: src, fetch: fetch}
	p.registry, _, _ = strings.Cut(src, "/")
	p.target = m.TargetPath()
	if p.filter, err = filter.Parse(m.Tags); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", t.File, m.Line, err)
	}
	p.platforms = r.opts.Platforms
	if p.platforms == nil && m.Platform != "" {
		p.platforms = []string{m.Platform}
	}
	if len(p.platforms) == 1 && p.platforms[0] == "all" {
		p.platforms = nil
	}
	repo, err := r.opts.Sources.Repo(ctx, fetch, t)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", fetch.RegistryStr(), err)
	}
	p.ropts = append(repo.RemoteOptions(ctx), remote.WithContext(ctx))
	return p, nil
}

// selections lists the tags (when the filter needs the list), pins and
// digests m selects.
func (r *resolver) selections(p *mappingPlan, m *Mapping) ([]selection, error) {
	var tags []string
	if p.filter.NeedsList() {
		listed, err := remote.List(p.fetch, p.ropts...)
		if err != nil {
			return nil, fmt.Errorf("listing tags of %s on %s: %w", p.source, p.fetch.RegistryStr(), err)
		}
		tags = p.filter.Select(listed)
		r.opts.Logger.Info("listed tags", "repository", p.source, "tags", len(listed), "selected", len(tags))
	} else {
		tags = p.filter.Select(nil)
	}
	var sels []selection
	for _, tag := range tags {
		sels = append(sels, selection{tag: tag})
	}
	for _, pin := range p.filter.Pins() {
		sels = append(sels, selection{tag: pin.Tag, digest: pin.Digest})
	}
	for _, d := range m.Digests {
		sels = append(sels, selection{digest: d})
	}
	if len(sels) == 0 {
		r.opts.Logger.Warn("no tag selected", "task", p.task.Name, "repository", p.source, "filter", p.filter.String())
	}
	return sels, nil
}

// selected resolves one selection (and, with WithReferrers, what refers to
// it), handing each image to add and each failure to fail.
func (r *resolver) selected(ctx context.Context, p *mappingPlan, s selection, add func(*Image, bool), fail func(Failure)) error {
	t := p.task
	src := p.source + ":" + s.tag
	if s.digest != "" {
		src = p.source + "@" + s.digest
		if s.tag != "" {
			src = p.source + ":" + s.tag + "@" + s.digest
		}
	}
	var skip func(v1.Descriptor) (bool, error)
	if r.opts.Skip != nil {
		skip = func(d v1.Descriptor) (bool, error) {
			return r.opts.Skip(ctx, Candidate{Task: t, Source: src, Target: p.target, Tag: s.tag,
				Digest: d.Digest, MediaType: d.MediaType, Platforms: p.platforms})
		}
	}
	im, skipped, err := r.image(ctx, p.fetch, p.ropts, s.tag, s.digest, p.platforms, skip)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fail(Failure{Task: t.Name, Source: src, Err: err})
		return nil
	}
	im.Task, im.Source, im.Registry, im.Target, im.Tag = t.Name, src, p.registry, p.target, s.tag
	add(im, skipped)
	if r.opts.WithReferrers && !skipped {
		for _, art := range r.referrerArtifacts(ctx, p.fetch, p.ropts, im, fail) {
			art.Task, art.Source, art.Registry, art.Target = t.Name, p.source+":"+art.Tag, p.registry, p.target
			add(art, false)
		}
	}
	return nil
}

// cosignSuffixes are the tags cosign stores signatures, attestations and
// SBOMs under: sha256-<hex of the signed digest>.<suffix>.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// referrerArtifacts finds what refers to the image (its root and, for an
// index, each platform manifest), as extra tags of the same repository:
//
//   - cosign's sha256-<hex>.sig/.att/.sbom tags, which `cosign verify`
//     reads;
//   - OCI 1.1 referrers: the referrers tag schema's sha256-<hex> index when
//     the registry keeps one, else what the referrers API lists, carried as
//     that same sha256-<hex> index (the document the OCI distribution spec
//     defines for registries without the API), so the artifacts travel as
//     its children and stay discoverable on any target.
//
// Absent tags and empty lists are not failures.
func (r *resolver) referrerArtifacts(ctx context.Context, repo name.Repository, ropts []remote.Option, im *Image, fail func(Failure)) []*Image {
	digests := []v1.Hash{im.Root.Digest}
	if im.UpstreamDigest.Hex != "" {
		digests = append(digests, im.UpstreamDigest)
	}
	for _, c := range im.Children {
		digests = append(digests, c.Digest)
	}
	var out []*Image
	failed := func(tag string, err error) {
		if ctx.Err() == nil {
			fail(Failure{Task: im.Task, Source: repo.Name() + ":" + tag, Err: fmt.Errorf("artifact referring to %s: %w", im.Source, err)})
		}
	}
	for _, d := range digests {
		for _, suffix := range cosignSuffixes {
			tag := oci.DigestTag(d) + suffix
			art, _, err := r.image(ctx, repo, ropts, tag, "", nil, nil)
			switch {
			case err == nil:
				art.Tag = tag
				out = append(out, art)
			case !errors.Is(err, ErrTagNotFound):
				failed(tag, err)
			}
		}
		tag := oci.DigestTag(d)
		art, _, err := r.image(ctx, repo, ropts, tag, "", nil, nil)
		switch {
		case err == nil:
			art.Tag = tag
			out = append(out, art)
			continue
		case !errors.Is(err, ErrTagNotFound):
			failed(tag, err)
			continue
		}
		art, err = r.referrersIndex(ctx, repo, ropts, d)
		switch {
		case err != nil:
			failed(tag, err)
		case art != nil:
			art.Tag = tag
			out = append(out, art)
		}
	}
	return out
}

// referrersIndex asks the registry's referrers API what refers to d and
// returns it as a referrers-tag-schema index with its artifacts as
// children, or nil when nothing does.
func (r *resolver) referrersIndex(ctx context.Context, repo name.Repository, ropts []remote.Option, d v1.Hash) (*Image, error) {
	idx, err := remote.Referrers(repo.Digest(d.String()), ropts...)
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %w", d, err)
	}
	list, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var keep []v1.Descriptor
	for _, m := range list.Manifests {
		if oci.KindOf(m.MediaType) == oci.KindManifest {
			keep = append(keep, m)
		} else {
			r.opts.Logger.Warn("referrer skipped: only manifests are carried", "subject", d.String(), "referrer", m.Digest.String(), "mediaType", string(m.MediaType))
		}
	}
	if len(keep) == 0 {
		return nil, nil
	}
	data, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: keep})
	if err != nil {
		return nil, err
	}
	h, _, _ := v1.SHA256(bytes.NewReader(data))
	art := &Image{Repository: repo, Root: Manifest{Digest: h, MediaType: types.OCIImageIndex, Data: data}}
	for _, m := range keep {
		child, err := r.fetch(ctx, repo, ropts, m)
		if err != nil {
			return nil, err
		}
		art.Children = append(art.Children, child)
		if err := r.addManifest(art, child, nil); err != nil {
			return nil, err
		}
	}
	return art, nil
}

// image resolves one tag or digest of repo. When skip (optional) says so
// once the digest is known, it returns at once with skipped set and only
// the root's digest and media type.
func (r *resolver) image(ctx context.Context, repo name.Repository, ropts []remote.Option, tag, digest string, platforms []string, skip func(v1.Descriptor) (bool, error)) (*Image, bool, error) {
	var ref name.Reference
	var err error
	if digest != "" {
		ref, err = name.NewDigest(repo.Name() + "@" + digest)
	} else {
		ref, err = name.NewTag(repo.Name() + ":" + tag)
	}
	if err != nil {
		return nil, false, err
	}
	want, err := r.digestOf(repo, ropts, ref, tag, digest)
	if err != nil {
		return nil, false, err
	}
	if skip != nil {
		ok, err := skip(want)
		if err != nil {
			return nil, false, err
		}
		if ok {
			return &Image{Repository: repo, Root: Manifest{Digest: want.Digest, MediaType: want.MediaType}}, true, nil
		}
	}
	root, err := r.fetch(ctx, repo, ropts, want)
	if err != nil {
		if digest != "" && isNotFound(errors.Unwrap(err)) {
			return nil, false, fmt.Errorf("%s: %w on %s", refString(tag, digest), ErrTagNotFound, repo.RegistryStr())
		}
		return nil, false, err
	}
	im := &Image{Repository: repo, Root: root}
	switch oci.KindOf(root.MediaType) {
	case oci.KindManifest:
		err = r.addManifest(im, root, nil)
	case oci.KindIndex:
		err = r.addIndex(ctx, im, ropts, ref, platforms)
	default:
		err = fmt.Errorf("%s: unsupported manifest media type %q", ref, root.MediaType)
	}
	if err != nil {
		return nil, false, err
	}
	return im, false, nil
}

// digestOf tells what ref points at: the pinned digest, else a HEAD (free
// on Docker Hub; tags that share a digest then cost one manifest GET
// between them), else a GET where the registry answers HEAD badly.
func (r *resolver) digestOf(repo name.Repository, ropts []remote.Option, ref name.Reference, tag, digest string) (v1.Descriptor, error) {
	if digest != "" {
		h, err := v1.NewHash(digest)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("digest pin %q: %w", digest, err)
		}
		return v1.Descriptor{Digest: h}, nil
	}
	desc, err := remote.Head(ref, ropts...)
	switch {
	case err == nil:
		return *desc, nil
	case isNotFound(err):
		return v1.Descriptor{}, fmt.Errorf("%s: %w on %s", refString(tag, digest), ErrTagNotFound, repo.RegistryStr())
	case !headUnsupported(err):
		return v1.Descriptor{}, fmt.Errorf("checking %s on %s: %w", ref, repo.RegistryStr(), err)
	}
	if err := r.beforeGet(repo); err != nil {
		return v1.Descriptor{}, err
	}
	got, err := remote.Get(ref, ropts...)
	r.gets.Add(1)
	if err != nil {
		if isNotFound(err) {
			return v1.Descriptor{}, fmt.Errorf("%s: %w on %s", refString(tag, digest), ErrTagNotFound, repo.RegistryStr())
		}
		return v1.Descriptor{}, fmt.Errorf("fetching manifest %s from %s: %w", ref, repo.RegistryStr(), err)
	}
	r.remember(repo, Manifest{Digest: got.Digest, MediaType: got.MediaType, Data: got.Manifest})
	r.cachePut(got.Digest, got.Manifest)
	return got.Descriptor, nil
}

// addIndex keeps the platforms asked for of the index im.Root (rewriting
// the index when that is a subset) and fetches their manifests.
func (r *resolver) addIndex(ctx context.Context, im *Image, ropts []remote.Option, ref name.Reference, platforms []string) error {
	root := im.Root
	idx, err := oci.Index(root.Data)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	keep, err := selectPlatforms(idx.Manifests, platforms)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	if len(keep) < len(idx.Manifests) {
		// A registry refuses an index whose children are missing, so a
		// subset needs a new index: same document, fewer manifests.
		data, err := rewriteIndex(root.Data, keep)
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		h, _, _ := v1.SHA256(bytes.NewReader(data))
		im.UpstreamDigest = root.Digest
		im.Root = Manifest{Digest: h, MediaType: root.MediaType, Data: data, FromCache: root.FromCache}
	}
	for _, d := range keep {
		if oci.KindOf(d.MediaType) != oci.KindManifest {
			return fmt.Errorf("%s: nested index %s is not supported", ref, d.Digest)
		}
		child, err := r.fetch(ctx, im.Repository, ropts, d)
		if err != nil {
			return err
		}
		im.Children = append(im.Children, child)
		if err := r.addManifest(im, child, d.Platform); err != nil {
			return err
		}
	}
	return nil
}

func refString(tag, digest string) string {
	switch {
	case tag != "" && digest != "":
		return "tag " + tag + "@" + digest
	case digest != "":
		return "digest " + digest
	}
	return "tag " + tag
}

// addManifest records a platform manifest's config and layers.
func (r *resolver) addManifest(im *Image, m Manifest, p *v1.Platform) error {
	refs, err := oci.Refs(m.MediaType, m.Data)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", m.Digest, err)
	}
	for _, d := range refs {
		if d.Digest.Algorithm != "sha256" {
			return fmt.Errorf("manifest %s: blob %s: only sha256 digests are supported", m.Digest, d.Digest)
		}
		if !slices.ContainsFunc(im.Blobs, func(b v1.Descriptor) bool { return b.Digest == d.Digest }) {
			im.Blobs = append(im.Blobs, d)
		}
	}
	if p != nil {
		im.Platforms = append(im.Platforms, oci.PlatformString(p))
	} else if len(refs) > 0 {
		im.Platforms = append(im.Platforms, "") // filled in by the caller if it reads the config
	}
	im.Platforms = slices.DeleteFunc(im.Platforms, func(s string) bool { return s == "" })
	return nil
}

// remember stores a manifest already fetched, so fetch does not GET it again.
func (r *resolver) remember(repo name.Repository, m Manifest) {
	dr := r.doc(repo.Name() + "@" + m.Digest.String())
	dr.once.Do(func() { dr.m = m })
}

func (r *resolver) doc(key string) *docResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	dr, ok := r.docs[key]
	if !ok {
		dr = &docResult{}
		r.docs[key] = dr
	}
	return dr
}

// fetch reads a manifest by digest, once per repository and digest.
func (r *resolver) fetch(ctx context.Context, repo name.Repository, ropts []remote.Option, d v1.Descriptor) (Manifest, error) {
	dr := r.doc(repo.Name() + "@" + d.Digest.String())
	dr.once.Do(func() {
		if r.opts.Cache != nil {
			if data, ok := r.opts.Cache.Get(d.Digest); ok {
				mt := d.MediaType
				if mt == "" {
					mt, _ = oci.MediaTypeOf(data)
				}
				r.cached.Add(1)
				dr.m = Manifest{Digest: d.Digest, MediaType: mt, Data: data, FromCache: true}
				return
			}
		}
		if err := r.beforeGet(repo); err != nil {
			dr.err = err
			return
		}
		ref := repo.Digest(d.Digest.String())
		desc, err := remote.Get(ref, ropts...)
		r.gets.Add(1)
		if err != nil {
			dr.err = fmt.Errorf("fetching manifest %s from %s: %w", ref, repo.RegistryStr(), err)
			return
		}
		if desc.Digest != d.Digest {
			dr.err = fmt.Errorf("manifest %s from %s: content digest %s", d.Digest, repo.RegistryStr(), desc.Digest)
			return
		}
		dr.m = Manifest{Digest: desc.Digest, MediaType: desc.MediaType, Data: desc.Manifest}
		r.cachePut(desc.Digest, desc.Manifest)
	})
	return dr.m, dr.err
}

func isNotFound(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		if te.StatusCode == http.StatusNotFound {
			return true
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return true
			}
		}
	}
	return false
}
