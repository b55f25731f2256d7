package inventory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/registry"
)

// manifestAccept is what HEAD and GET of a manifest accept.
var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

// maxTagPage bounds one page of a tag list read into memory.
const maxTagPage = 16 << 20

// maxDepth bounds nested indexes.
const maxDepth = 4

// repository records one target repository: its tags, then every manifest
// and blob they reference. A repository that does not exist has no tags.
func (w *walker) repository(ctx context.Context, target string) (*Repository, error) {
	path := w.tgt.Repository(target)
	rc, err := w.host.Repo(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("repository %s/%s: %w", w.tgt.Registry, path, err)
	}
	r := &Repository{Target: target, Tags: map[string]string{}}
	tags, err := listTags(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("listing tags of %s/%s: %w", w.tgt.Registry, path, err)
	}
	for _, tag := range tags {
		if !names.ValidTag(tag) {
			continue // not a tag anything can push or pull
		}
		d, ok, err := headManifest(ctx, rc, tag)
		if err != nil {
			return nil, fmt.Errorf("reading tag %s/%s:%s: %w", w.tgt.Registry, path, tag, err)
		}
		if ok { // a tag deleted since the list is not held
			r.Tags[tag] = d
		}
	}
	seen := map[string]bool{}
	for _, d := range r.Tags {
		if err := w.collect(ctx, rc, d, 0, seen, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// collect adds manifest d and everything it references to r.
func (w *walker) collect(ctx context.Context, rc *registry.Repo, d string, depth int, seen map[string]bool, r *Repository) error {
	if seen[d] {
		return nil
	}
	seen[d] = true
	if depth > maxDepth {
		return fmt.Errorf("manifest %s in %s: indexes nested more than %d deep", d, rc.Name(), maxDepth)
	}
	r.Manifests = append(r.Manifests, d)
	m, err := w.manifest(ctx, rc, d)
	if err != nil {
		return err
	}
	r.Blobs = append(r.Blobs, m.blobs...)
	for _, c := range m.manifests {
		if err := w.collect(ctx, rc, c, depth+1, seen, r); err != nil {
			return err
		}
	}
	return nil
}

// manifest reads manifest d's references: fetched from rc the first time
// any repository asks for d.
func (w *walker) manifest(ctx context.Context, rc *registry.Repo, d string) (*walked, error) {
	w.mu.Lock()
	m, ok := w.seen[d]
	if !ok {
		m = &walked{}
		w.seen[d] = m
	}
	w.mu.Unlock()
	m.once.Do(func() { m.manifests, m.blobs, m.err = fetchRefs(ctx, rc, d) })
	return m, m.err
}

// fetchRefs GETs manifest d, checks its digest and returns what it
// references: child manifests, and configs and layers (foreign layers,
// which registries do not hold, left out).
func fetchRefs(ctx context.Context, rc *registry.Repo, d string) (manifests, blobs []string, err error) {
	data, mt, err := getManifest(ctx, rc, d)
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifest %s@%s: %w", rc.Name(), d, err)
	}
	refs, err := oci.Refs(mt, data)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s@%s: %w", rc.Name(), d, err)
	}
	for _, ref := range refs {
		switch {
		case oci.KindOf(ref.MediaType) != oci.KindUnknown:
			manifests = append(manifests, ref.Digest.String())
		case oci.IsForeign(ref):
		default:
			blobs = append(blobs, ref.Digest.String())
		}
	}
	return manifests, blobs, nil
}

func getManifest(ctx context.Context, rc *registry.Repo, d string) ([]byte, types.MediaType, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rc.URL("/manifests/"+d), nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := rc.Do(req)
	if err != nil {
		return nil, "", registry.Explain(err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, "", registry.Explain(err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, bundle.MaxManifestSize+1))
	if err != nil {
		return nil, "", err
	}
	if len(data) > bundle.MaxManifestSize {
		return nil, "", fmt.Errorf("larger than %d bytes", bundle.MaxManifestSize)
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != d {
		return nil, "", fmt.Errorf("the registry served content with digest %s", got)
	}
	mt := types.MediaType(strings.TrimSpace(strings.Split(resp.Header.Get("Content-Type"), ";")[0]))
	if oci.KindOf(mt) == oci.KindUnknown {
		if mt, err = oci.MediaTypeOf(data); err != nil {
			return nil, "", err
		}
	}
	return data, mt, nil
}

// headManifest returns the digest tag points at, and whether it exists.
func headManifest(ctx context.Context, rc *registry.Repo, tag string) (string, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, rc.URL("/manifests/"+tag), nil)
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := rc.Do(req)
	if err != nil {
		return "", false, registry.Explain(err)
	}
	registry.Drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return "", false, nil
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return "", false, registry.Explain(err)
	}
	d := resp.Header.Get("Docker-Content-Digest")
	if !strings.HasPrefix(d, "sha256:") {
		return "", false, fmt.Errorf("the registry gave no sha256 Docker-Content-Digest for the tag (got %q)", clip(d))
	}
	return d, true, nil
}

// listTags lists every tag of rc, following Link rel="next" pages. A
// repository that does not exist has none.
func listTags(ctx context.Context, rc *registry.Repo) ([]string, error) {
	var out []string
	next := rc.URL("/tags/list")
	for pages := 0; next != ""; pages++ {
		if pages > 10000 {
			return nil, fmt.Errorf("more than %d pages", pages)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		resp, err := rc.Do(req)
		if err != nil {
			return nil, registry.Explain(err)
		}
		tags, link, err := readTagPage(resp)
		if err != nil {
			return nil, err
		}
		out = append(out, tags...)
		next = nextPage(req.URL, link)
	}
	return out, nil
}

func readTagPage(resp *http.Response) ([]string, string, error) {
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, "", nil // NAME_UNKNOWN: the repository is not there (yet)
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, "", registry.Explain(err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTagPage+1))
	if err != nil {
		return nil, "", err
	}
	if len(data) > maxTagPage {
		return nil, "", fmt.Errorf("a tag list page larger than %d bytes", maxTagPage)
	}
	var page struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&page); err != nil {
		return nil, "", fmt.Errorf("the registry's tag list is not JSON: %w", err)
	}
	return page.Tags, resp.Header.Get("Link"), nil
}

// nextPage resolves a Link header's rel="next" URL against the request's;
// "" when there is none, or it points at another host.
func nextPage(base *url.URL, link string) string {
	if link == "" || !strings.Contains(link, `rel="next"`) {
		return ""
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start {
		return ""
	}
	u, err := base.Parse(link[start+1 : end])
	if err != nil || u.Host != base.Host {
		return ""
	}
	return u.String()
}
