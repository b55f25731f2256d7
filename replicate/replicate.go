// Package replicate copies images from registry to registry, as dregsy does,
// with the same mapping files: each task's mappings are resolved exactly
// as ferry export resolves them, and each selected image goes through the
// pipeline of ferry import (blobs, then manifests, tags last; mount and
// skip what the target has). An image whose tag already points at the
// source's digest in the target costs two HEADs and nothing else: no
// manifest GET (what Docker Hub counts as a pull) and no blob GET.
//
// Run does one round of each task; Watch runs each task at its interval,
// reloading the mapping files when they change.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	stdsync "sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/causes"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

// Options configure Run and Watch.
type Options struct {
	Files []string // mapping files (-f), merged in order (required)
	Tasks []string // --task; empty = every task
	// To (REGISTRY[/PREFIX]) replaces every task's target registry.
	To string

	Jobs   int  // parallel requests per round; 0 = registry.DefaultJobs
	DryRun bool // resolve and report; copy nothing
	// Platforms overrides the mappings' platform (--platform); nil keeps them.
	Platforms []string
	// Mirrors maps a source registry to the host to fetch from.
	Mirrors map[string]string

	// Username and Password win over every other credential source for
	// the tasks' source registries (as for export). The target's come from
	// the task's target auth, --auth-file or the docker keychain.
	Username, Password string

	Client   *registry.Client   // required
	Keychain *registry.Keychain // required

	// Abort, when set, makes a stop gentle: once ctx is done no new blob
	// download starts, but the blobs in flight finish (and images whose
	// blobs are all in get their tags) unless Abort is closed too (a second
	// Ctrl-C). nil: ctx stops transfers in flight at once.
	Abort <-chan struct{}

	// OnRound receives every round's result as it ends (Run and Watch).
	OnRound  func(Round)
	Progress bundle.Progress
	Logger   *slog.Logger
}

// Image results in Round.Images.
const (
	ImageCopied    = "copied"
	ImageUnchanged = "unchanged"
	ImageFailed    = "failed"
	ImageWouldCopy = "would copy" // dry run
)

// Round is one round of one task.
type Round struct {
	Task    string    `json:"task"`
	Target  string    `json:"target"`
	Start   time.Time `json:"start"`
	Seconds float64   `json:"seconds"`
	DryRun  bool      `json:"dryRun,omitempty"`
	// Copied, Unchanged and Failed count images (one per target repository
	// and digest, with all its tags).
	Copied    int `json:"copied"`
	Unchanged int `json:"unchanged"`
	Failed    int `json:"failed"`
	// Bytes is what was uploaded into the target; Mounted what was mounted
	// from another repository of it.
	Bytes   int64 `json:"bytes"`
	Mounted int64 `json:"bytesMounted"`
	// Pulls is the manifest GETs sent to the source (what Docker Hub counts);
	// BlobGETs the blob downloads.
	Pulls    int64         `json:"pulls"`
	BlobGETs int64         `json:"blobGets"`
	Images   []ImageResult `json:"images"`
	Failures []Failure     `json:"failures,omitempty"`
	// Refusals are Harbor's policy refusals (quota, immutable tags,
	// proxy-cache projects), each once with the images it stopped; the
	// failures they caused name it in Refusal.
	Refusals []push.Refusal `json:"refusals,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	// Error is why the round failed, if it did.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`

	causes []error // the failures' errors, for Err
}

// ImageResult is one image of a round.
type ImageResult struct {
	Repository string   `json:"repository"` // REGISTRY/PATH in the target
	Source     string   `json:"source"`
	Tags       []string `json:"tags"`
	Digest     string   `json:"digest"` // the digest the tags point at in the target
	Result     string   `json:"result"`
	Error      string   `json:"error,omitempty"`
}

// Failure is a mapping, tag or image that failed, and why.
type Failure struct {
	Image string `json:"image"`
	Error string `json:"error"`
	// Refusal is the kind of the Harbor policy refusal that stopped the
	// image (see Round.Refusals), if one did.
	Refusal string `json:"refusal,omitempty"`
}

// ErrFailed: a round failed; its Round says what and why.
var ErrFailed = errors.New("sync failed")

// Syncer runs rounds. It remembers, across rounds, the digest a
// platform-subset index got in the target, so that such an image, too,
// costs only HEADs when nothing changed.
type Syncer struct {
	o Options

	mu     stdsync.Mutex
	subset map[string]string // target repo + upstream digest + platforms → target digest
}

// New checks o and sets its defaults.
func New(o Options) (*Syncer, error) {
	if o.Client == nil || o.Keychain == nil {
		return nil, errors.New("sync: Client and Keychain are required")
	}
	if len(o.Files) == 0 {
		return nil, errors.New("sync: no mapping file")
	}
	if o.Jobs < 1 {
		o.Jobs = registry.DefaultJobs
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.To != "" {
		if _, err := push.ParseTarget(o.To); err != nil {
			return nil, err
		}
	}
	return &Syncer{o: o, subset: map[string]string{}}, nil
}

// Load reads the mapping files and selects the tasks to run.
func (s *Syncer) Load() ([]*mapping.Task, []string, error) {
	cfg, err := mapping.Load(s.o.Files...)
	if err != nil {
		return nil, nil, err
	}
	tasks, err := cfg.Select(s.o.Tasks)
	if err != nil {
		return nil, nil, err
	}
	warnings := cfg.Warnings()
	if n := len(cfg.Charts); n > 0 {
		if len(cfg.Tasks) == 0 {
			return nil, nil, &mapping.LoadError{File: strings.Join(s.o.Files, ", "), Msg: "no tasks defined: charts: entries are carried by ferry export, not ferry sync"}
		}
		warnings = append(warnings, fmt.Sprintf("%d charts: entries ignored: ferry sync copies the tasks' images; ferry export carries charts", n))
	}
	return tasks, warnings, nil
}

// Run loads the mapping files and runs one round of each selected task, in
// order. The error wraps ErrFailed when a round failed; it is another error
// when the files could not be loaded.
func Run(ctx context.Context, o Options) ([]Round, error) {
	s, err := New(o)
	if err != nil {
		return nil, err
	}
	tasks, warnings, err := s.Load()
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		s.o.Logger.Warn(w)
	}
	var rounds []Round
	failed := 0
	for _, t := range tasks {
		if ctx.Err() != nil {
			return rounds, ctx.Err()
		}
		r := s.Round(ctx, t)
		rounds = append(rounds, r)
		if s.o.OnRound != nil {
			s.o.OnRound(r)
		}
		if r.Err != nil {
			if errors.Is(r.Err, context.Canceled) && ctx.Err() != nil {
				return rounds, ctx.Err()
			}
			failed++
		}
	}
	if failed > 0 {
		var errs []error
		for _, r := range rounds {
			if r.Err != nil {
				errs = append(errs, r.Err)
			}
		}
		return rounds, causes.New(ErrFailed, fmt.Sprintf("%v: %d of %d tasks failed (listed above)", ErrFailed, failed, len(tasks)), errs)
	}
	return rounds, nil
}

// target returns where t's images go: --to, else the task's target.
func (s *Syncer) target(t *mapping.Task) (push.Target, error) {
	to := s.o.To
	if to == "" {
		if t.Target.Registry == "" || t.Target.HasPlaceholder("registry") {
			return push.Target{}, fmt.Errorf("task %q has no target registry: fill in target.registry or give --to", t.Name)
		}
		to = t.Target.Registry
	}
	return push.ParseTarget(to)
}

// roundState is what one round of one task works with.
type roundState struct {
	task *mapping.Task
	tgt  push.Target
	src  *mapping.Sources
	host *registry.Host // the target, with the task's target credentials
	look *targetLook
}

// Round runs one round of task t: resolve with a HEAD at the source and a
// HEAD at the target per tag, then copy what differs.
func (s *Syncer) Round(ctx context.Context, t *mapping.Task) Round {
	start := time.Now()
	r := Round{Task: t.Name, Start: start, DryRun: s.o.DryRun, Images: []ImageResult{}}
	defer func() {
		r.Seconds = time.Since(start).Seconds()
		if r.Err != nil {
			r.Error = r.Err.Error()
		}
	}()
	st, err := s.prepare(ctx, t, &r)
	if err != nil {
		r.Err = err
		return r
	}
	res, err := mapping.Resolve(ctx, []*mapping.Task{t}, mapping.Options{
		Sources:   st.src,
		Platforms: s.o.Platforms,
		Skip:      st.look.skip,
		Jobs:      s.o.Jobs,
		Logger:    s.o.Logger,
	})
	if err != nil {
		r.Err = err
		return r
	}
	r.addResolution(res, st)
	if len(res.Images) > 0 {
		if err := s.copy(ctx, st, res.Images, &r); err != nil {
			r.Err = err
			return r
		}
	}
	switch {
	case ctx.Err() != nil:
		r.Err = fmt.Errorf("task %q stopped: %w", t.Name, ctx.Err())
	case r.Failed > 0:
		r.Err = causes.New(ErrFailed, fmt.Sprintf("%v: task %q: %d image(s) or tag(s) failed", ErrFailed, t.Name, r.Failed), r.causes)
	}
	return r
}

// prepare finds the task's target, applies skip-tls-verify, proves the
// source credentials and connects to the target with the task's target
// credentials, declaring every repository the round may write so that
// one token covers the round.
func (s *Syncer) prepare(ctx context.Context, t *mapping.Task, r *Round) (*roundState, error) {
	tgt, err := s.target(t)
	if err != nil {
		return nil, err
	}
	r.Target = tgt.String()
	if t.Target.SkipTLSVerify {
		s.o.Client.Configure(tgt.Registry, registry.HostConfig{SkipTLSVerify: true})
	}
	if err := t.CheckSource(); err != nil {
		return nil, err
	}
	src := &mapping.Sources{Client: s.o.Client, Keychain: s.o.Keychain, Username: s.o.Username, Password: s.o.Password, Mirrors: s.o.Mirrors}
	if err := src.CheckCredentials(ctx, []*mapping.Task{t}); err != nil {
		return nil, err
	}
	logins, _ := mapping.TargetLogins([]*mapping.Task{t}, tgt.Registry)
	auth, err := s.o.Keychain.Resolve(tgt.Registry, logins...)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", tgt.Registry, err)
	}
	host, err := s.o.Client.Host(tgt.Registry, auth)
	if err != nil {
		return nil, err
	}
	actions := registry.PushPull
	if s.o.DryRun {
		actions = registry.Pull
	}
	for _, m := range t.Mappings {
		host.Want(registry.Scope(tgt.Repository(m.TargetPath()), actions))
	}
	st := &roundState{task: t, tgt: tgt, src: src, host: host}
	st.look = &targetLook{s: s, tgt: tgt, host: host}
	return st, nil
}

// addResolution counts the resolution's manifest GETs and failures, and
// the images the target holds already (grouped as export groups them).
func (r *Round) addResolution(res *mapping.Resolution, st *roundState) {
	r.Pulls = res.ManifestGETs
	for _, f := range res.Failures {
		r.Failures = append(r.Failures, Failure{Image: f.Source, Error: f.Err.Error()})
		r.causes = append(r.causes, f.Err)
		r.Failed++
	}
	for _, g := range mapping.GroupImages(res.Skipped) {
		r.Images = append(r.Images, ImageResult{Repository: st.tgt.Registry + "/" + st.tgt.Repository(g.Target), Source: g.Source,
			Tags: g.Tags, Digest: st.look.found(g.Target, g.Tags[0]), Result: ImageUnchanged})
		r.Unchanged++
	}
}

// copy pushes the images that differ through ferry import's pipeline.
// With Abort set, transfers outlive ctx until Abort; the source refuses
// new downloads once ctx is done.
func (s *Syncer) copy(ctx context.Context, st *roundState, images []*mapping.Image, r *Round) error {
	src, err := newRegistrySource("registry "+st.task.SourceHost(), images, st.src, map[string]*mapping.Task{st.task.Name: st.task})
	if err != nil {
		return err
	}
	pctx := ctx
	if s.o.Abort != nil {
		var cancel context.CancelFunc
		pctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		go func() {
			select {
			case <-s.o.Abort:
				cancel()
			case <-pctx.Done():
			}
		}()
		src.stop = ctx.Done()
	}
	sum, perr := push.Run(pctx, push.Options{
		Source: src, To: st.tgt.String(), Jobs: s.o.Jobs, DryRun: s.o.DryRun,
		Auth:   st.host.Auth(),
		Client: s.o.Client, Keychain: s.o.Keychain,
		Progress: s.o.Progress, Logger: s.o.Logger,
	})
	r.BlobGETs = src.gets.Load()
	if sum != nil {
		s.addPushed(r, sum, src, st.look)
	}
	if perr != nil && !errors.Is(perr, push.ErrFailed) {
		return perr
	}
	return nil
}

// addPushed adds what push did to the round, and remembers the digests
// platform subsets got in the target.
func (s *Syncer) addPushed(r *Round, sum *push.Summary, src *registrySource, look *targetLook) {
	r.Warnings = append(r.Warnings, sum.Warnings...)
	r.Bytes, r.Mounted = sum.BytesUploaded, sum.BytesMounted
	for _, im := range sum.Images {
		ir := ImageResult{Repository: im.Repository, Source: im.Source, Digest: im.Digest, Error: im.Error}
		for _, tr := range im.Tags {
			ir.Tags = append(ir.Tags, tr.Tag)
		}
		switch im.Status {
		case push.StatusFailed, push.StatusWouldFail:
			ir.Result = ImageFailed
			r.Failed++
		case push.StatusUpToDate:
			ir.Result = ImageUnchanged
			r.Unchanged++
		default:
			ir.Result = ImageCopied
			if s.o.DryRun {
				ir.Result = ImageWouldCopy
			}
			r.Copied++
			if h, err := v1.NewHash(im.Digest); err == nil && !s.o.DryRun {
				if up, ok := src.upstream[h]; ok {
					s.remember(im.Repository, up, look.platformsOf(im.Repository, up), im.Digest)
				}
			}
		}
		r.Images = append(r.Images, ir)
	}
	for _, f := range sum.Failures {
		r.Failures = append(r.Failures, Failure{Image: f.Image, Error: f.Error, Refusal: f.Refusal})
		if f.Refusal == "" {
			r.causes = append(r.causes, errors.New(f.Error)) // untyped: classifies as failed
		}
	}
	// A refusal is one cause however many images it stopped, and keeps its
	// kind (quota, immutable-tag, proxy-cache) for --json.
	r.Refusals = append(r.Refusals, sum.Refusals...)
	for _, rf := range sum.RefusalErrors() {
		r.causes = append(r.causes, rf)
	}
}

// remember records the digest a platform-subset image got in repo, for
// the platforms asked for: another choice of platforms is another image.
func (s *Syncer) remember(repo string, upstream v1.Hash, platforms, digest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subset[subsetKey(repo, upstream, platforms)] = digest
}

func (s *Syncer) recalled(repo string, upstream v1.Hash, platforms string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subset[subsetKey(repo, upstream, platforms)]
}

func subsetKey(repo string, upstream v1.Hash, platforms string) string {
	return repo + "@" + upstream.String() + "#" + platforms
}

// platformKey is a request's platforms in a stable form.
func platformKey(p []string) string {
	p = slices.Clone(p)
	slices.Sort(p)
	return strings.Join(p, ",")
}

// targetLook asks the target, by HEAD, where a tag points.
type targetLook struct {
	s    *Syncer
	tgt  push.Target
	host *registry.Host

	mu        stdsync.Mutex
	digests   map[string]string
	platforms map[string]string // repo@upstream digest → platforms asked for
}

// platformsOf returns the platforms asked for when the image of repo with
// this upstream digest was looked at.
func (l *targetLook) platformsOf(repo string, upstream v1.Hash) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.platforms[repo+"@"+upstream.String()]
}

// skip is mapping.Options.Skip: true when the target's tag already points
// at what the source serves (or, for a platform subset, at the index this
// syncer made of it).
func (l *targetLook) skip(ctx context.Context, c mapping.Candidate) (bool, error) {
	tag := c.Tag
	if tag == "" {
		tag = oci.DigestTag(c.Digest)
	}
	path := l.tgt.Repository(c.Target)
	host := l.tgt.Registry
	ref, err := name.NewTag(host+"/"+path+":"+tag, l.s.o.Client.NameOptions(host)...)
	if err != nil {
		return false, nil // push reports a bad target name
	}
	repo, err := l.host.Repo(ctx, path, registry.Scope(path, registry.Pull))
	if err != nil {
		l.s.o.Logger.Info("cannot ask the target; copying", "tag", ref.String(), "error", err)
		return false, nil
	}
	desc, err := remote.Head(ref, append(repo.RemoteOptions(ctx), remote.WithContext(ctx))...)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil // absent (or unreadable: push will say why)
	}
	got := desc.Digest.String()
	same := got == c.Digest.String()
	if len(c.Platforms) > 0 {
		pk := platformKey(c.Platforms)
		l.mu.Lock()
		if l.platforms == nil {
			l.platforms = map[string]string{}
		}
		l.platforms[host+"/"+path+"@"+c.Digest.String()] = pk
		l.mu.Unlock()
		if !same {
			same = l.s.recalled(host+"/"+path, c.Digest, pk) == got
		}
	}
	if same {
		l.mu.Lock()
		if l.digests == nil {
			l.digests = map[string]string{}
		}
		l.digests[c.Target+":"+tag] = got
		l.mu.Unlock()
	}
	return same, nil
}

func (l *targetLook) found(target, tag string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.digests[target+":"+tag]
}
