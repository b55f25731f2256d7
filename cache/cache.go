package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/singleflight"

	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/serve"
)

// Sentinel errors, tested with errors.Is.
var (
	// ErrNotFound: the upstream says the manifest or blob does not exist.
	ErrNotFound = errors.New("not found upstream")
	// ErrUnreachable: the upstream could not be asked (network, TLS, 5xx, 429).
	ErrUnreachable = errors.New("upstream unreachable")
	// ErrConfig: the options cannot work (exit status 2 in the CLI).
	ErrConfig = errors.New("bad cache configuration")
	// ErrDigestMismatch: upstream bytes do not match the digest asked for.
	ErrDigestMismatch = errors.New("digest mismatch")
)

var upstreamNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.:_-]*$`)

// MaxManifestSize is the largest manifest the cache reads (4 MiB, as
// distribution).
const MaxManifestSize = 4 << 20

// Manifest is a manifest as an upstream returned it. Body is nil for a HEAD.
type Manifest struct {
	// Digest is the upstream's Docker-Content-Digest; zero if it sent none
	// (after a HEAD, the cache then GETs the manifest to learn it).
	Digest    v1.Hash
	MediaType string
	Body      []byte
}

// Upstream is what the cache needs from a registry it pulls through from.
// Errors wrap ErrNotFound when the upstream says the object does not exist,
// ErrUnreachable when it could not answer; repo is the repository path on
// the upstream (library/redis), ref a tag or a digest.
type Upstream interface {
	Manifest(ctx context.Context, repo, ref string, head bool) (*Manifest, error)
	// Blob GETs (or HEADs: nil body) blob d; size is -1 when unknown.
	Blob(ctx context.Context, repo string, d v1.Hash, head bool) (body io.ReadCloser, size int64, err error)
	// Tags GETs one page of repo's tag list; query is the client's (n,
	// last), next the query of the following page ("" = last page).
	Tags(ctx context.Context, repo, query string) (body []byte, next string, err error)
}

// Defaults for Options.
const (
	DefaultThreshold    = 20
	DefaultCleanEvery   = 30 * time.Minute
	DefaultManifestTTL  = 5 * time.Minute
	DefaultStallTimeout = time.Minute
)

// Options configure a Cache.
type Options struct {
	Dir     string
	MaxSize int64 // bytes; the cleaner brings the store down to it
	// Threshold is how far, in percent of MaxSize, the store may grow
	// past MaxSize before the cleaner evicts: 0 means the default (20),
	// -1 none (evict as soon as the store passes MaxSize).
	Threshold   int
	CleanEvery  time.Duration // default 30m
	ManifestTTL time.Duration // default 5m; negative: always revalidate
	// StallTimeout ends a blob download that receives nothing for this
	// long (default 1m), so waiting clients get an error, not a hang.
	StallTimeout time.Duration
	// Upstreams by the name that leads the path: /v2/NAME/repo/...
	Upstreams map[string]Upstream
	// Auth, when set, requires HTTP basic auth on every request.
	Auth   *serve.Htpasswd
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	// Objects, when set, keeps blobs and manifests in object storage that
	// several replicas share (s3backend.go); Dir then keeps this replica's
	// tags, tag lists and downloads in progress.
	Objects *objstore.Store
	// ReplicaID names this replica's access batches; default: random.
	ReplicaID string
	// AccessFlushEvery and AccessFlushEntries: a replica writes the access
	// times it recorded as one object this often, or once it holds this
	// many (defaults 30s, 1000).
	AccessFlushEvery   time.Duration
	AccessFlushEntries int
	// LeaseTTL is how long the cleaner's lease holds before another
	// replica may take it over (default 10m).
	LeaseTTL time.Duration
	// Redirect, when positive, answers a GET of a stored, checked blob
	// with 307 to a presigned URL of its object valid this long, so that
	// the bytes go from the store to the client (Objects only).
	Redirect time.Duration
}

// Cache is the pull-through cache. It is an http.Handler; Run drives its
// cleaner; Close ends its downloads.
type Cache struct {
	o       Options
	log     *slog.Logger
	store   *store
	metrics *Metrics
	names   []string // upstream names, longest first

	ctx    context.Context // downloads run under it, detached from clients
	cancel context.CancelFunc

	fmu     sync.Mutex
	flights map[flightKey]*download
	closed  bool
	down    map[string]time.Time // upstream → until when it is not asked to revalidate
	mflight singleflight.Group
	wg      sync.WaitGroup // downloads in flight
	flusher sync.WaitGroup // the access batch writer of an object store
	unlock  func()         // releases the lock on Dir
}

// DefaultRedirect is how long a blob redirect's presigned URL is valid
// when the command line asks for redirects (--s3-redirect).
const DefaultRedirect = 15 * time.Minute

// New opens (or creates) the store in o.Dir and returns the cache.
func New(o Options) (*Cache, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("%w: no directory", ErrConfig)
	}
	if o.MaxSize <= 0 {
		return nil, fmt.Errorf("%w: max size must be positive", ErrConfig)
	}
	switch o.Threshold {
	case 0:
		o.Threshold = DefaultThreshold
	case -1:
		o.Threshold = 0
	}
	if o.Threshold < 0 || o.Threshold > 1000 {
		return nil, fmt.Errorf("%w: threshold %d%% out of range 0-1000", ErrConfig, o.Threshold)
	}
	if o.CleanEvery == 0 {
		o.CleanEvery = DefaultCleanEvery
	}
	if o.CleanEvery < 0 {
		return nil, fmt.Errorf("%w: negative clean interval", ErrConfig)
	}
	if o.ManifestTTL == 0 {
		o.ManifestTTL = DefaultManifestTTL
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if len(o.Upstreams) == 0 {
		return nil, fmt.Errorf("%w: no upstream", ErrConfig)
	}
	if err := objectDefaults(&o); err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{o: o, log: o.Logger, metrics: &Metrics{}, flights: map[flightKey]*download{}, down: map[string]time.Time{}}
	for n := range o.Upstreams {
		if !upstreamNameRE.MatchString(n) {
			return nil, fmt.Errorf("%w: upstream name %q: want a host-like name (letters, digits, . : _ -)", ErrConfig, n)
		}
		c.names = append(c.names, n)
	}
	sort.Slice(c.names, func(i, j int) bool { return len(c.names[i]) > len(c.names[j]) })
	if fi, err := os.Stat(o.Dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%w: the store directory %s is a file, not a directory", ErrConfig, o.Dir)
	}
	// The store assumes it is the only writer of Dir (it empties tmp/ and
	// keeps its index in memory): the lock makes that true.
	unlock, err := lockDir(o.Dir)
	if err != nil {
		return nil, err
	}
	b, err := newBackend(o)
	if err != nil {
		unlock()
		return nil, err
	}
	st, err := openStore(o.Dir, b, o.Now, o.Logger)
	if err != nil {
		unlock()
		return nil, err
	}
	c.store, c.unlock = st, unlock
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if sb, ok := b.(*s3Backend); ok {
		c.flusher.Go(func() { sb.runFlusher(c.ctx) })
	}
	return c, nil
}

// Metrics returns the cache's counters.
func (c *Cache) Metrics() *Metrics { return c.metrics }

// Size returns the bytes in the store (blobs, manifests, tag list pages).
func (c *Cache) Size() int64 { return c.store.size() }

// Run cleans the store every CleanEvery (and once at start) until ctx is
// done. Downloads go on: call Close once the server has stopped.
func (c *Cache) Run(ctx context.Context) {
	t := time.NewTicker(c.o.CleanEvery)
	defer t.Stop()
	c.Clean()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.Clean()
		}
	}
}

// Close cancels the downloads in flight, waits for them to end and
// releases the store's lock; later requests for missing blobs fail with
// ErrUnreachable.
func (c *Cache) Close() {
	c.fmu.Lock()
	c.closed = true
	c.fmu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.flusher.Wait()
	c.unlock()
}

// high is the size past which the cleaner evicts.
func (c *Cache) high() int64 {
	return c.o.MaxSize + c.o.MaxSize/100*int64(c.o.Threshold) + c.o.MaxSize%100*int64(c.o.Threshold)/100
}

// Clean runs one cleaner pass: when the store is larger than MaxSize ×
// (1 + Threshold/100), evict least recently used blobs and manifests until
// it is at most MaxSize. It returns what it evicted.
func (c *Cache) Clean() CleanResult {
	if sb, ok := c.store.b.(*s3Backend); ok {
		return c.cleanShared(sb)
	}
	if c.store.size() <= c.high() {
		return CleanResult{}
	}
	r := c.store.evict(c.o.MaxSize)
	c.metrics.evicted(r)
	c.log.Info("cleaner pass", "evicted_blobs", r.Blobs, "evicted_manifests", r.Manifests, "freed", r.Bytes, "size", c.store.size(), "max", c.o.MaxSize)
	return r
}
