// Package export is ferry's internet side: it resolves mapping files into
// exact digests and writes them into one bundle.
package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/causes"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/mapping"
)

// Options configure Run. Zero values take the defaults documented per field.
type Options struct {
	Files  []string // mapping files (-f), merged in order
	Tasks  []string // --task; empty = every task
	Output string   // -o; required unless DryRun

	Jobs      int // parallel transfers; default registry.DefaultJobs
	KeepGoing bool
	DryRun    bool
	// Platforms overrides the mappings' platform (--platform); nil keeps them.
	Platforms []string
	// Mirrors maps a source registry to the host to fetch from.
	Mirrors map[string]string

	// Username and Password (--username, --password-stdin) win over every
	// other credential source for the tasks' source registries.
	Username, Password string

	Client   *registry.Client   // required
	Keychain *registry.Keychain // required

	// Since (--since) names a previous bundle (or its ferry.json): the new
	// bundle is a delta that leaves out the configs and layers it carried.
	Since string
	// Have (--have) names inventories (ferry inventory) of the registries
	// the bundle is for: it leaves out what they all hold. HaveTrustKeys
	// (--trust-key), when set, must have signed each of them.
	Have          []string
	HaveTrustKeys []bundle.TrustedKey
	// WithReferrers (--with-referrers) also exports cosign signatures,
	// attestations and SBOMs stored under sha256-<digest>.sig/.att/.sbom.
	WithReferrers bool
	// Split (--split) writes volumes OUTPUT.000, .001, ... each smaller
	// than Split bytes; 0 = one file.
	Split int64
	// CacheDir (--cache) keeps fetched manifests and blobs across runs.
	CacheDir string
	// MinQuota (--min-quota) stops before Docker Hub's remaining pull quota
	// would drop below it; 0 = off.
	MinQuota int

	Progress     bundle.Progress
	Logger       *slog.Logger
	FerryVersion string
	// Signer (--sign-key) signs the bundle: ferry.sig inside, OUTPUT.sig
	// beside it. nil = unsigned.
	Signer bundle.Signer
	// Charts are one-off charts (--chart REPO/NAME@VERSION), carried beside
	// the mapping files' charts: entries.
	Charts []*mapping.Chart
	// DockerPlatform (--docker-platform) is the platform the bundle's
	// manifest.json (docker load) takes from multi-platform indexes:
	// os/arch[/variant]; "" = bundle.DefaultDockerPlatform; "none" = no
	// manifest.json.
	DockerPlatform string
	// Deep (--deep) decompresses every layer once written and checks it
	// against its config's diff_id, within these limits; nil = off.
	Deep *bundle.DeepLimits
}

// ImageSummary is one image as resolved (and written, unless dry-run).
type ImageSummary struct {
	Source         string   `json:"source"`
	Target         string   `json:"target"`
	Tags           []string `json:"tags"`
	Digest         string   `json:"digest"`
	UpstreamDigest string   `json:"upstreamDigest,omitempty"`
	MediaType      string   `json:"mediaType"`
	Platforms      []string `json:"platforms,omitempty"`
	Size           int64    `json:"size"`
	Task           string   `json:"task"`
	Kind           string   `json:"kind,omitempty"` // "helm-chart" for a chart
	// Unchanged: with --cache, the image's digest was already cached from an
	// earlier run (nothing about it was fetched again).
	Unchanged bool `json:"unchanged,omitempty"`
}

// FailureSummary is one failed mapping, tag or image.
type FailureSummary struct {
	Task   string `json:"task,omitempty"`
	Source string `json:"source"`
	Error  string `json:"error"`
}

// Summary is what Run did.
type Summary struct {
	Output    string `json:"output,omitempty"`
	Base      string `json:"base,omitempty"`      // id of the bundle this delta builds on
	BaseBlobs int    `json:"baseBlobs,omitempty"` // blobs left to the base (or held per --have)
	// BaseBytes: the bytes of the blobs the bundle's images need that it
	// leaves out (to the base bundle, or because --have says the target
	// holds them); not counted as saved by deduplication.
	BaseBytes int64 `json:"baseBytes,omitempty"`
	// Have: the inventories the bundle was cut against (--have).
	Have      []bundle.HaveRef `json:"have,omitempty"`
	Volumes   []string         `json:"volumes,omitempty"`
	SHA256    string           `json:"sha256,omitempty"`
	DryRun    bool             `json:"dryRun,omitempty"`
	Images    []ImageSummary   `json:"images"`
	Failures  []FailureSummary `json:"failures"`
	Tags      int              `json:"tags"`
	Blobs     int              `json:"blobs"`
	Bytes     int64            `json:"bytes"`      // unique bytes stored
	Logical   int64            `json:"logical"`    // bytes before deduplication
	Seconds   float64          `json:"seconds"`    // wall time
	BundleLen int64            `json:"bundleSize"` // size of the bundle file
	// UpToDate: the output already held exactly this bundle (the same
	// images, tags, blobs and bytes); nothing was written.
	UpToDate bool     `json:"upToDate,omitempty"`
	Warnings []string `json:"warnings,omitempty"`

	ImagesNew       int   `json:"imagesNew"`
	ImagesUnchanged int   `json:"imagesUnchanged"`
	ImagesFailed    int   `json:"imagesFailed"`
	BytesDownloaded int64 `json:"bytesDownloaded"` // blob bytes fetched from registries
	BytesFromCache  int64 `json:"bytesFromCache"`
	// ManifestGETs is what Docker Hub counts as pulls; QuotaRemaining is its
	// last ratelimit-remaining, when a source reported one.
	ManifestGETs   int64 `json:"manifestGets"`
	QuotaRemaining *int  `json:"quotaRemaining,omitempty"`
}

// ErrQuota: the Docker Hub pull quota would drop below --min-quota.
var ErrQuota = errors.New("pull quota low")

// ErrFailed means some images failed; the summary lists them.
var ErrFailed = errors.New("export failed")

// Run loads the mapping files, resolves them and writes the bundle.
func Run(ctx context.Context, o Options) (*Summary, error) {
	start := time.Now()
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	tasks, sum, err := load(&o)
	if err != nil {
		return nil, err
	}
	rn, err := newRunner(&o, tasks, sum)
	if err != nil {
		return sum, err
	}
	if o.Output != "" && !o.DryRun {
		unlock, err := lockOutput(o.Output)
		if err != nil {
			return sum, err
		}
		defer unlock()
	}
	defer rn.finish(sum, start)
	res, err := rn.resolve(ctx, sum)
	if err != nil {
		return sum, err
	}
	plan, err := rn.plan(ctx, sum, res)
	if err != nil {
		return sum, err
	}
	if o.DryRun {
		if len(sum.Failures) > 0 {
			// --dry-run --keep-going lists what resolved; the failures still
			// make the run fail, as they would a real export.
			return sum, fmt.Errorf("%w: %d mapping(s) or tag(s) could not be resolved", ErrFailed, len(sum.Failures))
		}
		return sum, nil
	}
	return sum, rn.write(ctx, sum, plan)
}

// setDefaults checks o and fills in the defaults.
func (o *Options) setDefaults() error {
	if _, _, err := bundle.SourceDateEpoch(); err != nil {
		return err // found before any request, not when the bundle is written
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Jobs < 1 {
		o.Jobs = registry.DefaultJobs
	}
	if o.Client == nil || o.Keychain == nil {
		return errors.New("export: Client and Keychain are required")
	}
	return nil
}

// load reads the mapping files and selects the tasks; the summary starts
// with the files' warnings.
func load(o *Options) ([]*mapping.Task, *Summary, error) {
	cfg := &mapping.Config{} // --chart alone needs no mapping file
	if len(o.Files) > 0 || len(o.Charts) == 0 {
		var err error
		if cfg, err = mapping.Load(o.Files...); err != nil {
			return nil, nil, err
		}
	}
	tasks, err := cfg.Select(o.Tasks)
	if err != nil {
		return nil, nil, err
	}
	o.Charts = append(slices.Clone(cfg.Charts), o.Charts...)
	sum := &Summary{DryRun: o.DryRun, Warnings: cfg.Warnings(), Images: []ImageSummary{}, Failures: []FailureSummary{}}
	return tasks, sum, nil
}

// newRunner sets up the run's source access and cache.
func newRunner(o *Options, tasks []*mapping.Task, sum *Summary) (*runner, error) {
	rn := &runner{Options: o, taskList: tasks, tasks: map[string]*mapping.Task{}, src: &mapping.Sources{Client: o.Client, Keychain: o.Keychain,
		Username: o.Username, Password: o.Password, Mirrors: o.Mirrors}}
	for _, t := range tasks {
		rn.tasks[t.Name] = t
	}
	if err := rn.loadHave(); err != nil {
		return nil, err
	}
	if o.CacheDir != "" {
		c, err := OpenCache(o.CacheDir)
		if err != nil {
			return nil, err
		}
		rn.cache = c
		rn.cache.Clean()
	}
	return rn, nil
}

// finish fills in the summary's totals, however the run ended.
func (o *runner) finish(sum *Summary, start time.Time) {
	sum.Seconds = time.Since(start).Seconds()
	o.countImages(sum)
	sum.BytesDownloaded, sum.BytesFromCache = o.downloaded.Load(), o.fromCache.Load()
	for _, t := range o.taskList {
		if n, ok := o.Client.RateLimitRemaining(t.SourceHost()); ok {
			sum.QuotaRemaining = &n
		}
	}
}

// resolve checks the source credentials, resolves the mappings and decides
// whether the run can go on: the error says why it cannot.
func (o *runner) resolve(ctx context.Context, sum *Summary) (*mapping.Resolution, error) {
	if err := o.src.CheckCredentials(ctx, o.taskList); err != nil {
		return nil, err
	}
	ch, err := o.prepareCharts(ctx, o.Charts, o.taskList)
	if err != nil {
		return nil, err
	}
	o.charts = ch
	res, err := mapping.Resolve(ctx, append(slices.Clone(o.taskList), ch.imageTasks...), o.resolveOptions())
	if err != nil {
		return nil, err
	}
	res.Images = append(ch.oci, res.Images...)
	// The warnings go into the summary only: the command prints them
	// (logging them too printed each one twice).
	sum.Warnings = append(sum.Warnings, ch.warnUncarried(res.Images)...)
	sum.ManifestGETs = res.ManifestGETs
	for _, f := range res.Failures {
		sum.Failures = append(sum.Failures, FailureSummary{Task: f.Task, Source: f.Source, Error: f.Err.Error()})
	}
	sum.ImagesFailed = len(res.Failures)
	switch {
	case o.quotaHit.Load():
		return nil, fmt.Errorf("%w: Docker Hub pull quota reached --min-quota %d; %d images resolved, %d not; nothing was written (rerun later with the same --cache)", ErrQuota, o.MinQuota, len(res.Images), len(res.Failures))
	case len(res.Images)+ch.count() == 0 && len(res.Failures) > 0:
		return nil, causes.New(ErrFailed, fmt.Sprintf("%v: nothing could be resolved (failed: %d)", ErrFailed, len(res.Failures)), failureErrs(res.Failures))
	case len(res.Images)+ch.count() == 0:
		return nil, fmt.Errorf("%w: the mappings select no image", ErrFailed)
	case len(res.Failures) > 0 && !o.KeepGoing:
		return nil, fmt.Errorf("%w: %d mapping(s) or tag(s) could not be resolved; nothing was written (use --keep-going to export the rest)", ErrFailed, len(res.Failures))
	}
	return res, nil
}

// plan turns the resolution into the bundle's plan (a delta of --since
// when asked) and summarizes it.
func (o *runner) plan(ctx context.Context, sum *Summary, res *mapping.Resolution) (*bundle.Plan, error) {
	plan, err := buildPlan(ctx, res.Images, o)
	if err != nil {
		return nil, err
	}
	o.charts.addToPlan(plan)
	if o.Since != "" {
		if err := makeDelta(plan, o.Since); err != nil {
			summarize(sum, plan)
			return nil, err
		}
		sum.Base = plan.Base
		sum.BaseBlobs = len(plan.BaseBlobs)
	}
	if len(o.have) > 0 {
		if err := o.applyHave(plan); err != nil {
			summarize(sum, plan)
			return nil, err
		}
		sum.Have, sum.BaseBlobs = plan.Have, len(plan.BaseBlobs)
	}
	summarize(sum, plan)
	return plan, nil
}

// write writes the bundle and summarizes what it holds. An output that
// already is the bundle the plan makes is left as it is (see upToDate).
func (o *runner) write(ctx context.Context, sum *Summary, plan *bundle.Plan) error {
	opts := []bundle.WriteOption{bundle.WithJobs(o.Jobs), bundle.WithKeepGoing(o.KeepGoing),
		bundle.WithProgress(o.Progress), bundle.WithLogger(o.Logger),
		bundle.WithFerryVersion(o.FerryVersion), bundle.WithSplit(o.Split),
		bundle.WithSigner(o.Signer)}
	switch o.DockerPlatform {
	case "":
	case "none":
		opts = append(opts, bundle.WithDockerPlatform(""))
	default:
		opts = append(opts, bundle.WithDockerPlatform(o.DockerPlatform))
	}
	if o.Deep != nil {
		opts = append(opts, bundle.WithDeepCheck(*o.Deep))
	}
	if len(sum.Failures) == 0 {
		if wr, ok := o.upToDate(ctx, plan, opts); ok {
			sum.UpToDate = true
			summarizeWritten(sum, plan, wr)
			return o.deepCheckExisting(ctx)
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if o.cache != nil {
		opts = append(opts, bundle.WithKeepPartial(func(files []string) { o.cache.notePartial(o.Output, files) }))
	}
	wr, werr := bundle.Write(ctx, o.Output, plan, opts...)
	if werr == nil {
		o.cache.recordBundle(wr, nil)
		o.cache.cleanPartials(o.Output)
		removeStaleTemps(o.Output)
	}
	for _, f := range bundle.Failures(werr) {
		sum.Failures = append(sum.Failures, FailureSummary{Source: f.Image, Error: f.Err.Error()})
		sum.ImagesFailed++
	}
	if wr != nil && wr.Record != nil {
		summarizeWritten(sum, plan, wr)
	}
	if werr != nil {
		if len(bundle.Failures(werr)) > 0 {
			return fmt.Errorf("%w: %w", ErrFailed, werr)
		}
		return werr
	}
	if len(sum.Failures) > 0 {
		return fmt.Errorf("%w: %d failure(s); the bundle holds the rest", ErrFailed, len(sum.Failures))
	}
	return nil
}

// deepCheckExisting runs --deep's check on an output that was up to date
// (and so not written now, perhaps without --deep before): its layers are
// read and decompressed once more.
func (o *runner) deepCheckExisting(ctx context.Context) error {
	if o.Deep == nil {
		return nil
	}
	r, err := bundle.Open(o.Output)
	if err != nil {
		return err
	}
	defer r.Close()
	rep, err := bundle.VerifyDeep(ctx, r, o.Jobs, *o.Deep, nil)
	if err != nil && rep != nil && len(rep.Problems) > 0 {
		msgs := make([]string, len(rep.Problems))
		for i, p := range rep.Problems {
			msgs[i] = p.String()
		}
		return fmt.Errorf("%w: %s is up to date, but --deep finds: %s", ErrFailed, o.Output, strings.Join(msgs, "; "))
	}
	return err
}

// summarizeWritten summarizes the images the bundle holds (with
// --keep-going, some of the plan's may be missing).
func summarizeWritten(sum *Summary, plan *bundle.Plan, wr *bundle.Result) {
	sum.Output, sum.SHA256, sum.BundleLen = wr.Path, wr.SHA256, wr.Size
	if len(wr.Volumes) > 1 {
		sum.Volumes = wr.Volumes
	}
	written := map[string]bool{}
	for _, ri := range wr.Record.Images {
		written[ri.Target+"@"+ri.Digest] = true
	}
	kept := &bundle.Plan{Blobs: plan.Blobs, BaseBlobs: plan.BaseBlobs}
	for _, im := range plan.Images {
		if written[im.Target+"@"+im.Digest] {
			kept.Images = append(kept.Images, im)
		}
	}
	summarize(sum, kept)
	sum.Blobs, sum.Bytes = len(wr.Record.Blobs), wr.BlobBytes
}

// resolveOptions are the options every mapping.Resolve of the run uses.
func (o *runner) resolveOptions() mapping.Options {
	return mapping.Options{
		Sources:       o.src,
		Platforms:     o.Platforms,
		WithReferrers: o.WithReferrers,
		Cache:         manifestCache(o.cache),
		BeforeGet:     o.beforeGet,
		Jobs:          o.Jobs,
		Logger:        o.Logger,
	}
}

// buildPlan merges resolved images into bundle images (one per target and
// digest, with all its tags), fetches configs (small; they name the
// platform) and lists every blob once with a way to fetch it.
func buildPlan(ctx context.Context, images []*mapping.Image, o *runner) (*bundle.Plan, error) {
	pb := &planBuilder{plan: &bundle.Plan{}, byKey: map[imageKey]int{}, blobIdx: map[v1.Hash]int{}, configs: map[v1.Hash]bool{}}
	for _, im := range images {
		pb.addImage(im, o)
	}
	if o.DryRun {
		pb.planConfigs()
	} else if err := pb.fetchConfigs(ctx, o); err != nil {
		return nil, err
	}
	for i := range pb.plan.Images {
		sort.Strings(pb.plan.Images[i].Tags)
	}
	return pb.plan, nil
}

// planBuilder accumulates a bundle plan: each image once per target and
// digest, each blob once.
type planBuilder struct {
	plan     *bundle.Plan
	byKey    map[imageKey]int // → index in plan.Images
	blobIdx  map[v1.Hash]int  // → index in plan.Blobs
	configs  map[v1.Hash]bool // configs already planned for fetching
	configOf []pendingConfig
}

type imageKey struct{ target, digest string }

// pendingConfig is a config to fetch for plan.Images[img].
type pendingConfig struct {
	img  int
	desc v1.Descriptor
	from *mapping.Image
}

// addBlob plans b once. A layer shared by a Docker-typed and an OCI-typed
// image records one media type whatever order the images came in, so that
// equal selections give equal bundles.
func (pb *planBuilder) addBlob(b bundle.PlannedBlob) {
	i, ok := pb.blobIdx[b.Digest]
	if !ok {
		pb.blobIdx[b.Digest] = len(pb.plan.Blobs)
		pb.plan.Blobs = append(pb.plan.Blobs, b)
		return
	}
	if b.MediaType < pb.plan.Blobs[i].MediaType {
		pb.plan.Blobs[i].MediaType = b.MediaType
	}
}

// addImage merges im into the plan: a new tag of an image already planned
// at the same target, or a new image with its manifests and layers (configs
// are noted for fetching).
func (pb *planBuilder) addImage(im *mapping.Image, o *runner) {
	k := imageKey{im.Target, im.Root.Digest.String()}
	if im.Root.FromCache {
		o.unchanged.Store(im.Root.Digest.String(), true)
	}
	if i, ok := pb.byKey[k]; ok {
		if im.Tag != "" && !slices.Contains(pb.plan.Images[i].Tags, im.Tag) {
			pb.plan.Images[i].Tags = append(pb.plan.Images[i].Tags, im.Tag)
		}
		return
	}
	// A digest pin without a tag still needs a name in index.json and a tag
	// to push under; use the digest's hex, as crane does.
	tags := []string{oci.DigestTag(im.Root.Digest)}
	if im.Tag != "" {
		tags = []string{im.Tag}
	}
	pi := bundle.PlannedImage{Image: bundle.Image{
		Source: im.Source, Target: im.Target, Tags: tags, Digest: im.Root.Digest.String(),
		MediaType: string(im.Root.MediaType), Platforms: im.Platforms, Task: im.Task,
	}}
	if im.UpstreamDigest.Hex != "" {
		pi.UpstreamDigest = im.UpstreamDigest.String()
	}
	origin := im.Repository.RegistryStr()
	for _, m := range append([]mapping.Manifest{im.Root}, im.Children...) {
		pb.addBlob(bundle.PlannedBlob{Digest: m.Digest, Size: int64(len(m.Data)), MediaType: m.MediaType, Kind: bundle.KindManifest, Data: m.Data, Origin: origin})
		pi.Blobs = append(pi.Blobs, m.Digest)
		refs, err := oci.Refs(m.MediaType, m.Data)
		if err != nil || oci.KindOf(m.MediaType) != oci.KindManifest || len(refs) == 0 {
			continue
		}
		if !pb.configs[refs[0].Digest] {
			pb.configs[refs[0].Digest] = true
			pb.configOf = append(pb.configOf, pendingConfig{len(pb.plan.Images), refs[0], im})
		}
	}
	for _, d := range im.Blobs {
		pi.Blobs = append(pi.Blobs, d.Digest)
		if pb.configs[d.Digest] {
			continue
		}
		pb.addBlob(bundle.PlannedBlob{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType, Kind: bundle.KindLayer, Origin: origin, Fetch: fetcher(o, im, d, false), Verified: true})
	}
	pb.byKey[k] = len(pb.plan.Images)
	pb.plan.Images = append(pb.plan.Images, pi)
}

// planConfigs lists the configs without fetching them (a dry run transfers
// no blob).
func (pb *planBuilder) planConfigs() {
	for _, c := range pb.configOf {
		if _, ok := pb.blobIdx[c.desc.Digest]; !ok {
			pb.blobIdx[c.desc.Digest] = len(pb.plan.Blobs)
			pb.plan.Blobs = append(pb.plan.Blobs, bundle.PlannedBlob{Digest: c.desc.Digest, Size: c.desc.Size, MediaType: c.desc.MediaType, Kind: bundle.KindConfig})
		}
	}
}

// fetchConfigs fetches the configs now (small; in parallel, verified) so
// they are written with the manifests and tell single-platform images'
// platform.
func (pb *planBuilder) fetchConfigs(ctx context.Context, o *runner) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Jobs)
	for _, c := range pb.configOf {
		g.Go(func() error {
			data, err := fetchSmall(gctx, o, c.from, c.desc)
			if err != nil {
				return fmt.Errorf("image %s: %w", c.from.Source, err)
			}
			mu.Lock()
			defer mu.Unlock()
			b := bundle.PlannedBlob{Digest: c.desc.Digest, Size: c.desc.Size, MediaType: c.desc.MediaType, Kind: bundle.KindConfig, Data: data, Origin: c.from.Repository.RegistryStr()}
			if i, ok := pb.blobIdx[b.Digest]; ok {
				pb.plan.Blobs[i] = b
			} else {
				pb.blobIdx[b.Digest] = len(pb.plan.Blobs)
				pb.plan.Blobs = append(pb.plan.Blobs, b)
			}
			if pi := &pb.plan.Images[c.img]; len(pi.Platforms) == 0 {
				if p := configPlatform(data); p != "" {
					pi.Platforms = []string{p}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

const maxConfigSize = 8 << 20

func fetchSmall(ctx context.Context, o *runner, im *mapping.Image, d v1.Descriptor) ([]byte, error) {
	if d.Size > maxConfigSize {
		return nil, fmt.Errorf("config %s is %d bytes, more than %d", d.Digest, d.Size, maxConfigSize)
	}
	var buf memSink
	if err := fetcher(o, im, d, true)(ctx, &buf); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	if int64(len(data)) != d.Size {
		return nil, fmt.Errorf("blob %s from %s: %d bytes, descriptor says %d", d.Digest, im.Repository.RegistryStr(), len(data), d.Size)
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(data)); h != d.Digest {
		return nil, fmt.Errorf("blob %s from %s: %w: content is %s", d.Digest, im.Repository.RegistryStr(), bundle.ErrDigestMismatch, h)
	}
	return data, nil
}

// runner is one export run: the options and the tasks by name.
type runner struct {
	*Options
	taskList []*mapping.Task
	tasks    map[string]*mapping.Task
	src      *mapping.Sources // source credentials and connections
	charts   *charts          // the run's Helm charts (classic ones fetched, OCI ones resolved)

	cache      *Cache
	downloaded atomic.Int64
	fromCache  atomic.Int64
	quotaHit   atomic.Bool
	unchanged  sync.Map // root digests already cached by an earlier run

	have      []*inventory.Inventory // --have, in the order given
	havePaths []string
}

// countImages fills the new/unchanged counts from the summary's images.
func (o *runner) countImages(sum *Summary) {
	sum.ImagesNew, sum.ImagesUnchanged = 0, 0
	for i := range sum.Images {
		_, ok := o.unchanged.Load(sum.Images[i].Digest)
		sum.Images[i].Unchanged = ok
		if ok {
			sum.ImagesUnchanged++
		} else {
			sum.ImagesNew++
		}
	}
}

// beforeGet stops manifest GETs once the pull quota is at --min-quota.
func (o *runner) beforeGet(host string) error {
	if o.MinQuota <= 0 {
		return nil
	}
	if o.quotaHit.Load() {
		return ErrQuota
	}
	if n, ok := o.Client.RateLimitRemaining(host); ok && n <= o.MinQuota {
		o.quotaHit.Store(true)
		return fmt.Errorf("%w: %s reports %d pulls left, --min-quota is %d; stopping (the cache keeps what was fetched)", ErrQuota, host, n, o.MinQuota)
	}
	return nil
}

// makeDelta turns plan into a delta of the bundle since names (a bundle or
// its ferry.json): images the previous bundle already carried under the same
// target, digest and tags are left out, and so are configs and layers it
// carried (itself or through its own base), recorded as base blobs that the
// target must already hold. The manifests of the images kept are always
// carried: they are small, and a new tag of an unchanged image needs its
// manifest to be written.
func makeDelta(plan *bundle.Plan, since string) error {
	prev, err := bundle.ReadRecord(since)
	if err != nil {
		return fmt.Errorf("--since %s: %w", since, err)
	}
	held := map[string]bool{}
	for _, b := range prev.Blobs {
		held[b.Digest] = true
	}
	for _, b := range prev.BaseBlobs {
		held[b.Digest] = true
	}
	had := map[string]map[string]bool{} // target@digest → tags
	chain := append([]bundle.BaseImage(nil), prev.BaseImages...)
	for _, im := range prev.Images {
		chain = append(chain, bundle.BaseImage{Target: im.Target, Digest: im.Digest, Tags: im.Tags})
	}
	for _, im := range chain {
		k := im.Target + "@" + im.Digest
		if had[k] == nil {
			had[k] = map[string]bool{}
		}
		for _, t := range im.Tags {
			had[k][t] = true
		}
	}
	leaveOut(plan, held, had)
	plan.Base = prev.ID
	plan.BaseImages = chain
	if len(plan.Images) == 0 {
		return fmt.Errorf("%w since bundle %s (%s)", ErrNothingNew, prev.ID, since)
	}
	return nil
}

// ErrNothingNew: a delta would hold nothing; no bundle is written.
var ErrNothingNew = errors.New("nothing new")

// manifestCache adapts a possibly nil *Cache to mapping.ManifestCache.
func manifestCache(c *Cache) mapping.ManifestCache {
	if c == nil {
		return nil
	}
	return c
}

func configPlatform(data []byte) string {
	cf, err := v1.ParseConfigFile(bytes.NewReader(data))
	if err != nil || cf.OS == "" {
		return ""
	}
	p := cf.Platform()
	return oci.PlatformString(p)
}

// summarize fills the summary's images and totals from plan. An image's
// size counts every blob it needs, those a delta leaves to its base too;
// Blobs and Bytes count what the bundle stores.
func summarize(sum *Summary, plan *bundle.Plan) {
	sizes := map[v1.Hash]int64{}
	stored := map[v1.Hash]bool{}
	for _, b := range plan.Blobs {
		sizes[b.Digest] = b.Size
		stored[b.Digest] = true
	}
	for _, b := range plan.BaseBlobs {
		if h, err := bundle.ParseDigest(b.Digest); err == nil {
			sizes[h] = b.Size
		}
	}
	sum.Images = sum.Images[:0]
	sum.Tags, sum.Logical = 0, 0
	used := map[v1.Hash]bool{}
	for _, pi := range plan.Images {
		var size int64
		seen := map[v1.Hash]bool{}
		for _, h := range pi.Blobs {
			if !seen[h] {
				seen[h] = true
				size += sizes[h]
			}
			used[h] = true
		}
		sum.Images = append(sum.Images, ImageSummary{
			Source: pi.Source, Target: pi.Target, Tags: pi.Tags, Digest: pi.Digest,
			UpstreamDigest: pi.UpstreamDigest, MediaType: pi.MediaType, Platforms: pi.Platforms,
			Size: size, Task: pi.Task, Kind: pi.Kind,
		})
		sum.Tags += len(pi.Tags)
		sum.Logical += size
	}
	sum.Blobs, sum.Bytes, sum.BaseBytes = 0, 0, 0
	for h := range used {
		if stored[h] {
			sum.Blobs++
			sum.Bytes += sizes[h]
		} else {
			sum.BaseBytes += sizes[h]
		}
	}
}

func failureErrs(fs []mapping.Failure) []error {
	out := make([]error, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Err)
	}
	return out
}
