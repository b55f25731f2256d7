package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/registry"
)

// manifestAccept is what a HEAD for a manifest accepts.
var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

// repoClient speaks the registry API for one repository through its
// authenticated handle, whose token (if any) covers its scopes.
type repoClient struct {
	host  string
	repo  string
	base  string // scheme://host
	hc    *registry.Repo
	retry *registry.Client // restarts blob uploads within its retry policy
}

// connect pings the target, declares every repository the run writes (so
// that one token covers them all), checks the credentials before anything
// moves, and detects Harbor.
func (p *pusher) connect(ctx context.Context) error {
	var first string
	for _, im := range p.live() {
		if first == "" {
			first = im.repo
		}
		p.host.Want(registry.Scope(im.repo, p.actions()))
	}
	scheme, err := p.host.Scheme(ctx)
	if err != nil {
		return fmt.Errorf("reaching registry %s: %w", p.tgt.Registry, err)
	}
	p.scheme = scheme
	if err := p.host.Check(ctx, registry.Scope(first, p.actions())); err != nil {
		return err
	}
	p.harbor = detectHarbor(ctx, p)
	p.sum.Harbor = p.harbor != nil // also when the run stops early
	if p.harbor != nil {
		if err := p.harbor.checkCredentials(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p *pusher) actions() string {
	if p.o.DryRun {
		return registry.Pull
	}
	return registry.PushPull
}

// checkPush proves push access before any upload: per project (first path
// segment), start an upload in its first repository and cancel it. Token
// services such as Harbor's hand out tokens without rights for bad
// credentials; this is where that shows.
func (p *pusher) checkPush(ctx context.Context) error {
	seen := map[string]bool{}
	var repos []string
	for _, im := range p.live() {
		if im.complete && slices.Equal(im.current, repeat(im.digest.String(), len(im.current))) {
			continue // nothing to write
		}
		if pr := project(im.repo); !seen[pr] {
			seen[pr] = true
			repos = append(repos, im.repo)
		}
	}
	for _, repo := range repos {
		rc, err := p.repo(ctx, repo)
		if err != nil {
			return err
		}
		loc, err := rc.startUpload(ctx)
		if err != nil {
			var (
				pe *HarborProjectError
				he *httpError
			)
			switch {
			case errors.As(err, &pe):
				return err
			case isRefusal(err): // a proxy-cache project Harbor's API did not show (harbor_refusals.go); before the 403 below
				p.failProject(project(repo), p.refusalErr(project(repo), err, 0, ""))
				continue
			case errors.As(err, &he) && (he.status == http.StatusForbidden || he.status == http.StatusUnauthorized && p.host.User() != ""):
				// The credentials passed (connect checked them: a Bearer
				// registry's token exchange, Harbor's API), so a refusal
				// here is about the right to push.
				return &PushDeniedError{Registry: p.tgt.Registry, Repo: repo, Who: p.host.Who(), Harbor: p.harbor != nil, Err: err}
			}
			return fmt.Errorf("checking push access to %s/%s as %s before uploading: %w", p.tgt.Registry, repo, p.host.Who(), err)
		}
		rc.cancelUpload(ctx, loc)
	}
	return nil
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// repo returns the client for repo (scope push,pull; pull in a dry run).
func (p *pusher) repo(ctx context.Context, repo string) (*repoClient, error) {
	return p.client(ctx, repo, []string{registry.Scope(repo, p.actions())})
}

// mountClient returns a client for repo whose token also allows pulling
// from, as a cross-repository mount needs.
func (p *pusher) mountClient(ctx context.Context, repo, from string) (*repoClient, error) {
	return p.client(ctx, repo, []string{registry.Scope(repo, registry.PushPull), registry.Scope(from, registry.Pull)})
}

func (p *pusher) client(ctx context.Context, repo string, scopes []string) (*repoClient, error) {
	r, err := p.host.Repo(ctx, repo, scopes...)
	if err != nil {
		return nil, fmt.Errorf("authenticating to %s for %s: %w", p.tgt.Registry, repo, err)
	}
	return &repoClient{host: p.tgt.Registry, repo: repo, base: p.scheme + "://" + p.tgt.Registry, hc: r, retry: p.o.Client}, nil
}

func (c *repoClient) url(path string) string { return c.base + "/v2/" + c.repo + path }

// httpError is a registry error response with its (capped) body, so that
// quota and Harbor messages can be recognised.
type httpError struct {
	status int
	body   string
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

// do sends req and returns the response if its status is one of ok;
// otherwise an error naming registry, request and status.
func (c *repoClient) do(req *http.Request, ok ...int) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, registry.Explain(err)
	}
	for _, code := range ok {
		if resp.StatusCode == code {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, registry.MaxErrorBody))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	herr := &httpError{status: resp.StatusCode, body: string(body), err: registry.Explain(transport.CheckError(resp))}
	low := strings.ToLower(herr.body)
	if resp.StatusCode == http.StatusUnauthorized && strings.Contains(low, "project") && strings.Contains(low, "not found") {
		return nil, &HarborProjectError{Registry: c.host, Project: project(c.repo), Err: herr}
	}
	return nil, herr
}

// drain reads what is left of a response (capped) and closes it.
func drain(resp *http.Response) { registry.Drain(resp) }

// head sends a HEAD; a 401 has no body to explain it (Harbor's "project
// X not found"), so it is asked again as a GET whose error body is read.
func (c *repoClient) head(ctx context.Context, path string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.url(path), nil)
	if err != nil {
		return nil, err
	}
	maps.Copy(req.Header, hdr)
	resp, err := c.do(req, http.StatusOK, http.StatusNotFound)
	var he *httpError
	if err == nil || !errors.As(err, &he) || he.status != http.StatusUnauthorized || strings.TrimSpace(he.body) != "" {
		return resp, err
	}
	req, gerr := http.NewRequestWithContext(ctx, http.MethodGet, c.url(path), nil)
	if gerr != nil {
		return nil, err
	}
	maps.Copy(req.Header, hdr)
	resp, gerr = c.do(req, http.StatusOK, http.StatusNotFound)
	if gerr != nil {
		return nil, gerr
	}
	drain(resp)
	return nil, err // the GET worked: the HEAD's 401 stands
}

func (c *repoClient) headBlob(ctx context.Context, d v1.Hash) (bool, error) {
	resp, err := c.head(ctx, "/blobs/"+d.String(), nil)
	if err != nil {
		return false, err
	}
	drain(resp)
	return resp.StatusCode == http.StatusOK, nil
}

// headManifest returns the digest ref (a tag or digest) resolves to, and
// whether it exists.
func (c *repoClient) headManifest(ctx context.Context, ref string) (string, bool, error) {
	resp, err := c.head(ctx, "/manifests/"+ref, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return "", false, err
	}
	drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return "", false, nil
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" {
		return d, true, nil
	}
	// No digest header: read the manifest and hash it.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/manifests/"+ref), nil)
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err = c.do(req, http.StatusOK)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(resp.Body, bundle.MaxManifestSize)); err != nil {
		return "", false, fmt.Errorf("reading manifest %s:%s: %w", c.repo, ref, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), true, nil
}

// maxTagPages bounds how many pages of a tag list listTags follows.
const maxTagPages = 100

// listTags returns the repository's tags, following the Link header of a
// paginated list; a repository that does not exist has none (404).
func (c *repoClient) listTags(ctx context.Context) (map[string]bool, error) {
	tags := map[string]bool{}
	next := c.url("/tags/list")
	for page := 0; next != "" && page < maxTagPages; page++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.do(req, http.StatusOK, http.StatusNotFound)
		if err != nil {
			return nil, err
		}
		var list struct {
			Tags []string `json:"tags"`
		}
		if resp.StatusCode == http.StatusOK {
			err = json.NewDecoder(io.LimitReader(resp.Body, maxTagListPage)).Decode(&list)
		}
		drain(resp)
		if err != nil {
			return nil, fmt.Errorf("reading the tag list of %s/%s: %w", c.host, c.repo, err)
		}
		for _, t := range list.Tags {
			tags[t] = true
		}
		next, err = nextPage(resp)
		if err != nil {
			return nil, err
		}
	}
	if next != "" {
		return nil, fmt.Errorf("the tag list of %s/%s has more than %d pages", c.host, c.repo, maxTagPages)
	}
	return tags, nil
}

// maxTagListPage bounds one page of a tag list.
const maxTagListPage = 16 << 20

// nextPage returns the URL of the Link header's rel="next", or "".
func nextPage(resp *http.Response) (string, error) {
	for _, link := range resp.Header.Values("Link") {
		for _, part := range strings.Split(link, ",") {
			target, params, ok := strings.Cut(part, ";")
			if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				continue
			}
			target = strings.Trim(strings.TrimSpace(target), "<>")
			u, err := resp.Request.URL.Parse(target)
			if err != nil {
				return "", fmt.Errorf("registry %s: bad Link header: %w", resp.Request.URL.Host, err)
			}
			return u.String(), nil
		}
	}
	return "", nil
}

// mount asks for a cross-repository mount of d from another repository.
// It returns mounted=true on 201; on 202 the registry opened an upload
// instead and loc is its location.
func (c *repoClient) mount(ctx context.Context, d v1.Hash, from string) (mounted bool, loc string, err error) {
	q := url.Values{"mount": {d.String()}, "from": {from}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/blobs/uploads/?"+q.Encode()), nil)
	if err != nil {
		return false, "", err
	}
	resp, err := c.do(req, http.StatusCreated, http.StatusAccepted)
	if err != nil {
		return false, "", err
	}
	drain(resp)
	if resp.StatusCode == http.StatusCreated {
		return true, "", nil
	}
	loc, err = location(resp)
	return false, loc, err
}

func (c *repoClient) startUpload(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/blobs/uploads/"), nil)
	if err != nil {
		return "", err
	}
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	drain(resp)
	return location(resp)
}

func location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("registry %s: %s %s: %d without a Location header", resp.Request.URL.Host, resp.Request.Method, resp.Request.URL.Path, resp.StatusCode)
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("registry %s: bad upload location: %w", resp.Request.URL.Host, err)
	}
	return u.String(), nil
}

func (c *repoClient) cancelUpload(ctx context.Context, loc string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, loc, nil)
	if err != nil {
		return
	}
	resp, err := c.hc.Do(req)
	if err == nil {
		drain(resp)
	}
}

// putBlob finishes the upload at loc with the whole blob in one PUT,
// streamed from the source (open is called for every send). A PUT cut by a
// connection fault or a retryable status, or whose source bytes did not
// match their digest, starts over in a new upload session: the registry
// may have kept part of the body in the old one, so sending the PUT there
// again would fail. Restarts follow the client's retry budget and backoff.
func (c *repoClient) putBlob(ctx context.Context, loc string, d v1.Hash, size int64, open func() (readCloser, error)) error {
	tries := 0
	return c.retry.Retry(ctx, "upload of blob "+d.String()+" to "+c.host+"/"+c.repo, func() error {
		if tries++; tries > 1 {
			c.cancelUpload(ctx, loc) // best effort: the registry expires it anyway
			var err error
			if loc, err = c.startUpload(ctx); err != nil {
				return err
			}
		}
		return c.putBlobOnce(ctx, loc, d, size, open)
	})
}

func (c *repoClient) putBlobOnce(ctx context.Context, loc string, d v1.Hash, size int64, open func() (readCloser, error)) error {
	u, err := url.Parse(loc)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	body, err := open()
	if err != nil {
		return err
	}
	// Sent once by the transport: a retry must open a new session (above).
	req, err := http.NewRequestWithContext(registry.SingleAttempt(ctx), http.MethodPut, u.String(), body)
	if err != nil {
		_ = body.Close()
		return err
	}
	req.ContentLength = size
	// The Bearer transport sends the same request again after refreshing
	// an expired token; that re-send needs the body from its start.
	req.GetBody = func() (io.ReadCloser, error) { return open() }
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// putManifest uploads data byte for byte under ref (a digest or a tag).
func (c *repoClient) putManifest(ctx context.Context, ref string, data []byte, mt string, want v1.Hash) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/manifests/"+ref), bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mt)
	resp, err := c.do(req, http.StatusCreated, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return err
	}
	drain(resp)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != want.String() {
		return fmt.Errorf("registry %s stored %s:%s as %s, expected %s", c.host, c.repo, ref, got, want)
	}
	return nil
}

// projects returns the distinct projects of the live images, sorted.
func (p *pusher) projects() []string {
	set := map[string]bool{}
	for _, im := range p.live() {
		set[project(im.repo)] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
