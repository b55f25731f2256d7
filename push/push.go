package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
)

// DefaultJobs is the number of parallel requests when Options.Jobs is 0.
const DefaultJobs = 4

// Options configure Run.
type Options struct {
	Bundle string // path of the bundle file (required unless Source is set)
	// Source, when set, is read instead of Bundle (ferry sync reads another
	// registry); it is not closed.
	Source Source
	// To is REGISTRY[/PREFIX]: images go to REGISTRY/PREFIX/TARGET:TAG.
	To string

	Jobs   int  // parallel requests for the whole run; 0 = DefaultJobs
	DryRun bool // report what would happen; transfer nothing

	// CreateProjects creates missing Harbor projects (private unless Public).
	CreateProjects bool
	Public         bool

	// Files are mapping files whose target `auth` is used for the target
	// registry when Username is empty (tasks whose target registry is the
	// --to host, or is absent or a placeholder).
	Files []string
	// Username and Password win over every other credential source.
	Username, Password string
	// Auth, when set, is the target's authenticator and wins over all of
	// the above (ferry sync passes each task's own).
	Auth authn.Authenticator

	Client   *registry.Client   // required
	Keychain *registry.Keychain // required

	// TrustKeys (--trust-key): when set, the bundle must be signed by one
	// of them; an unsigned bundle or a bad signature is refused before
	// anything is read or pushed.
	TrustKeys []bundle.TrustedKey

	// VerifyProgress receives the events of the verification pass,
	// Progress those of the upload pass. nil = none.
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
	Warnings      []string  `json:"warnings,omitempty"`
}

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
}

// ErrFailed: some images failed; the summary lists each with its reason.
var ErrFailed = errors.New("import failed")

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
	if o.Client == nil || o.Keychain == nil {
		return nil, errors.New("push: Client and Keychain are required")
	}
	if o.Jobs < 1 {
		o.Jobs = DefaultJobs
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = bundle.ProgressFunc(func(bundle.Event) {})
	}
	tgt, err := ParseTarget(o.To)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Bundle: o.Bundle, Target: tgt.String(), DryRun: o.DryRun, Images: []ImageResult{}, Failures: []Failure{}}

	auth, warnings, err := credentials(&o, tgt.Registry)
	sum.Warnings = append(sum.Warnings, warnings...)
	if err != nil {
		return sum, err
	}

	src := o.Source
	if src == nil {
		r, err := bundle.Open(o.Bundle)
		if err != nil {
			return sum, err
		}
		defer r.Close()
		if len(o.TrustKeys) > 0 {
			if _, err := r.CheckSignature(o.TrustKeys); err != nil {
				return sum, err
			}
		}
		src = BundleSource{R: r}
	}

	images, err := planImages(src, tgt)
	if err != nil {
		return sum, err
	}
	if len(images) == 0 {
		return sum, fmt.Errorf("%s holds no images", src.Name())
	}

	p := &pusher{o: &o, tgt: tgt, src: src, auth: auth, images: images, sum: sum,
		transports: map[string]*lazyTransport{}, blobs: map[key]*blobTask{}, manifests: map[key]*onceErr{},
		newProjects: map[string]bool{}, baseFrom: map[key]string{}}
	if len(p.live()) == 0 {
		// Nothing can be pushed: do not touch the registry at all.
		p.summarize()
		sum.Seconds = time.Since(start).Seconds()
		return sum, fmt.Errorf("%w: all %d images failed (listed above); nothing was pushed", ErrFailed, len(images))
	}
	if err := p.connect(ctx, images); err != nil {
		sum.Seconds = time.Since(start).Seconds()
		return sum, err
	}
	if err := p.harborProjects(ctx); err != nil {
		sum.Seconds = time.Since(start).Seconds()
		return sum, err
	}
	if err := p.survey(ctx); err != nil {
		return sum, err
	}
	// Check every byte that may be uploaded before anything moves: the
	// blobs of the images the target does not hold complete yet (a second
	// import reads nothing). A bad blob stops the images that need it and
	// nothing else. (A registry source is verified as its blobs stream.)
	if err := p.verifySource(ctx); err != nil {
		return sum, err
	}
	if len(p.live()) == 0 {
		p.summarize()
		sum.Seconds = time.Since(start).Seconds()
		return sum, fmt.Errorf("%w: all %d images failed (listed above); nothing was pushed", ErrFailed, len(images))
	}
	if err := p.checkBase(ctx); err != nil {
		sum.Seconds = time.Since(start).Seconds()
		return sum, err
	}
	if !o.DryRun {
		if err := p.checkPush(ctx); err != nil {
			sum.Seconds = time.Since(start).Seconds()
			return sum, err
		}
	}
	if o.DryRun {
		if err := p.dryRunBlobs(ctx); err != nil {
			return sum, err
		}
	} else {
		if err := p.pushBlobs(ctx); err != nil {
			return sum, err
		}
		if err := p.pushManifests(ctx); err != nil {
			return sum, err
		}
	}
	p.summarize()
	sum.Seconds = time.Since(start).Seconds()
	if sum.Failed > 0 {
		verb := "failed"
		if o.DryRun {
			verb = "would fail"
		}
		return sum, fmt.Errorf("%w: %d of %d images %s (listed above); the others are complete", ErrFailed, sum.Failed, len(images), verb)
	}
	return sum, nil
}

// credentials picks the target's authenticator in ferry's order: flags,
// the mapping files' target auth, --auth-file, docker keychain. It never
// writes into the keychain, which other tasks of a sync share.
func credentials(o *Options, host string) (authn.Authenticator, []string, error) {
	var warnings []string
	if o.Auth != nil {
		return o.Auth, nil, nil
	}
	if o.Username != "" {
		return authn.FromConfig(authn.AuthConfig{Username: o.Username, Password: o.Password}), nil, nil
	}
	if len(o.Files) > 0 {
		cfg, err := mapping.Load(o.Files...)
		if err != nil {
			return nil, nil, err
		}
		warnings = append(warnings, cfg.Warnings()...)
		want := mapping.CanonicalRegistry(host)
		var chosen *mapping.Auth
		for _, t := range cfg.Tasks {
			if t.Target.Auth == nil {
				continue
			}
			th, _, _ := strings.Cut(mapping.CanonicalRegistry(t.Target.Registry), "/")
			if t.Target.Registry != "" && !t.Target.HasPlaceholder("registry") && th != want {
				continue
			}
			if chosen == nil {
				chosen = t.Target.Auth
			} else if chosen.Username != t.Target.Auth.Username || chosen.Password != t.Target.Auth.Password {
				warnings = append(warnings, fmt.Sprintf("task %q: another target auth for %s was found first; using that one", t.Name, host))
			}
		}
		if chosen != nil {
			if chosen.Anonymous {
				return authn.Anonymous, warnings, nil
			}
			return authn.FromConfig(authn.AuthConfig{Username: chosen.Username, Password: chosen.Password}), warnings, nil
		}
	}
	a, err := o.Keychain.Resolve(host)
	return a, warnings, err
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
	auth   authn.Authenticator
	images []*image
	sum    *Summary

	scheme string // "https" or "http", from the registry's ping
	harbor *harborAPI

	mu         sync.Mutex
	transports map[string]*lazyTransport
	blobs      map[key]*blobTask
	order      []*blobTask
	manifests  map[key]*onceErr
	quota      map[string]*QuotaError
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

// survey asks the target, per image, whether the manifest is there already
// (then its blobs are too: registries check that on manifest PUT) and where
// each tag points.
func (p *pusher) survey(ctx context.Context) error {
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, im := range p.live() {
		im.current = make([]string, len(im.rec.Tags))
		if p.newProjects[project(im.repo)] {
			continue
		}
		g.Go(func() error {
			rc, err := p.repo(ctx, im.repo)
			if err != nil {
				im.fail("", err)
				return nil
			}
			for i, tag := range im.rec.Tags {
				d, ok, err := rc.headManifest(ctx, tag)
				if err != nil {
					im.fail("", p.explainRead(im.repo, fmt.Errorf("checking tag %s:%s: %w", im.repo, tag, err)))
					return nil
				}
				if ok {
					im.current[i] = d
				}
			}
			for _, d := range im.current {
				if d == im.digest.String() {
					im.complete = true
				}
			}
			if !im.complete {
				_, ok, err := rc.headManifest(ctx, im.digest.String())
				if err != nil {
					im.fail("", p.explainRead(im.repo, fmt.Errorf("checking %s@%s: %w", im.repo, im.digest, err)))
					return nil
				}
				im.complete = ok
			}
			return ctx.Err()
		})
	}
	return g.Wait()
}

// verifySource hashes the source's blobs that the incomplete images need,
// and fails the images that need a bad one.
func (p *pusher) verifySource(ctx context.Context) error {
	v, ok := p.src.(Verifier)
	if !ok {
		return nil
	}
	only := map[v1.Hash]bool{}
	for _, im := range p.live() {
		if im.complete || im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if !n.Missing {
				only[n.Digest] = true
			}
			return nil
		})
	}
	rep, err := v.Verify(ctx, only, p.o.Jobs, p.o.VerifyProgress)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, bundle.ErrVerify) {
		return err
	}
	if rep == nil {
		return nil
	}
	for _, im := range p.live() {
		if im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if e, bad := rep.Bad[n.Digest]; bad {
				im.fail(n.Digest.String(), fmt.Errorf("blob %s in the bundle is damaged (%w); not pushed: compare the bundle with its .sha256 file and copy it again", n.Digest, e))
			}
			return nil
		})
	}
	return nil
}

// ErrBaseMissing: a delta bundle's base has not been imported into the target.
var ErrBaseMissing = errors.New("the base bundle is not in the target")

// checkBase makes sure, before anything is pushed, that the target holds
// every blob a delta bundle leaves to its base: in the image's own
// repository, or in another repository of this import (mounted from
// there). If not, the import stops, naming the bundle to import first.
func (p *pusher) checkBase(ctx context.Context) error {
	base := p.base()
	if base == "" {
		return nil
	}
	var repos []string
	seen := map[string]bool{}
	need := map[key]bool{}
	for _, im := range p.live() {
		if !seen[im.repo] {
			seen[im.repo] = true
			repos = append(repos, im.repo)
		}
		if im.complete || im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if n.Missing {
				need[key{im.repo, n.Digest}] = true
			}
			return nil
		})
	}
	if len(need) == 0 {
		return nil
	}
	var mu sync.Mutex
	var missing []key
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.o.Jobs)
	for k := range need {
		g.Go(func() error {
			for i, repo := range append([]string{k.repo}, repos...) {
				if i > 0 && repo == k.repo {
					continue // its own repository was asked first
				}
				rc, err := p.repo(gctx, repo)
				if err != nil {
					return err
				}
				ok, err := rc.headBlob(gctx, k.digest)
				if err != nil {
					return fmt.Errorf("checking %s in %s: %w", k.digest, repo, err)
				}
				if ok {
					if repo != k.repo {
						mu.Lock()
						p.baseFrom[k] = repo
						mu.Unlock()
					}
					return nil
				}
			}
			mu.Lock()
			missing = append(missing, k)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(missing) > 0 {
		k := missing[0]
		return fmt.Errorf("%w: %s is a delta of bundle %s, and %s lacks %d blob(s) it leaves to that bundle (e.g. %s for %s): import bundle %s first; nothing was pushed",
			ErrBaseMissing, p.o.Bundle, base, p.tgt.Registry, len(missing), k.digest, k.repo, base)
	}
	return nil
}

// plan lists the blob tasks of the live, incomplete images: the first
// repository that wants a digest owns its upload (primary); the others wait
// for it and mount from there. Primaries come first in the order, so a
// secondary never waits for a task that has not started.
func (p *pusher) plan() {
	var secondaries []*blobTask
	byDigest := map[v1.Hash]*blobTask{}
	for _, im := range p.live() {
		if im.complete {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if n.Data != nil || oci.KindOf(n.MediaType) != oci.KindUnknown {
				return nil // manifests go in the second pass
			}
			k := key{im.repo, n.Digest}
			if _, ok := p.blobs[k]; ok {
				return nil
			}
			t := &blobTask{key: k, size: n.Size, missing: n.Missing, done: make(chan struct{}), project: project(im.repo), baseFrom: p.baseFrom[k]}
			p.blobs[k] = t
			if first, ok := byDigest[n.Digest]; ok && !n.Missing {
				t.primary = first
				secondaries = append(secondaries, t)
			} else {
				byDigest[n.Digest] = t
				p.order = append(p.order, t)
			}
			return nil
		})
	}
	p.order = append(p.order, secondaries...)
}

// blobsOf returns the blob tasks an image needs.
func (p *pusher) blobsOf(im *image) []*blobTask {
	var out []*blobTask
	if im.tree == nil {
		return nil
	}
	_ = im.tree.Walk(func(n *bundle.Node) error {
		if t, ok := p.blobs[key{im.repo, n.Digest}]; ok {
			out = append(out, t)
		}
		return nil
	})
	return out
}

// pushBlobs runs every blob task under the one jobs limit.
func (p *pusher) pushBlobs(ctx context.Context) error {
	p.plan()
	var total int64
	for _, t := range p.order {
		if t.primary == nil {
			total += t.size
		}
	}
	p.o.Progress.Event(bundle.Event{Kind: bundle.EventPlanned, Total: total})
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, t := range p.order {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			defer close(t.done)
			t.err = p.ensureBlob(ctx, t)
			if t.err != nil && t.primary == nil {
				p.o.Progress.Event(bundle.Event{Kind: bundle.EventBlobFailed, Digest: t.digest, Err: t.err})
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	// Every blob task is done: say how much each over-quota project lacks
	// before the errors are wrapped into the images' failures.
	for proj, q := range p.quota {
		q.Needed = p.stillNeeded(proj)
	}
	for _, im := range p.live() {
		for _, t := range p.blobsOf(im) {
			if t.how == "uploaded" || t.how == "mounted" {
				im.upload += t.size
			}
			if t.err != nil {
				im.fail(t.digest.String(), fmt.Errorf("blob %s: %w", t.digest, t.err))
			}
		}
	}
	return nil
}

// ensureBlob makes t's blob present in t's repository: HEAD (skip), else
// mount from the repository that got it first, else upload from the bundle.
func (p *pusher) ensureBlob(ctx context.Context, t *blobTask) error {
	rc, err := p.repo(ctx, t.repo)
	if err != nil {
		return err
	}
	ok, err := rc.headBlob(ctx, t.digest)
	if err != nil {
		return err
	}
	if ok {
		t.present, t.how = true, "skipped"
		p.skipped.Add(t.size)
		p.nSkipped.Add(1)
		p.progressDone(t)
		return nil
	}
	var from string
	if t.missing {
		if t.baseFrom == "" {
			return fmt.Errorf("not in this delta bundle and not in %s/%s: import bundle %s (its base) first", p.tgt.Registry, t.repo, p.base())
		}
		from = t.baseFrom
	}
	if t.primary != nil {
		select {
		case <-t.primary.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if t.primary.present {
			from = t.primary.repo
		}
	}
	if from != "" {
		mrc, err := p.mountClient(ctx, t.repo, from)
		if err == nil {
			mounted, loc, err := mrc.mount(ctx, t.digest, from)
			switch {
			case err == nil && mounted:
				t.present, t.how = true, "mounted"
				p.mounted.Add(t.size)
				p.nMounted.Add(1)
				return nil
			case err == nil && loc != "":
				// 202: the registry would not mount but opened an upload.
				return p.upload(ctx, rc, t, loc)
			case err != nil && isQuota(err):
				return p.quotaErr(t.project, err)
			}
			p.o.Logger.Info("mount refused; uploading", "blob", t.digest.String(), "from", from, "to", t.repo, "error", errString(err))
		}
	}
	loc, err := rc.startUpload(ctx)
	if err != nil {
		if isQuota(err) {
			return p.quotaErr(t.project, err)
		}
		return err
	}
	return p.upload(ctx, rc, t, loc)
}

func (p *pusher) upload(ctx context.Context, rc *repoClient, t *blobTask, loc string) error {
	counted := t.primary == nil
	var reported int64 // bytes of this blob already reported, across re-sends
	err := rc.putBlob(ctx, loc, t.digest, t.size, func() (readCloser, error) {
		b, err := p.src.OpenBlob(ctx, t.digest, t.size)
		if err != nil {
			return nil, err
		}
		if !counted {
			return b, nil
		}
		return &countingReader{rc: b, p: p.o.Progress, h: t.digest, reported: &reported}, nil
	})
	if err != nil && errors.Is(err, bundle.ErrCorrupt) {
		err = fmt.Errorf("reading from %s: %w", p.src.Name(), err)
	}
	if err != nil {
		if isQuota(err) {
			return p.quotaErr(t.project, err)
		}
		return err
	}
	t.present, t.how = true, "uploaded"
	p.uploaded.Add(t.size)
	p.nUploaded.Add(1)
	if counted {
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBlobDone, Digest: t.digest})
	}
	return nil
}

func (p *pusher) progressDone(t *blobTask) {
	if t.primary == nil {
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBytes, Digest: t.digest, Bytes: t.size})
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBlobDone, Digest: t.digest})
	}
}

// pushManifests pushes, per image, child manifests by digest, then the
// image's own manifest or index by digest, then its tags.
func (p *pusher) pushManifests(ctx context.Context) error {
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, im := range p.live() {
		g.Go(func() error {
			if err := p.pushImage(ctx, im); err != nil {
				var me *manifestError
				if errors.As(err, &me) {
					im.fail(me.digest, err)
				} else {
					im.fail("", err)
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	return ctx.Err()
}

type manifestError struct {
	digest string
	err    error
}

func (e *manifestError) Error() string { return e.err.Error() }
func (e *manifestError) Unwrap() error { return e.err }

func (p *pusher) pushImage(ctx context.Context, im *image) error {
	rc, err := p.repo(ctx, im.repo)
	if err != nil {
		return err
	}
	if !im.complete {
		err := im.tree.Walk(func(n *bundle.Node) error {
			if n.Data == nil && !(n.Missing && oci.KindOf(n.MediaType) != oci.KindUnknown) {
				return nil
			}
			k := key{im.repo, n.Digest}
			p.mu.Lock()
			o, ok := p.manifests[k]
			if !ok {
				o = &onceErr{}
				p.manifests[k] = o
			}
			p.mu.Unlock()
			o.once.Do(func() {
				if n.Missing {
					_, ok, err := rc.headManifest(ctx, n.Digest.String())
					if err == nil && !ok {
						err = fmt.Errorf("manifest %s is not in this delta bundle and not in %s/%s: import bundle %s (its base) first", n.Digest, p.tgt.Registry, im.repo, p.base())
					}
					o.err = err
					return
				}
				o.err = rc.putManifest(ctx, n.Digest.String(), n.Data, string(n.MediaType), n.Digest)
			})
			if o.err != nil {
				if isQuota(o.err) {
					return &manifestError{n.Digest.String(), p.quotaErr(project(im.repo), o.err, n.Size)}
				}
				return &manifestError{n.Digest.String(), fmt.Errorf("manifest %s: %w", n.Digest, o.err)}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Tags last: the image is complete in the repository now.
	for i, tag := range im.rec.Tags {
		if im.current[i] == im.digest.String() {
			continue
		}
		if im.tree.Data == nil {
			return fmt.Errorf("tag %s:%s: manifest %s is not in this delta bundle: import bundle %s (its base) first", im.repo, tag, im.digest, p.base())
		}
		if err := rc.putManifest(ctx, tag, im.tree.Data, string(im.tree.MediaType), im.digest); err != nil {
			if isQuota(err) {
				err = p.quotaErr(project(im.repo), err, int64(len(im.tree.Data)))
			}
			return fmt.Errorf("tag %s:%s: %w", im.repo, tag, err)
		}
	}
	return nil
}

// dryRunBlobs asks the target which blobs it lacks, transferring nothing.
func (p *pusher) dryRunBlobs(ctx context.Context) error {
	p.plan()
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, t := range p.order {
		g.Go(func() error {
			defer close(t.done)
			if p.newProjects[t.project] {
				return nil
			}
			rc, err := p.repo(ctx, t.repo)
			if err != nil {
				t.err = err
				return nil
			}
			t.present, t.err = rc.headBlob(ctx, t.digest)
			switch {
			case t.err != nil || t.present || !t.missing:
			case t.baseFrom != "":
				t.how = "mounted" // the real import mounts it from where checkBase found it
			default:
				t.err = fmt.Errorf("not in this delta bundle and not in %s/%s: import bundle %s (its base) first", p.tgt.Registry, t.repo, p.base())
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	somewhere := map[v1.Hash]bool{}
	for _, t := range p.order {
		if t.present {
			somewhere[t.digest] = true
		}
	}
	counted := map[v1.Hash]bool{}
	for _, t := range p.order {
		switch {
		case t.present:
			p.skipped.Add(t.size)
			p.nSkipped.Add(1)
		case t.err != nil:
		case t.how == "mounted" || somewhere[t.digest] || counted[t.digest]:
			p.mounted.Add(t.size)
			p.nMounted.Add(1)
		default:
			counted[t.digest] = true
			p.bytesToUpload += t.size
		}
	}
	for _, im := range p.live() {
		for _, t := range p.blobsOf(im) {
			if !t.present {
				im.upload += t.size
			}
			if t.err != nil {
				im.fail(t.digest.String(), fmt.Errorf("blob %s: %w", t.digest, t.err))
			}
		}
	}
	return nil
}

// summarize fills the summary from the images' state.
func (p *pusher) summarize() {
	s := p.sum
	// Blobs of images that were complete already count as skipped.
	seen := map[key]bool{}
	for _, im := range p.images {
		if im.err != nil || !im.complete || im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			k := key{im.repo, n.Digest}
			if n.Data == nil && !seen[k] && p.blobs[k] == nil {
				seen[k] = true
				p.skipped.Add(n.Size)
				p.nSkipped.Add(1)
			}
			return nil
		})
	}
	for _, im := range p.images {
		res := ImageResult{Repository: p.tgt.Registry + "/" + im.repo, Source: im.rec.Source, Digest: im.rec.Digest,
			MediaType: im.rec.MediaType, Upload: im.upload, Tags: []TagResult{}}
		upToDate, moved, added := 0, 0, 0
		for i, tag := range im.rec.Tags {
			tr := TagResult{Tag: tag}
			cur := ""
			if i < len(im.current) {
				cur = im.current[i]
			}
			switch {
			case im.err != nil && cur != im.rec.Digest:
				tr.Status = TagNotDone
			case cur == im.rec.Digest:
				tr.Status = TagUpToDate
				upToDate++
			case cur != "":
				tr.Previous = cur
				moved++
				tr.Status = TagMoved
				if p.o.DryRun {
					tr.Status = TagMove
				}
			default:
				added++
				tr.Status = TagPushed
				if p.o.DryRun {
					tr.Status = TagNew
				}
			}
			res.Tags = append(res.Tags, tr)
		}
		switch {
		case im.err != nil:
			res.Status = StatusFailed
			if p.o.DryRun {
				res.Status = StatusWouldFail
			}
			res.Error = im.err.Error()
			s.Failed++
			s.Failures = append(s.Failures, Failure{Image: im.ref(), Blob: im.errBlob, Error: im.err.Error()})
		case upToDate == len(im.rec.Tags):
			res.Status = StatusUpToDate
			s.UpToDate++
		case p.o.DryRun && moved > 0:
			res.Status = StatusMoveTag
			s.Pushed++
		case p.o.DryRun && upToDate > 0:
			res.Status = StatusAddTag
			s.Pushed++
		case p.o.DryRun:
			res.Status = StatusNew
			s.Pushed++
		default:
			res.Status = StatusPushed
			s.Pushed++
		}
		s.Images = append(s.Images, res)
	}
	sort.SliceStable(s.Failures, func(i, j int) bool { return s.Failures[i].Image < s.Failures[j].Image })
	s.BytesUploaded, s.BytesMounted, s.BytesSkipped = p.uploaded.Load(), p.mounted.Load(), p.skipped.Load()
	s.BlobsUploaded, s.BlobsMounted, s.BlobsSkipped = int(p.nUploaded.Load()), int(p.nMounted.Load()), int(p.nSkipped.Load())
	s.BytesToUpload = p.bytesToUpload
	if p.harbor != nil {
		s.Harbor = true
		s.ProjectsCreated = p.harbor.created
	}
}

// stillNeeded sums the blobs of project that are not in their repository.
// A digest counts once per project: Harbor stores it once there.
func (p *pusher) stillNeeded(proj string) int64 {
	var n int64
	counted := map[v1.Hash]bool{}
	for _, t := range p.order {
		if t.project == proj && !t.present && !counted[t.digest] {
			counted[t.digest] = true
			n += t.size
		}
	}
	return n
}

// quotaErr returns the one QuotaError of project proj. Created during the
// manifest pass, it needs at least the manifest's size (and the blobs that
// are still missing); during the blob pass Needed is filled in at its end.
func (p *pusher) quotaErr(proj string, err error, manifestSize ...int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quota == nil {
		p.quota = map[string]*QuotaError{}
	}
	q, ok := p.quota[proj]
	if !ok {
		q = &QuotaError{Registry: p.tgt.Registry, Project: proj, Err: err}
		if len(manifestSize) > 0 {
			q.Needed = manifestSize[0] + p.stillNeeded(proj)
		}
		p.quota[proj] = q
	}
	return q
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

type readCloser interface {
	Read([]byte) (int, error)
	Close() error
}

// countingReader reports bytes as they leave the source, in steps of
// 256 KiB. A re-sent body (the transport reopens it) reports only bytes
// beyond what an earlier send of the same blob already reported.
type countingReader struct {
	rc       readCloser
	p        bundle.Progress
	h        v1.Hash
	n        int64  // bytes read by this send
	reported *int64 // bytes of the blob reported so far, shared by re-sends
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.rc.Read(b)
	c.n += int64(n)
	if c.n-*c.reported >= 256<<10 || (err != nil && c.n > *c.reported) {
		c.p.Event(bundle.Event{Kind: bundle.EventBytes, Digest: c.h, Bytes: c.n - *c.reported})
		*c.reported = c.n
	}
	return n, err
}

func (c *countingReader) Close() error {
	if c.n > *c.reported {
		c.p.Event(bundle.Event{Kind: bundle.EventBytes, Digest: c.h, Bytes: c.n - *c.reported})
		*c.reported = c.n
	}
	return c.rc.Close()
}
