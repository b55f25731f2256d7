package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/cache"
	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/internal/units"
	"github.com/ferry-airgap/ferry/serve"
)

type cacheFlags struct {
	addr, dir, maxSize string
	threshold          int
	cleanEvery, ttl    time.Duration
	pullSecret         string
	upstreams, ignore  []string
	caCerts            []string
	certsDir           string
	insecure           bool
	store, s3Endpoint  string
	accessFlush        time.Duration
	s3Redirect         bool
	listenFlags
}

func newCacheCmd(e *env) *cobra.Command {
	var f cacheFlags
	cmd := &cobra.Command{
		Use:   "cache --dir DIR --max-size SIZE [--store s3://BUCKET/PREFIX] [--addr 127.0.0.1:5000] [--upstream NAME=URL]...",
		Short: "Run a pull-through registry cache for many upstreams, bounded in size",
		Example: `  # Docker Hub and every registry of a pull secret, 200 GiB at most
  ferry cache --addr 0.0.0.0:5000 --dir /srv/ferry-cache --max-size 200GiB --pull-secret pull-secret.json

  # an internal registry under another name, with TLS and basic auth
  ferry cache --dir /srv/cache --max-size 50GiB --upstream src=https://harbor.internal \
    --tls-cert tls.crt --tls-key tls.key --htpasswd htpasswd

  # exports through the cache (a second export makes no upstream blob GET)
  ferry export -f mappings.yaml --mirror docker.io=cache.local:5000/docker.io -o bundle.tar`,
		Long: `Answer registry pulls from a local store, fetching what it lacks from
upstream registries: /v2/NAME/REPO/... pulls through from the upstream called
NAME (cache.local/docker.io/library/redis:7 comes from Docker Hub);
containerd's /v2/REPO/...?ns=NAME does the same, and Docker's
registry-mirrors paths (no NAME, no ns) go to docker.io.

Upstreams: docker.io, every registry in --pull-secret, and each --upstream
NAME=URL (to add one or give one another name; URL is https:// unless it
says http://, which only loopback addresses may). --ignore-registry drops a default one.

Blobs are stored once by digest and verified before they are kept;
concurrent pulls of one blob through one upstream share one download.
One cache per --dir: a second one on the same directory is refused.
With --store s3://BUCKET/PREFIX, blobs and manifests are objects in that
bucket instead, shared by several replicas behind one load balancer (each
with its own --dir for tags); one replica at a time cleans. Tags are checked upstream
with one HEAD once --manifest-ttl has passed, and served from the store
when the upstream cannot be reached (header X-Ferry-Cache: stale).
Every --clean-every, when the store is larger than --max-size plus
--threshold percent, the least recently used blobs and manifests are
evicted down to --max-size.

Prints "serving on ADDRESS" on stderr once listening, then one access-log
line per request; /metrics serves Prometheus counters. SIGTERM or Ctrl-C
shuts down gracefully.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { e.jsonLines = true; return runCache(cmd, e, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", "127.0.0.1:5000", "listen address (port 0: any free port)")
	fl.StringVar(&f.dir, "dir", "", "store directory (required)")
	fl.StringVar(&f.maxSize, "max-size", "", "size the cleaner keeps the store to, e.g. 10GiB or 500G (required)")
	fl.IntVar(&f.threshold, "threshold", cache.DefaultThreshold, "percent over --max-size the store may grow before the cleaner evicts")
	fl.DurationVar(&f.cleanEvery, "clean-every", cache.DefaultCleanEvery, "how often the cleaner checks the store's size")
	fl.DurationVar(&f.ttl, "manifest-ttl", cache.DefaultManifestTTL, "how long a tag is served before one upstream HEAD checks it")
	fl.StringVar(&f.pullSecret, "pull-secret", "", `upstream credentials: {"auths": {"quay.io": {"auth": "..."}}} (docker config.json or a Kubernetes pull secret); its registries become upstreams`)
	fl.StringArrayVar(&f.upstreams, "upstream", nil, "NAME=URL: pull /v2/NAME/... from URL (repeatable), e.g. src.test=http://127.0.0.1:5000")
	fl.StringArrayVar(&f.ignore, "ignore-registry", nil, "do not serve this default upstream (docker.io or a --pull-secret registry; repeatable)")
	f.listenFlags.register(cmd)
	fl.StringArrayVar(&f.caCerts, "ca-cert", nil, "trust this PEM CA certificate for upstreams (repeatable)")
	fl.StringVar(&f.certsDir, "certs-dir", "", "docker certs.d layout for upstreams: DIR/<host[:port]>/ca.crt, client.cert, client.key")
	fl.StringVar(&f.store, "store", "", "keep blobs and manifests in object storage, s3://BUCKET/PREFIX, shared by every replica that names it (credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance role); --dir keeps this replica's tags")
	fl.StringVar(&f.s3Endpoint, "s3-endpoint", "", "URL of a non-AWS S3 server (path-style), e.g. https://minio.corp:9000; plain http for loopback only (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL)")
	fl.BoolVar(&f.s3Redirect, "s3-redirect", false, "with --store: answer a GET of a stored blob with a redirect to a presigned URL (valid 15 minutes), so clients that follow it read the bytes from the object store; clients must reach the S3 endpoint")
	fl.DurationVar(&f.accessFlush, "s3-access-flush", cache.DefaultAccessFlushEvery, "with --store: how often a replica writes the access times it recorded (one object per batch), for the cleaner's LRU")
	fl.BoolVar(&f.insecure, "insecure-skip-tls-verify", false, "do not verify upstream certificates (tests only)")
	fl.BoolVar(&e.json, "json", false, "print a JSON line on stdout when listening, a JSON summary on exit, and an {\"error\": ...} line on failure")
	return cmd
}

func runCache(cmd *cobra.Command, e *env, f *cacheFlags) error {
	opts, err := f.options(e)
	if err != nil {
		return err
	}
	c, err := cache.New(opts)
	if errors.Is(err, cache.ErrConfig) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		c.Close()
		return fmt.Errorf("listening on %s: %w", f.addr, err)
	}
	names := make([]string, 0, len(opts.Upstreams))
	for n := range opts.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	scheme := "http"
	if f.tlsCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(e.stderr, "serving on %s (%s, upstreams %s, store %s of %s)\n", ln.Addr(), scheme,
		strings.Join(names, ", "), units.Bytes(c.Size()), units.Bytes(opts.MaxSize))
	if e.json {
		_ = json.NewEncoder(e.stdout).Encode(map[string]any{"event": "listening", "addr": ln.Addr().String(),
			"scheme": scheme, "upstreams": names, "dir": opts.Dir, "store": f.store, "max_size": opts.MaxSize, "store_size": c.Size()})
	}
	done := make(chan struct{})
	go func() { c.Run(cmd.Context()); close(done) }()
	err = serve.Serve(cmd.Context(), ln, serve.AccessLog(c, opts.Logger), serve.ServerConfig{
		TLSCertFile: f.tlsCert, TLSKeyFile: f.tlsKey, Logger: opts.Logger,
	})
	c.Close() // requests are done (or out of grace): end the downloads
	if err != nil {
		return err
	}
	<-done
	s := c.Metrics().Snapshot()
	if e.json {
		_ = json.NewEncoder(e.stdout).Encode(map[string]any{"event": "stopped", "hits": s.Hits, "misses": s.Misses,
			"stale": s.Stale, "upstream_bytes": s.BytesUpstream, "served_bytes": s.BytesServed,
			"evicted_blobs": s.EvictedBlobs, "evicted_manifests": s.EvictedManifests, "store_size": c.Size()})
	}
	fmt.Fprintf(e.stderr, "shut down: %d hits, %d misses, %s from upstreams\n", s.Hits, s.Misses, units.Bytes(s.BytesUpstream))
	return nil
}

// options checks the flags and builds the cache's options.
func (f *cacheFlags) options(e *env) (cache.Options, error) {
	var o cache.Options
	if f.dir == "" {
		return o, usagef("--dir is required: where the cache keeps its store")
	}
	if f.maxSize == "" {
		return o, usagef("--max-size is required, e.g. --max-size 10GiB")
	}
	if err := checkListenAddr(f.addr); err != nil {
		return o, err
	}
	if fi, err := os.Stat(f.dir); err == nil && !fi.IsDir() {
		return o, usagef("--dir %s is a file: give a directory (it is created if missing)", f.dir)
	}
	max, err := units.ParseBytes(f.maxSize)
	if err != nil {
		return o, usagef("--max-size: %v", err)
	}
	if f.threshold < 0 || f.threshold > 1000 {
		return o, usagef("--threshold %d: want a percentage from 0 to 1000", f.threshold)
	}
	if f.cleanEvery <= 0 || f.ttl <= 0 {
		return o, usagef("--clean-every and --manifest-ttl must be positive")
	}
	log, auth, err := f.load(e)
	if err != nil {
		return o, err
	}
	o = cache.Options{Dir: f.dir, MaxSize: max, Threshold: f.threshold, CleanEvery: f.cleanEvery,
		ManifestTTL: f.ttl, Logger: log, Auth: auth}
	if f.threshold == 0 {
		o.Threshold = -1 // explicit 0: evict as soon as the store passes --max-size
	}
	if f.store != "" {
		loc, err := objstore.ParseLocation(f.store)
		if err != nil {
			return o, usagef("--store: %v", err)
		}
		if o.Objects, err = objstore.Open(loc, objstore.Options{Endpoint: f.s3Endpoint}); err != nil {
			return o, usagef("--store: %v", err)
		}
		if f.accessFlush <= 0 {
			return o, usagef("--s3-access-flush must be positive")
		}
		o.AccessFlushEvery = f.accessFlush
		if f.s3Redirect {
			o.Redirect = cache.DefaultRedirect
		}
	} else if f.s3Endpoint != "" || f.s3Redirect {
		return o, usagef("--s3-endpoint and --s3-redirect need --store s3://BUCKET/PREFIX")
	}
	o.Upstreams, err = f.upstreamSet(e)
	return o, err
}

// checkListenAddr refuses an --addr that cannot be listened on whatever
// the machine (a port out of range, no port), so that it is exit 2 before
// anything starts; an address in use stays a failure (exit 1).
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--addr %q: want HOST:PORT, e.g. 127.0.0.1:5000 or :5000", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return usagef("--addr %q: the port must be a number from 0 to 65535 (0: any free port) or a service name", addr)
	}
	return nil
}

var upstreamNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.:_-]*$`)

// upstreamSet: docker.io, the pull secret's registries, then --upstream,
// minus --ignore-registry.
func (f *cacheFlags) upstreamSet(e *env) (map[string]cache.Upstream, error) {
	client, err := registry.New(registry.Options{
		UserAgent: "ferry/" + version, CACertFiles: f.caCerts, CertsDir: f.certsDir,
		InsecureSkipVerify: f.insecure, Logger: e.logger(),
		// A cache answers clients: a down upstream must fail fast so that
		// stored tags are served (stale) at once.
		Retry: registry.RetryPolicy{Attempts: 2, Base: 200 * time.Millisecond, MaxWait: 5 * time.Second},
	})
	if err != nil {
		return nil, err
	}
	kc, err := registry.NewKeychain(f.pullSecret)
	if err != nil {
		return nil, err
	}
	urls := map[string]string{cache.DockerHubName: "https://registry-1.docker.io"}
	for _, h := range kc.Hosts() {
		if !names.IsDockerHub(h) && upstreamNameRE.MatchString(h) {
			urls[h] = "https://" + h
		}
	}
	for _, ig := range f.ignore {
		if names.IsDockerHub(ig) {
			ig = cache.DockerHubName
		}
		delete(urls, ig)
	}
	for _, u := range f.upstreams {
		n, target, ok := strings.Cut(u, "=")
		if !ok || !upstreamNameRE.MatchString(n) || target == "" {
			return nil, usagef("--upstream %q: want NAME=URL, NAME a host-like name (letters, digits, . : _ -)", u)
		}
		urls[n] = target
	}
	if len(urls) == 0 {
		return nil, usagef("no upstream left: give --upstream NAME=URL")
	}
	ups := map[string]cache.Upstream{}
	for n, target := range urls {
		up, err := cache.NewRegistryUpstream(client, kc, target)
		if err != nil {
			return nil, usageError{err}
		}
		ups[n] = up
	}
	return ups, nil
}
