// Package source reads from the source registries of mapping-file tasks:
// it chooses credentials in ferry's order, keeps one authenticated
// transport per repository and fetches blobs with plain GETs. Export and
// sync share it, so both read upstream the same way.
package source

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
)

// Puller reads source repositories on behalf of tasks. The zero value is
// not usable: set Client and Keychain. Safe for concurrent use.
type Puller struct {
	Client   *registry.Client
	Keychain *registry.Keychain
	// Username and Password (--username, --password-stdin) win over every
	// other credential source for the tasks' source registries.
	Username, Password string
	// Mirrors maps a canonical source registry to the host to fetch from.
	Mirrors map[string]string
	Jobs    int

	mu         sync.Mutex
	transports map[string]*cachedTransport // by repository
}

type cachedTransport struct {
	once sync.Once
	rt   http.RoundTripper
	err  error
}

// Host returns the canonical host of t's source registry.
func Host(t *mapping.Task) string {
	host, _, _ := strings.Cut(mapping.CanonicalRegistry(t.Source.Registry), "/")
	return host
}

// Auth returns the credentials for reading host on behalf of t: the flags
// or the task's own auth when host is its source registry, else the
// keychain.
func (p *Puller) Auth(host string, t *mapping.Task) (authn.Authenticator, error) {
	if p.Username != "" && t != nil && mapping.CanonicalRegistry(host) == Host(t) {
		return authn.FromConfig(authn.AuthConfig{Username: p.Username, Password: p.Password}), nil
	}
	if t != nil && t.Source.Auth != nil && mapping.CanonicalRegistry(host) == Host(t) {
		a := t.Source.Auth
		if a.Anonymous {
			return authn.Anonymous, nil
		}
		return authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password}), nil
	}
	return p.Keychain.Resolve(host)
}

// Transport returns an authenticated transport for reading repo, made
// once per repository: the ping and token exchange happen once, not once
// per request.
func (p *Puller) Transport(ctx context.Context, repo name.Repository, t *mapping.Task) (http.RoundTripper, error) {
	key := repo.Name()
	p.mu.Lock()
	if p.transports == nil {
		p.transports = map[string]*cachedTransport{}
	}
	c, ok := p.transports[key]
	if !ok {
		c = &cachedTransport{}
		p.transports[key] = c
	}
	p.mu.Unlock()
	c.once.Do(func() {
		host := repo.RegistryStr()
		auth, err := p.Auth(host, t)
		if err != nil {
			c.err = err
			return
		}
		c.rt, c.err = transport.NewWithContext(ctx, repo.Registry, auth, p.Client.Transport(), []string{repo.Scope(transport.PullScope)})
		if c.err != nil {
			c.err = fmt.Errorf("connecting to %s for %s: %w", host, repo.RepositoryStr(), registry.Explain(c.err))
		}
	})
	return c.rt, c.err
}

// RemoteOptions returns go-containerregistry options that read repo
// through its authenticated transport.
func (p *Puller) RemoteOptions(ctx context.Context, repo name.Repository, t *mapping.Task) ([]remote.Option, error) {
	rt, err := p.Transport(ctx, repo, t)
	if err != nil {
		return nil, err
	}
	jobs := p.Jobs
	if jobs < 1 {
		jobs = 4
	}
	opts := p.Client.RemoteOptions(ctx, repo.RegistryStr(), authn.Anonymous)
	// The authenticated transport is a *transport.Wrapper: go-containerregistry
	// uses it as is, with no second round of retries or token exchange.
	return append(opts, remote.WithTransport(rt), remote.WithJobs(jobs)), nil
}

// Blob starts a plain GET of blob d from repo and returns the response
// body, unchecked: the caller verifies size and digest as bytes stream.
// what names the image in errors.
func (p *Puller) Blob(ctx context.Context, repo name.Repository, t *mapping.Task, d v1.Hash, what string) (io.ReadCloser, error) {
	host := repo.RegistryStr()
	rt, err := p.Transport(ctx, repo, t)
	if err != nil {
		return nil, err
	}
	u := url.URL{Scheme: repo.Scheme(), Host: host, Path: "/v2/" + repo.RepositoryStr() + "/blobs/" + d.String()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s of %s from %s: %w", d, what, host, registry.Explain(err))
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("fetching blob %s of %s from %s: %w", d, what, host, registry.Explain(err))
	}
	return resp.Body, nil
}

// CheckCredentials proves every set of source credentials before anything
// moves, so that a wrong password fails at once, naming the registry.
func (p *Puller) CheckCredentials(ctx context.Context, tasks []*mapping.Task) error {
	type key struct{ host, user string }
	checked := map[key]bool{}
	for _, t := range tasks {
		if t.CheckSource() != nil || len(t.Mappings) == 0 {
			continue
		}
		host := Host(t)
		if m, ok := p.Mirrors[host]; ok {
			host = m
		}
		auth, err := p.Auth(host, t)
		if err != nil {
			return fmt.Errorf("credentials for %s: %w", host, err)
		}
		if auth == authn.Anonymous {
			continue
		}
		cfg, err := auth.Authorization()
		if err != nil {
			return fmt.Errorf("credentials for %s: %w", host, err)
		}
		k := key{host, cfg.Username}
		if checked[k] {
			continue
		}
		checked[k] = true
		reg, err := name.NewRegistry(host, p.Client.NameOptions(host)...)
		if err != nil {
			return fmt.Errorf("registry %q: %w", host, err)
		}
		repo, err := t.SourceRepository(t.Mappings[0])
		if err != nil {
			return err
		}
		_, path, _ := strings.Cut(repo, "/")
		if err := p.Client.CheckAuth(ctx, reg, auth, "repository:"+path+":pull"); err != nil {
			return fmt.Errorf("task %q: %w", t.Name, err)
		}
	}
	return nil
}
