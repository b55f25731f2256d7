package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ferry-airgap/ferry/internal/defaults"
	"github.com/ferry-airgap/ferry/internal/names"
)

// Options configure the one transport all ferry commands share.
type Options struct {
	UserAgent          string      // "ferry/<version>"; "" = "ferry"
	CACertFiles        []string    // --ca-cert (PEM), added to the system roots
	CertsDir           string      // --certs-dir: DIR/<host[:port]>/{ca.crt,*.crt,client.cert+client.key}
	InsecureSkipVerify bool        // --insecure-skip-tls-verify, for every host
	PlainHTTP          bool        // --plain-http: force http for every registry
	Retry              RetryPolicy // zero fields take the defaults below
	Logger             *slog.Logger
}

// RetryPolicy bounds the transport's retries. Zero values mean the defaults:
// 5 attempts in all, a 500ms base for exponential backoff, and 60s as the
// longest single wait (backoff or Retry-After).
type RetryPolicy struct {
	Attempts int           // total tries per request, including the first; 1 = no retry
	Base     time.Duration // first backoff; doubled per attempt, with jitter
	MaxWait  time.Duration // longest single wait; a longer Retry-After fails at once
}

// DefaultJobs is how many transfers run in parallel when a command's
// --jobs (or a library's Jobs option) is not set.
const DefaultJobs = defaults.Jobs

// Defaults for RetryPolicy.
const (
	DefaultAttempts = 5
	DefaultBase     = 500 * time.Millisecond
	DefaultMaxWait  = 60 * time.Second
)

// HostConfig holds settings for one host that come from a mapping file.
type HostConfig struct {
	SkipTLSVerify bool // dregsy's skip-tls-verify
	PlainHTTP     bool // speak http to this host (an upstream given as http://)
}

// Client owns the HTTP transport (TLS, retries, User-Agent) and hands out
// go-containerregistry options that use it. It is safe for concurrent use.
type Client struct {
	opts  Options
	ua    string
	log   *slog.Logger
	roots *x509.CertPool // system roots + CACertFiles
	rt    *roundTripper

	mu         sync.Mutex
	hosts      map[string]HostConfig
	registries map[string]bool // hosts ferry talks to as registries (not token realms)
	transports map[string]*http.Transport
	conns      map[string]*Host // by canonical host and credential

	rlMu          sync.Mutex
	rateRemaining map[string]int // last ratelimit-remaining per host

	// seams for tests
	sleep  func(ctx context.Context, d time.Duration) error
	now    func() time.Time
	jitter func(d time.Duration) time.Duration
}

// New validates opts, loads the CA files and returns a Client.
func New(opts Options) (*Client, error) {
	if opts.Retry.Attempts < 0 || opts.Retry.Base < 0 || opts.Retry.MaxWait < 0 {
		return nil, fmt.Errorf("%w: negative retry policy %+v", ErrConfig, opts.Retry)
	}
	if opts.Retry.Attempts == 0 {
		opts.Retry.Attempts = DefaultAttempts
	}
	if opts.Retry.Base == 0 {
		opts.Retry.Base = DefaultBase
	}
	if opts.Retry.MaxWait == 0 {
		opts.Retry.MaxWait = DefaultMaxWait
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "ferry"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	roots, err := loadRoots(opts.CACertFiles)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts:          opts,
		ua:            opts.UserAgent,
		log:           log,
		roots:         roots,
		hosts:         map[string]HostConfig{},
		registries:    map[string]bool{},
		transports:    map[string]*http.Transport{},
		conns:         map[string]*Host{},
		rateRemaining: map[string]int{},
		sleep:         sleepCtx,
		now:           time.Now,
		jitter:        equalJitter,
	}
	c.rt = &roundTripper{c: c}
	return c, nil
}

// Configure sets host-level settings (from a mapping file) for host.
// Docker Hub's aliases are one host.
func (c *Client) Configure(host string, hc HostConfig) {
	h := canonicalHost(host)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.hosts[h]; ok && old == hc {
		return // unchanged: keep the host's connections (sync calls this every round)
	}
	c.hosts[h] = hc
	if t, ok := c.transports[h]; ok {
		t.CloseIdleConnections()
		delete(c.transports, h)
	}
}

// hostConfig returns the settings Configure gave host.
func (c *Client) hostConfig(host string) HostConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[canonicalHost(host)]
}

// Transport returns the client's RoundTripper (TLS, retries, User-Agent) for
// callers that speak HTTP to a registry directly, e.g. Harbor's API.
func (c *Client) Transport() http.RoundTripper { return c.rt }

// RemoteOptions returns go-containerregistry options for talking to host with
// auth (nil = anonymous), with ctx attached. go-containerregistry's own retries
// are switched off: the transport retries, once, for every request.
func (c *Client) RemoteOptions(ctx context.Context, host string, auth authn.Authenticator) []remote.Option {
	c.register(host)
	if auth == nil {
		auth = authn.Anonymous
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(c.rt),
		// One layer of retries: ours. ggcr wraps any transport that is not a
		// *transport.Wrapper in its retry transport and retries whole blob
		// uploads with the same predicate; make both a single attempt.
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
	}
}

// NameOptions returns options for name.ParseReference & co: name.Insecure
// when plain http applies to host (--plain-http, or a loopback host).
func (c *Client) NameOptions(host string) []name.Option {
	c.register(host)
	if c.opts.PlainHTTP || isLoopback(canonicalHost(host)) {
		return []name.Option{name.Insecure}
	}
	return nil
}

// CheckAuth verifies auth against reg before any blob moves, through the
// registry's one Host for that credential: see Host.Check. Rejected
// credentials give an *AuthError (errors.Is ErrUnauthorized); TLS failures
// are errors.Is ErrTLS.
func (c *Client) CheckAuth(ctx context.Context, reg name.Registry, auth authn.Authenticator, scope string) error {
	h, err := c.Host(reg.RegistryStr(), auth)
	if err != nil {
		return err
	}
	return h.Check(ctx, scope)
}

func authFailure(host, user string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		var codes []string
		for _, d := range te.Errors {
			codes = append(codes, string(d.Code))
		}
		return &AuthError{Registry: host, User: user, Status: te.StatusCode, Detail: strings.Join(codes, ", ")}
	}
	return Explain(err)
}

// errorDetail reads a capped error body and returns its registry error codes.
func errorDetail(resp *http.Response) string {
	err := transport.CheckError(resp) // reads at most 64 KiB
	var te *transport.Error
	if !errors.As(err, &te) {
		return ""
	}
	var codes []string
	for _, d := range te.Errors {
		codes = append(codes, string(d.Code))
	}
	return strings.Join(codes, ", ")
}

func (c *Client) register(host string) {
	h := canonicalHost(host)
	c.mu.Lock()
	c.registries[h] = true
	c.mu.Unlock()
}

func (c *Client) isRegistry(h string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registries[h]
}

// DockerHub is the canonical name ferry uses for Docker Hub (internal/names).
const DockerHub = names.DockerHub

// canonicalHost is the key under which host settings, connections and
// credentials are kept: names.CanonicalHost, so that every Docker Hub alias
// and a default https port name one host.
func canonicalHost(host string) string { return names.CanonicalHost(host) }

// isLoopback: localhost, 127.0.0.0/8, ::1 (docker's implicit insecure set).
func isLoopback(h string) bool {
	hostOnly := h
	if hh, _, err := net.SplitHostPort(h); err == nil {
		hostOnly = hh
	}
	hostOnly = strings.Trim(hostOnly, "[]")
	if hostOnly == "localhost" {
		return true
	}
	ip := net.ParseIP(hostOnly)
	return ip != nil && ip.IsLoopback()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
