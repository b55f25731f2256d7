package chart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"
)

// Repo reads a classic Helm repository (index.yaml and .tgz files over
// HTTP).
type Repo struct {
	// URL is the repository's base URL (http:// or https://).
	URL string
	// Transport carries every request; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Username and Password, when set, are sent as basic auth to the
	// repository's own host only (as helm does without --pass-credentials).
	Username, Password string
}

// Fetched is one chart version read from a classic repository and checked.
type Fetched struct {
	Name, Version string
	URL           string // where the .tgz came from, without credentials
	Archive       []byte // the .tgz exactly as served
	Prov          []byte // the .prov file; nil when the repository has none
	Created       time.Time
}

// indexFile is the part of index.yaml ferry reads.
type indexFile struct {
	Entries map[string][]indexEntry `yaml:"entries"`
}

type indexEntry struct {
	Name    string    `yaml:"name"`
	Version string    `yaml:"version"`
	URLs    []string  `yaml:"urls"`
	Digest  string    `yaml:"digest"`
	Created time.Time `yaml:"created"`
}

// Fetch downloads the highest version of chart name satisfying constraint
// (an exact version or a semver range), checks it against the index's
// digest and loads it with Helm's loader.
func (r *Repo) Fetch(ctx context.Context, name, constraint string) (*Fetched, error) {
	idx, err := r.index(ctx)
	if err != nil {
		return nil, err
	}
	e, err := pick(idx.Entries[name], name, constraint)
	if err != nil {
		return nil, fmt.Errorf("chart %s in %s: %w", name, r.URL, err)
	}
	what := fmt.Sprintf("chart %s %s from %s", name, e.Version, r.URL)
	if len(e.URLs) == 0 {
		return nil, fmt.Errorf("%s: the index lists no URL", what)
	}
	u, err := r.resolve(e.URLs[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	tgz, err := r.get(ctx, u, MaxArchiveSize, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if e.Digest != "" {
		sum := sha256.Sum256(tgz)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(strings.TrimPrefix(e.Digest, "sha256:"), got) {
			return nil, fmt.Errorf("%s: %w: index says %s, archive is sha256:%s", what, ErrDigestMismatch, clip(e.Digest), got)
		}
	}
	if _, err := Load(tgz, name, e.Version); err != nil {
		return nil, fmt.Errorf("%s: %w", r.URL, err)
	}
	prov, err := r.get(ctx, u+".prov", MaxProvSize, true)
	if err != nil {
		return nil, fmt.Errorf("%s: provenance: %w", what, err)
	}
	return &Fetched{Name: name, Version: e.Version, URL: redact(u), Archive: tgz, Prov: prov, Created: e.Created}, nil
}

func (r *Repo) index(ctx context.Context) (*indexFile, error) {
	u := strings.TrimSuffix(r.URL, "/") + "/index.yaml"
	data, err := r.get(ctx, u, MaxIndexSize, false)
	if err != nil {
		return nil, fmt.Errorf("helm repository %s: %w", r.URL, err)
	}
	var idx indexFile
	if err := yaml.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("helm repository %s: index.yaml: %w", r.URL, err)
	}
	return &idx, nil
}

// pick returns the entry matching constraint: the exact version when one is
// written so, else the highest version in the range.
func pick(entries []indexEntry, name, constraint string) (*indexEntry, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: the repository has no chart %q", ErrNoVersion, name)
	}
	for i := range entries {
		if entries[i].Version == constraint {
			return &entries[i], nil
		}
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", constraint, err)
	}
	var best *indexEntry
	var bestV *semver.Version
	for i := range entries {
		v, err := semver.NewVersion(entries[i].Version)
		if err != nil || !c.Check(v) {
			continue
		}
		if bestV == nil || v.GreaterThan(bestV) {
			best, bestV = &entries[i], v
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no version of %q satisfies %q", ErrNoVersion, name, constraint)
	}
	return best, nil
}

// resolve makes a chart URL from the index absolute (relative URLs are
// relative to the repository URL).
func (r *Repo) resolve(ref string) (string, error) {
	base, err := url.Parse(strings.TrimSuffix(r.URL, "/") + "/")
	if err != nil {
		return "", err
	}
	u, err := base.Parse(ref)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("chart URL %q in the index is not an http(s) URL", clip(ref))
	}
	return u.String(), nil
}

// get reads u, at most limit bytes. With optional, a 404 gives nil, nil.
func (r *Repo) get(ctx context.Context, u string, limit int64, optional bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if r.Username != "" || r.Password != "" {
		if base, err := url.Parse(r.URL); err == nil && base.Host == req.URL.Host {
			req.SetBasicAuth(r.Username, r.Password)
		}
	}
	rt := r.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redact(u), err)
	}
	defer resp.Body.Close()
	if optional && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden) {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (give credentials for the repository's host with --auth-file or docker login)"
		}
		return nil, fmt.Errorf("GET %s: %s%s", redact(u), resp.Status, hint)
	}
	var b bytes.Buffer
	n, err := io.Copy(&b, io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redact(u), err)
	}
	if n > limit {
		return nil, fmt.Errorf("GET %s: more than %d bytes", redact(u), limit)
	}
	return b.Bytes(), nil
}

// redact drops credentials from a URL.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return clip(u)
	}
	p.User = nil
	return p.String()
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
