package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/registry"
)

// Options configure Run.
type Options struct {
	Bundle string // path of the bundle file (required unless Source is set)
	// Source, when set, is read instead of Bundle (ferry sync reads another
	// registry); it is not closed.
	Source Source
	// To is REGISTRY[/PREFIX]: images go to REGISTRY/PREFIX/TARGET:TAG.
	To string

	Jobs   int  // parallel requests for the whole run; 0 = registry.DefaultJobs
	DryRun bool // report what would happen; transfer nothing

	// CreateProjects creates missing Harbor projects (private unless Public).
	CreateProjects bool
	Public         bool

	// Username and Password (--username, --password-stdin) win over every
	// other credential source.
	Username, Password string
	// Logins are the mapping files' target auth for the target registry
	// (mapping.TargetLogins), used after Username and before --auth-file
	// and the docker keychain.
	Logins []registry.Login
	// Auth, when set, is the target's authenticator and wins over all of
	// the above (ferry sync passes each task's own).
	Auth authn.Authenticator
	// Warnings are the caller's (e.g. about the mapping files Logins come
	// from), carried into the summary.
	Warnings []string

	Client   *registry.Client   // required
	Keychain *registry.Keychain // required

	// Strict (--strict): when the bundle was cut against an inventory
	// (export --have) and the target no longer holds everything that
	// inventory claimed, refuse the whole bundle before anything is pushed
	// (ErrHaveMissing). Without it only the images that depend on a stale
	// claim fail (ErrStale); the others are pushed.
	Strict bool

	// TrustKeys (--trust-key): when set, the bundle must be signed by one
	// of them; an unsigned bundle or a bad signature is refused before
	// anything is read or pushed.
	TrustKeys []bundle.TrustedKey

	// VerifyProgress receives the events of the verification pass before
	// the upload (configs; every blob in a dry run), Progress those of the
	// upload pass, which checks the layers as they stream. nil = none.
	VerifyProgress bundle.Progress
	Progress       bundle.Progress
	Logger         *slog.Logger
}

// Image statuses in ImageResult.Status.
const (
	StatusPushed   = "pushed"
	StatusUpToDate = "up to date"
	StatusFailed   = "failed"
	// Dry run only:
	StatusNew       = "new"
	StatusMoveTag   = "would move tag"
	StatusAddTag    = "would add tag"
	StatusWouldFail = "would fail"
)

// Tag statuses in TagResult.Status.
const (
	TagPushed   = "pushed"
	TagMoved    = "moved"
	TagUpToDate = "up to date"
	TagNew      = "new"
	TagMove     = "would move"
	TagNotDone  = "not pushed"
)

// Summary is what Run did (or, in a dry run, would do).
type Summary struct {
	Bundle          string        `json:"bundle"`
	Target          string        `json:"target"`
	DryRun          bool          `json:"dryRun,omitempty"`
	Harbor          bool          `json:"harbor"`
	ProjectsCreated []string      `json:"projectsCreated,omitempty"`
	Images          []ImageResult `json:"images"`
	Pushed          int           `json:"pushed"`
	UpToDate        int           `json:"upToDate"`
	Failed          int           `json:"failed"`
	BlobsUploaded   int           `json:"blobsUploaded"`
	BlobsMounted    int           `json:"blobsMounted"`
	BlobsSkipped    int           `json:"blobsSkipped"`
	BytesUploaded   int64         `json:"bytesUploaded"`
	BytesMounted    int64         `json:"bytesMounted"`
	BytesSkipped    int64         `json:"bytesSkipped"`
	// BytesToUpload (dry run): bytes that would be uploaded after skipping
	// what the target has and mounting what another repository has.
	BytesToUpload int64     `json:"bytesToUpload,omitempty"`
	Seconds       float64   `json:"seconds"`
	Failures      []Failure `json:"failures"`
	// Refusals are Harbor's policy refusals (quota, immutable tags,
	// proxy-cache projects), each once, with the images it stopped.
	Refusals []Refusal `json:"refusals,omitempty"`
	Warnings []string  `json:"warnings,omitempty"`

	refusalErrs []*RefusalError // Refusals as errors, in the same order
}

// RefusalErrors returns the run's Harbor policy refusals as errors (kind,
// registry, project), once each, in the order of Refusals.
func (s *Summary) RefusalErrors() []*RefusalError { return s.refusalErrs }

// ImageResult is one image of the bundle.
type ImageResult struct {
	Repository string      `json:"repository"` // REGISTRY/PREFIX/TARGET
	Source     string      `json:"source,omitempty"`
	Digest     string      `json:"digest"`
	MediaType  string      `json:"mediaType"`
	Tags       []TagResult `json:"tags"`
	Status     string      `json:"status"`
	// Upload is the bytes of this image's blobs the target repository
	// lacked (uploaded or mounted; in a dry run: would be).
	Upload int64  `json:"upload"`
	Error  string `json:"error,omitempty"`
}

// TagResult is one tag of an image.
type TagResult struct {
	Tag    string `json:"tag"`
	Status string `json:"status"`
	// Previous is the digest the tag pointed at before (moved / would move).
	Previous string `json:"previous,omitempty"`
}

// Failure is one failed image and why.
type Failure struct {
	Image string `json:"image"`          // REPOSITORY:TAG[,TAG]
	Blob  string `json:"blob,omitempty"` // the blob or manifest that failed, if one did
	Error string `json:"error"`
	// Refusal is the kind of the Harbor policy refusal that stopped it
	// (see Summary.Refusals), if one did.
	Refusal string `json:"refusal,omitempty"`
	// Kind is FailureStale when a stale inventory claim stopped the
	// image; Missing then lists what the target no longer holds.
	Kind    string       `json:"kind,omitempty"`
	Missing []StaleClaim `json:"missing,omitempty"`
}

// ErrFailed: some images failed; the summary lists each with its reason.
var ErrFailed = errors.New("import failed")

// ErrBundleRefused: the bundle's structure was refused when it was opened,
// before any request to the target (bad input, not a failed transfer).
var ErrBundleRefused = errors.New("refused before any request; nothing was pushed")

// Target is a parsed --to value.
type Target struct {
	Registry string // host[:port]
	Prefix   string // repository path prefix, "" for none
}

func (t Target) String() string {
	if t.Prefix == "" {
		return t.Registry
	}
	return t.Registry + "/" + t.Prefix
}

// Repository returns the full repository path (without registry) for a
// bundle image's target path.
func (t Target) Repository(path string) string {
	if t.Prefix == "" {
		return path
	}
	return t.Prefix + "/" + path
}

// ParseTarget parses REGISTRY[/PREFIX]. A scheme prefix is refused: TLS is
// chosen with --plain-http.
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Target{}, errors.New("empty target: want REGISTRY[/PREFIX]")
	}
	if strings.Contains(s, "://") {
		return Target{}, fmt.Errorf("target %q: give REGISTRY[/PREFIX] without a scheme (use --plain-http for http)", s)
	}
	host, prefix, _ := strings.Cut(strings.TrimRight(s, "/"), "/")
	if _, err := name.NewRegistry(host); err != nil {
		return Target{}, fmt.Errorf("target %q: registry: %w", s, err)
	}
	if strings.Contains(prefix, ":") || strings.Contains(prefix, "@") {
		return Target{}, fmt.Errorf("target %q: the prefix is a repository path; tags come from the bundle", s)
	}
	if prefix != "" {
		if _, err := name.NewRepository(host + "/" + prefix); err != nil {
			return Target{}, fmt.Errorf("target %q: prefix: %w", s, err)
		}
	}
	return Target{Registry: host, Prefix: prefix}, nil
}

// image is one bundle image on its way to the target.
type image struct {
	rec      bundle.Image
	repo     string // full repository path without registry
	digest   v1.Hash
	tree     *bundle.Node
	err      error  // why it failed (nil while fine)
	errBlob  string // digest that caused err, if any
	complete bool   // the manifest is in the target repository already
	current  []string
	upload   int64
	// refusedTags are the tags an immutable rule kept where they were;
	// the image's other tags were pushed.
	refusedTags []string
}

func (im *image) ref() string {
	return im.repo + ":" + strings.Join(im.rec.Tags, ",")
}

func (im *image) fail(blob string, err error) {
	if im.err == nil {
		im.err, im.errBlob = err, blob
	}
}

// Run verifies the bundle and pushes it. The summary is returned whenever
// the bundle could be opened; the error wraps ErrFailed when some images
// failed, and is another error when the run could not start (bad bundle,
// bad credentials, unreachable registry).
func Run(ctx context.Context, o Options) (*Summary, error) {
	start := time.Now()
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	tgt, err := ParseTarget(o.To)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Bundle: o.Bundle, Target: tgt.String(), DryRun: o.DryRun, Images: []ImageResult{}, Failures: []Failure{},
		Warnings: slices.Clone(o.Warnings)}
	defer func() { sum.Seconds = time.Since(start).Seconds() }()
	// The bundle first: Open reads every tar header (bundle.scan), so a
	// structurally hostile or truncated bundle is refused before the
	// credentials are resolved and before any request.
	src, closeSrc, err := o.openSource()
	if err != nil {
		return sum, err
	}
	defer closeSrc()
	host, err := o.targetHost(tgt.Registry)
	if err != nil {
		return sum, err
	}
	images, err := planImages(src, tgt)
	if err != nil {
		return sum, err
	}
	if len(images) == 0 {
		return sum, fmt.Errorf("%s holds no images", src.Name())
	}
	p := &pusher{o: &o, tgt: tgt, src: src, host: host, images: images, sum: sum,
		blobs: map[key]*blobTask{}, manifests: map[key]*onceErr{},
		newProjects: map[string]bool{}, baseFrom: map[key]string{}}
	return sum, p.run(ctx)
}

// setDefaults checks o and fills in the defaults.
func (o *Options) setDefaults() error {
	if o.Client == nil || o.Keychain == nil {
		return errors.New("push: Client and Keychain are required")
	}
	if o.Jobs < 1 {
		o.Jobs = registry.DefaultJobs
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = bundle.ProgressFunc(func(bundle.Event) {})
	}
	return nil
}

// targetHost connects to the target with its credentials, in ferry's
// order: Auth, then --username, then the mapping files' target auth, then
// --auth-file and the docker keychain. It never writes into the keychain,
// which other tasks of a sync share.
func (o *Options) targetHost(host string) (*registry.Host, error) {
	if o.Auth == nil {
		return TargetHost(o.Client, o.Keychain, host, o.Username, o.Password, o.Logins)
	}
	return o.Client.Host(host, o.Auth)
}

// openSource returns Source, or opens Bundle (checking its signature
// against TrustKeys first).
func (o *Options) openSource() (Source, func(), error) {
	if o.Source != nil {
		return o.Source, func() {}, nil
	}
	r, err := bundle.Open(o.Bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%w)", err, ErrBundleRefused)
	}
	if len(o.TrustKeys) > 0 {
		if _, err := r.CheckSignature(o.TrustKeys); err != nil {
			_ = r.Close()
			return nil, nil, err
		}
	}
	return BundleSource{R: r}, func() { _ = r.Close() }, nil
}

// run takes the planned images through the pipeline's steps.
func (p *pusher) run(ctx context.Context) error {
	if len(p.live()) == 0 {
		// Nothing can be pushed: do not touch the registry at all.
		p.summarize()
		return fmt.Errorf("%w: all %d images failed (listed above); nothing was pushed", ErrFailed, len(p.images))
	}
	for _, step := range []func(context.Context) error{p.checkHaveTarget, p.connect, p.checkHave, p.harborProjects, p.checkProxyCache, p.survey, p.missingProjects, p.verifySource} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	if len(p.live()) == 0 {
		p.explainRefusals(ctx)
		p.summarize()
		if err := p.refusalFailure(); err != nil {
			return err
		}
		return p.failedErr(fmt.Errorf("%w: all %d images failed (listed above); nothing was pushed", ErrFailed, len(p.images)))
	}
	if err := p.checkBase(ctx); err != nil {
		return err
	}
	if err := p.transfer(ctx); err != nil {
		return err
	}
	// Every task is done: how much an over-quota project lacks, which
	// rule refused, which images each refusal stopped.
	p.explainRefusals(ctx)
	p.summarize()
	if err := p.refusalFailure(); err != nil {
		return err
	}
	if p.sum.Failed > 0 {
		verb := "failed"
		if p.o.DryRun {
			verb = "would fail"
		}
		return p.failedErr(fmt.Errorf("%w: %d of %d images %s (listed above); the others are complete", ErrFailed, p.sum.Failed, len(p.images), verb))
	}
	return nil
}

// transfer pushes blobs and, per image once its blobs are in, manifests
// and tags (after proving push access); in a dry run it only asks the target what it lacks.
func (p *pusher) transfer(ctx context.Context) error {
	if p.o.DryRun {
		return p.dryRunBlobs(ctx)
	}
	for _, step := range []func(context.Context) error{p.checkPush, p.pushAll} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// planImages lists the source's images with their target repositories and
// trees. An image whose tree cannot be read fails alone.
func planImages(src Source, tgt Target) ([]*image, error) {
	var out []*image
	for _, rec := range src.Images() {
		im := &image{rec: rec, repo: tgt.Repository(rec.Target)}
		out = append(out, im)
		if _, err := name.NewRepository(tgt.Registry + "/" + im.repo); err != nil {
			im.fail("", fmt.Errorf("target repository %q: %w", im.repo, err))
			continue
		}
		for _, tag := range rec.Tags {
			if _, err := name.NewTag(tgt.Registry + "/" + im.repo + ":" + tag); err != nil {
				im.fail("", fmt.Errorf("tag %q: %w", tag, err))
			}
		}
		h, err := bundle.ParseDigest(rec.Digest)
		if err != nil {
			im.fail("", err)
			continue
		}
		im.digest = h
		t, err := src.Tree(h)
		if err != nil {
			im.fail(h.String(), err)
			continue
		}
		im.tree = t
	}
	return out, nil
}

// key is a digest in a repository.
type key struct {
	repo   string
	digest v1.Hash
}

// blobTask ensures one blob in one repository.
type blobTask struct {
	key
	size    int64
	missing bool // not in the bundle (delta): must exist in the target
	// baseFrom is another repository of the target that holds a missing
	// blob (found by checkBase): the blob is mounted from there.
	baseFrom string
	primary  *blobTask // nil for the first repository that wants the digest
	done     chan struct{}
	err      error
	present  bool   // in the repository after the task (HEAD, mount or upload)
	how      string // "skipped", "mounted", "uploaded"
	project  string
}

type onceErr struct {
	once sync.Once
	err  error
}

// pusher holds one run's state.
type pusher struct {
	o      *Options
	tgt    Target
	src    Source
	host   *registry.Host // the target, with its credentials
	images []*image
	sum    *Summary

	scheme string // "https" or "http", from the registry's ping
	harbor *harborAPI

	mu        sync.Mutex
	blobs     map[key]*blobTask
	order     []*blobTask
	manifests map[key]*onceErr
	refusals  map[refusalKey]*RefusalError // Harbor's policy refusals, one per project and kind
	// newProjects are Harbor projects a dry run would create: their
	// repositories are known to be empty.
	newProjects map[string]bool
	// baseFrom: for blobs a delta leaves to its base, a repository of the
	// target that holds them when the image's own repository does not.
	baseFrom map[key]string

	uploaded, mounted, skipped    atomic.Int64
	nUploaded, nMounted, nSkipped atomic.Int64
	bytesToUpload                 int64
}

// base is the id of the bundle a delta source builds on, or "".
func (p *pusher) base() string {
	if d, ok := p.src.(Delta); ok {
		return d.Base()
	}
	return ""
}

// live returns the images that have not failed.
func (p *pusher) live() []*image {
	var out []*image
	for _, im := range p.images {
		if im.err == nil {
			out = append(out, im)
		}
	}
	return out
}

// project is the first path segment of a repository (Harbor's project).
func project(repo string) string {
	p, _, _ := strings.Cut(repo, "/")
	return p
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
