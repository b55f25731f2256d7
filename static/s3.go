package static

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/serve"
)

// The tree on S3-compatible object storage (UnpackS3) has the same keys
// under the bucket's prefix as the tree on disk has paths under DIR, for
// what a server that maps URLs to objects can serve without help:
//
//	PREFIX/v2/                            {} (the API's base: GET /v2/ answers 200)
//	PREFIX/v2/<name>/manifests/<tag>      the manifest a tag names
//	PREFIX/v2/<name>/manifests/sha256:<hex>
//	PREFIX/v2/<name>/blobs/sha256:<hex>   configs, layers (and manifests)
//	PREFIX/v2/<name>/tags/list
//	PREFIX/v2/<name>/referrers/sha256:<hex>
//	PREFIX/v2/_catalog
//	PREFIX/.ferry/s3-journal.json         what ferry checked each object holds
//
// Every object carries its Content-Type (a manifest's media type,
// application/octet-stream for blobs, application/json for lists) and, for
// manifests and blobs, the digest as metadata (x-amz-meta-docker-content-digest)
// for an edge to copy into Docker-Content-Digest. There are no tag list pages
// (an object store cannot choose an object by query string) and no
// nginx.conf; there is no blobs/ folder either: each blob is uploaded once,
// to the first repository that needs it, and copied on the server into the
// others (no bytes pass through ferry twice).

// s3JournalKey is where the journal is kept, under the prefix.
const s3JournalKey = ".ferry/s3-journal.json"

// journalSaveTimeout bounds the journal's save after an interrupted run.
const journalSaveTimeout = 30 * time.Second

// maxS3Journal bounds the journal read back (about 10 million objects).
const maxS3Journal = 1 << 30

// s3Journal records, per key, what ferry knows an object held when it wrote
// it or hashed it: its digest, size and the ETag the server gave it then.
type s3Journal struct {
	Version int                 `json:"version"`
	Objects map[string]s3Record `json:"objects"`
}

type s3Record struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	ETag   string `json:"etag"`
}

// s3Tree is a run's view of the tree: the listing taken at its start and
// the journal, with what the run writes added to both.
type s3Tree struct {
	st       *objstore.Store
	mu       sync.Mutex
	objects  map[string]objstore.Info // by key, as listed (and as written since)
	j        s3Journal
	byDigest map[string][]string // blob digest → keys v2/*/blobs/<digest> listed
	copySem  chan struct{}       // server-side copies in flight (placeBlobs)
}

// digestMeta is the metadata every manifest and blob object carries.
func digestMeta(h v1.Hash) map[string]string {
	return map[string]string{"docker-content-digest": h.String()}
}

// UnpackS3 writes the images of readers into the static registry tree
// under st's bucket and prefix (see the layout above), as Unpack does into
// a directory: every blob's digest is checked as it is uploaded (a damaged
// blob's upload is cut short, so no object appears), and the objects are
// written in an order that never lists a tag before its manifest and blobs
// exist: blobs, then manifests by digest, then tags, then tags/list and
// the catalog. A rerun lists the prefix and writes only what is missing or
// changed. It only adds; WithPrune is refused (ErrOptions). Errors about
// the store wrap ErrTree; a damaged bundle, bundle.ErrCorrupt.
func UnpackS3(ctx context.Context, readers []*bundle.Reader, st *objstore.Store, opts ...Option) (*Summary, error) {
	o := options{jobs: DefaultJobs}
	for _, opt := range opts {
		opt(&o)
	}
	if o.jobs < 1 {
		o.jobs = DefaultJobs
	}
	if o.progress == nil {
		o.progress = bundle.ProgressFunc(func(bundle.Event) {})
	}
	switch {
	case o.err != nil:
		return nil, o.err
	case o.prune != nil || o.dryRun:
		return nil, fmt.Errorf("%w: --prune works on a directory tree; a tree on object storage only adds", ErrOptions)
	}
	reg, contents, err := openContents(readers, &o)
	if err != nil {
		return nil, err
	}
	t, err := openS3Tree(ctx, st)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Dir: st.Location().String(), Repositories: len(contents)}
	err = unpackS3(ctx, t, reg, contents, &o, sum)
	// The journal is saved even when the run was interrupted, so that the
	// next run need not hash what this one uploaded.
	jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), journalSaveTimeout)
	defer cancel()
	if jerr := t.saveJournal(jctx); err == nil && jerr != nil {
		err = jerr
	}
	return sum, err
}

func unpackS3(ctx context.Context, t *s3Tree, reg *serve.Registry, contents []serve.Content, o *options, sum *Summary) error {
	if err := t.checkMissing(ctx, contents); err != nil {
		return err
	}
	if err := t.placeBlobs(ctx, reg, contents, o, sum); err != nil {
		return err
	}
	if err := t.placeManifests(ctx, reg, contents, o, sum); err != nil {
		return err
	}
	return t.writeLists(ctx, contents, sum)
}

// openS3Tree lists what is under the prefix and reads the journal. A
// prefix holding objects outside v2/ and .ferry/ and no journal is not a
// tree ferry wrote: it is refused (ErrOptions) before anything is written.
func openS3Tree(ctx context.Context, st *objstore.Store) (*s3Tree, error) {
	t := &s3Tree{st: st, objects: map[string]objstore.Info{}, byDigest: map[string][]string{},
		j: s3Journal{Version: 1, Objects: map[string]s3Record{}}}
	var foreign []string
	err := st.List(ctx, "", func(info objstore.Info) error {
		t.objects[info.Key] = info
		switch {
		case strings.HasPrefix(info.Key, "v2/"):
			if i := strings.LastIndex(info.Key, "/blobs/"); i > 0 {
				d := info.Key[i+len("/blobs/"):]
				t.byDigest[d] = append(t.byDigest[d], info.Key)
			}
		case strings.HasPrefix(info.Key, ".ferry/"):
		default:
			foreign = append(foreign, info.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTree, err)
	}
	if _, ok := t.objects[s3JournalKey]; ok {
		data, _, err := st.Get(ctx, s3JournalKey, maxS3Journal)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTree, err)
		}
		// A journal that does not parse vouches for nothing: every object
		// is checked again, as with no journal.
		var j s3Journal
		if json.Unmarshal(data, &j) == nil && j.Version == 1 && j.Objects != nil {
			t.j = j
		}
	} else if len(foreign) > 0 {
		return nil, fmt.Errorf("%w: %s holds objects ferry did not write (%s) and no %s: give an empty prefix or one ferry wrote",
			ErrOptions, st.Location(), foreign[0], s3JournalKey)
	}
	return t, nil
}

// verified reports whether the object at key holds blob h of size bytes
// without reading it.
//
// Premise: S3 gives an object a new ETag whenever it is written with other
// bytes (the MD5 of the content for a single PUT, of the parts' MD5s for a
// multipart upload, on AWS and SeaweedFS alike), so an object whose size
// and ETag are those ferry recorded when it uploaded the checked bytes, or
// hashed them, still holds them. A deleted object, one overwritten in
// place, a lying size, metadata that claims another digest or a lost
// journal all fail the comparison, and the object is checked or written
// again (TestStaticS3RerunRepairs breaks each). A journal that another
// writer changed to vouch for other bytes is outside the premise.
func (t *s3Tree) verified(key string, h v1.Hash, size int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, ok := t.objects[key]
	rec, known := t.j.Objects[key]
	return ok && known && info.Size == size && rec.Size == size && rec.Digest == h.String() &&
		rec.ETag != "" && rec.ETag == info.ETag
}

// record notes that key now holds h (size bytes) under etag.
func (t *s3Tree) record(key string, h v1.Hash, size int64, etag string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.objects[key] = objstore.Info{Key: key, Size: size, ETag: etag}
	if etag == "" {
		delete(t.j.Objects, key)
		return
	}
	t.j.Objects[key] = s3Record{Digest: h.String(), Size: size, ETag: etag}
}

// current reports whether key holds exactly data, by its listed size and
// ETag: for small objects ferry has in memory (manifests, lists), the
// MD5 of data is compared with the ETag. Premise: a single PUT's ETag is
// the MD5 of the object's bytes (S3 without SSE-KMS or SSE-C, SeaweedFS,
// MinIO). Where the server's ETags are something else the comparison
// fails and the object is written again: slower, never wrong.
func (t *s3Tree) current(key string, data []byte) bool {
	t.mu.Lock()
	info, ok := t.objects[key]
	t.mu.Unlock()
	if !ok || info.Size != int64(len(data)) {
		return false
	}
	sum := md5.Sum(data)
	return strings.EqualFold(info.ETag, hex.EncodeToString(sum[:]))
}

// putSmall writes data to key unless the key already holds it; it reports
// whether it wrote.
func (t *s3Tree) putSmall(ctx context.Context, key string, data []byte, po objstore.PutOptions) (bool, error) {
	if t.current(key, data) {
		return false, nil
	}
	etag, err := t.st.Put(ctx, key, bytes.NewReader(data), int64(len(data)), po)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrTree, err)
	}
	t.mu.Lock()
	t.objects[key] = objstore.Info{Key: key, Size: int64(len(data)), ETag: etag}
	delete(t.j.Objects, key)
	t.mu.Unlock()
	return true, nil
}

// saveJournal writes the journal back, keeping only keys that exist.
func (t *s3Tree) saveJournal(ctx context.Context) error {
	t.mu.Lock()
	for k := range t.j.Objects {
		if _, ok := t.objects[k]; !ok {
			delete(t.j.Objects, k)
		}
	}
	data, err := json.Marshal(t.j)
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := t.st.Put(ctx, s3JournalKey, bytes.NewReader(data), int64(len(data)), objstore.PutOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("%w: saving the journal: %w", ErrTree, err)
	}
	return nil
}

// treeTags is every repository and tag the tree serves after this run:
// the tag objects listed at its start and the contents' tags.
func (t *s3Tree) treeTags(contents []serve.Content) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	add := func(name, tag string) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		out[name][tag] = true
	}
	t.mu.Lock()
	for k := range t.objects {
		rest, ok := strings.CutPrefix(k, "v2/")
		i := strings.LastIndex(rest, "/manifests/")
		if !ok || i <= 0 {
			continue
		}
		name, tag := rest[:i], rest[i+len("/manifests/"):]
		if validName(name) && validTag(tag) {
			add(name, tag)
		}
	}
	t.mu.Unlock()
	for _, c := range contents {
		for tag := range c.Tags {
			add(c.Name, tag)
		}
	}
	return out
}

// writeLists writes each repository's tags/list, the catalog and the
// API base, where their content changes: after every tag object.
func (t *s3Tree) writeLists(ctx context.Context, contents []serve.Content, sum *Summary) error {
	repos := t.treeTags(contents)
	names := make([]string, 0, len(repos))
	for n := range repos {
		names = append(names, n)
	}
	sort.Strings(names)
	js := objstore.PutOptions{ContentType: "application/json"}
	for _, n := range names {
		tags := make([]string, 0, len(repos[n]))
		for tag := range repos[n] {
			tags = append(tags, tag)
		}
		sort.Strings(tags)
		sum.TreeTags += len(tags)
		if _, err := t.putSmall(ctx, "v2/"+n+"/tags/list", listJSON(n, tags), js); err != nil {
			return err
		}
	}
	sum.TreeRepositories = len(names)
	data, err := json.Marshal(struct {
		Repositories []string `json:"repositories"`
	}{names})
	if err != nil {
		return err
	}
	if _, err := t.putSmall(ctx, "v2/_catalog", append(data, '\n'), js); err != nil {
		return err
	}
	_, err = t.putSmall(ctx, "v2/", []byte("{}\n"), js)
	return err
}

// errMissingBase says which blobs a delta left to a base the tree lacks.
func errMissingBase(loc string, absent []string, total int) error {
	more := ""
	if len(absent) > 3 {
		more = fmt.Sprintf(" and %d more", len(absent)-3)
		absent = absent[:3]
	}
	return fmt.Errorf("%w: %d blobs are in none of the bundles and not in %s: %s%s; a delta bundle unpacks on top of its base: unpack the base bundle into the same place first (or give it before the delta)",
		ErrTree, total, loc, strings.Join(absent, ", "), more)
}

var errNoSource = errors.New("no checked copy")
