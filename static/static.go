package static

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/defaults"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/serve"
)

type options struct {
	prefix      string
	sourceNames bool
	jobs        int
	logger      *slog.Logger
	progress    bundle.Progress
	nginx       Nginx
	noLinks     bool // tests: copy as on a filesystem without hard links
	prune       *pruneOptions
	dryRun      bool
	err         error // an option that could not be used
	settled     bool  // tests: record stamps however recently a file changed
}

// Option configures Unpack.
type Option func(*options)

// WithPrefix writes every name under prefix, as serve.WithPrefix serves it.
// Default: none.
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithSourceNames also writes each image under its source name, registry
// host first (docker.io/library/redis), as serve.WithSourceNames. Default: off.
func WithSourceNames(on bool) Option { return func(o *options) { o.sourceNames = on } }

// WithJobs sets how many blobs are written at once. Default: 4.
func WithJobs(n int) Option { return func(o *options) { o.jobs = n } }

// WithLogger receives warnings (files in the tree ferry cannot use).
// Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithProgress receives one EventPlanned with the bytes to write, then
// EventBytes and EventBlobDone as blobs are written. Default: none.
func WithProgress(p bundle.Progress) Option { return func(o *options) { o.progress = p } }

// WithNginx sets the server block's listen address, name and TLS files.
// Default: DefaultNginx.
func WithNginx(n Nginx) Option { return func(o *options) { o.nginx = n } }

// DefaultJobs is how many blobs Unpack writes at once unless told.
const DefaultJobs = defaults.Jobs

// Summary says what Unpack did.
type Summary struct {
	Dir string `json:"dir"`
	// Repositories and Tags count what the bundles put in the tree.
	Repositories int `json:"repositories"`
	Tags         int `json:"tags"`
	// TagsChanged counts tags that are new or now name another manifest.
	TagsChanged int `json:"tagsChanged"`
	// BlobsWritten and BytesWritten count blobs copied out of the bundles;
	// BlobsPresent those the tree already held (checked, not written).
	BlobsWritten int   `json:"blobsWritten"`
	BytesWritten int64 `json:"bytesWritten"`
	BlobsPresent int   `json:"blobsPresent"`
	// FilesWritten counts files under v2/ created or replaced (hard links,
	// or copies where the filesystem has none).
	FilesWritten int  `json:"filesWritten"`
	Copied       bool `json:"copied,omitempty"`
	// TreeRepositories and TreeTags count what the whole tree serves now,
	// earlier runs included.
	TreeRepositories int    `json:"treeRepositories"`
	TreeTags         int    `json:"treeTags"`
	NginxConf        string `json:"nginxConf,omitempty"` // none on S3
	// Pruned says what WithPrune removed (or, with WithDryRun, would).
	Pruned *PruneSummary `json:"pruned,omitempty"`
}

// Unpack writes the images of readers into the static registry tree at
// dir (created if needed) and regenerates dir/nginx.conf; see the package
// documentation for the layout. Readers are taken in order: for the same
// name and tag a later bundle wins, as with serve.New. Blobs a delta leaves
// to its base must already be in dir (unpack the base first, or give it
// too). Errors about dir wrap ErrTree; a damaged bundle, bundle.ErrCorrupt.
func Unpack(ctx context.Context, readers []*bundle.Reader, dir string, opts ...Option) (*Summary, error) {
	o := options{jobs: DefaultJobs, logger: slog.New(slog.DiscardHandler), progress: bundle.ProgressFunc(func(bundle.Event) {}), nginx: DefaultNginx}
	for _, opt := range opts {
		opt(&o)
	}
	if o.jobs < 1 {
		o.jobs = DefaultJobs
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.dryRun && o.prune == nil {
		return nil, fmt.Errorf("%w: a dry run is a prune's (--dry-run needs --prune)", ErrOptions)
	}
	if err := o.nginx.check(); err != nil {
		return nil, err
	}
	reg, contents, err := openContents(readers, &o)
	if err != nil {
		return nil, err
	}
	if o.prune != nil {
		if err := checkPruneDir(dir); err != nil {
			return nil, err
		}
		o.prune.base = baseClaims(readers, o.prefix, o.sourceNames)
		if _, err := os.Stat(dir); o.dryRun && errors.Is(err, fs.ErrNotExist) {
			return &Summary{Dir: dir, Repositories: len(contents), Pruned: &PruneSummary{DryRun: true}}, nil
		}
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	t, err := openTree(dir)
	if err != nil {
		return nil, err
	}
	if err := checkTree(t, contents); err != nil {
		t.release()
		return nil, err
	}
	t.copying = o.noLinks
	if o.settled {
		t.settle = 0
	}
	sum := &Summary{Dir: t.root, Repositories: len(contents)}
	if o.dryRun {
		return sum, dryRun(ctx, t, contents, &o, sum)
	}
	err = unpack(ctx, t, reg, contents, &o, sum)
	if cerr := t.close(); err == nil && cerr != nil {
		err = fmt.Errorf("%w: saving the journal: %v", ErrTree, cerr)
	}
	if err != nil {
		return sum, err
	}
	return sum, nil
}

// openContents merges the bundles as serve does and checks every name
// and tag the tree will hold.
func openContents(readers []*bundle.Reader, o *options) (*serve.Registry, []serve.Content, error) {
	reg, err := serve.New(readers, serve.WithPrefix(o.prefix), serve.WithSourceNames(o.sourceNames))
	if err != nil {
		return nil, nil, err
	}
	contents := reg.Contents()
	if err := checkPaths(contents); err != nil {
		return nil, nil, err
	}
	return reg, contents, nil
}

func unpack(ctx context.Context, t *tree, reg *serve.Registry, contents []serve.Content, o *options, sum *Summary) error {
	if err := storeBlobs(ctx, t, reg, contents, o, sum); err != nil {
		return err
	}
	for _, c := range contents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := placeRepo(ctx, t, c, sum); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := scanTree(t, o.logger)
	if err != nil {
		return err
	}
	var pl *prunePlan
	if o.prune != nil {
		if pl, err = planPrune(ctx, t, contents, o.prune, heldDigests(t)); err != nil {
			return err
		}
		st = pl.prunedState(st)
	}
	// The order keeps every listed tag whole at every moment: new content
	// first (above), then the tag lists without the removed tags, then
	// their tag files, then nginx.conf, and only then what nothing kept
	// references.
	if err := writeLists(t, st); err != nil {
		return err
	}
	if pl != nil {
		if err := removeFiles(ctx, t, pl.tagFiles); err != nil {
			return err
		}
	}
	conf, err := nginxConf(t.root, st, o.nginx)
	if err != nil {
		return err
	}
	if _, err := t.writeIfChanged(NginxConf, conf); err != nil {
		return err
	}
	if pl != nil {
		if err := collect(ctx, t, pl, sum); err != nil {
			return err
		}
	}
	sum.NginxConf = t.root + string(os.PathSeparator) + NginxConf
	sum.TreeRepositories = len(st.repos)
	for _, r := range st.repos {
		sum.TreeTags += len(r.tags)
	}
	return nil
}

// storeBlobs makes the store hold every blob the contents reference: those
// already there (and current) are kept, the others copied out of the
// bundles with their digests checked; those no bundle holds must be there.
func storeBlobs(ctx context.Context, t *tree, reg *serve.Registry, contents []serve.Content, o *options, sum *Summary) error {
	need := map[v1.Hash]bool{}
	var order []v1.Hash
	missing := map[v1.Hash]string{} // blob → a repository that needs it
	for _, c := range contents {
		hs := append(manifestList(c), c.Blobs...)
		for _, h := range hs {
			if !need[h] {
				need[h] = true
				order = append(order, h)
			}
		}
		for _, h := range c.Missing {
			missing[h] = c.Name
		}
		for h, mt := range c.Manifests {
			t.mu.Lock()
			t.j.MediaTypes[h.String()] = string(mt)
			t.mu.Unlock()
		}
	}
	if err := checkMissing(ctx, t, missing); err != nil {
		return err
	}
	// First what the journal proves present without reading it, so that
	// the progress total is about what remains: blobs to check by hashing
	// (a file is there but the journal cannot vouch for it) or to write.
	var todo []v1.Hash
	var total int64
	for _, h := range order {
		size, _ := reg.Holder(h).BlobSize(h)
		if ok, err := t.stamped(storeRel(h), h, size); err != nil {
			return err
		} else if ok {
			sum.BlobsPresent++
			continue
		}
		todo = append(todo, h)
		total += size
	}
	o.progress.Event(bundle.Event{Kind: bundle.EventPlanned, Total: total})
	return writeBlobs(ctx, t, reg, todo, o, sum)
}

// writeBlobs checks or writes each blob of todo, o.jobs at a time.
func writeBlobs(ctx context.Context, t *tree, reg *serve.Registry, todo []v1.Hash, o *options, sum *Summary) error {
	var written atomic.Int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	for _, h := range todo {
		g.Go(func() error {
			rd := reg.Holder(h)
			size, _ := rd.BlobSize(h)
			ok, err := t.hashed(gctx, storeRel(h), h, size)
			if err != nil {
				return err
			}
			if ok {
				mu.Lock()
				sum.BlobsPresent++
				mu.Unlock()
				o.progress.Event(bundle.Event{Kind: bundle.EventBytes, Digest: h, Bytes: size})
				return nil
			}
			n, err := writeBlob(gctx, t, rd, h, o.progress)
			if err != nil {
				o.progress.Event(bundle.Event{Kind: bundle.EventBlobFailed, Digest: h, Err: err})
				return fmt.Errorf("bundle %s: blob %s: %w", rd.Path(), h, err)
			}
			written.Add(n)
			mu.Lock()
			sum.BlobsWritten++
			mu.Unlock()
			o.progress.Event(bundle.Event{Kind: bundle.EventBlobDone, Digest: h})
			return nil
		})
	}
	err := g.Wait()
	sum.BytesWritten = written.Load()
	return err
}

// checkMissing checks that the tree holds every blob a delta left to its
// base, by content: a blob of the right size is not proof enough.
func checkMissing(ctx context.Context, t *tree, missing map[v1.Hash]string) error {
	var absent []string
	hs := make([]v1.Hash, 0, len(missing))
	for h := range missing {
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].String() < hs[j].String() })
	for _, h := range hs {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok := false
		if h.Algorithm == "sha256" {
			p, _ := t.abs(storeRel(h))
			if st, err := os.Lstat(p); err == nil {
				var cerr error
				if ok, cerr = t.current(ctx, storeRel(h), h, st.Size()); cerr != nil {
					return cerr
				}
			}
		}
		if !ok {
			absent = append(absent, fmt.Sprintf("%s (needed by %s)", h, missing[h]))
		}
	}
	if len(absent) == 0 {
		return nil
	}
	more := ""
	if len(absent) > 3 {
		more = fmt.Sprintf(" and %d more", len(absent)-3)
		absent = absent[:3]
	}
	return fmt.Errorf("%w: %d blobs are in none of the bundles and not in %s: %s%s; a delta bundle unpacks on top of its base: unpack the base bundle into the same directory first (or give it before the delta)",
		ErrTree, len(missing), t.root, strings.Join(absent, ", "), more)
}

// writeBlob copies blob h out of rd into the store, digest checked, under
// a temporary name renamed once complete. It returns the bytes written.
func writeBlob(ctx context.Context, t *tree, rd *bundle.Reader, h v1.Hash, p bundle.Progress) (int64, error) {
	sec, err := rd.Section(h)
	if err != nil {
		return 0, err
	}
	dst, _ := t.abs(storeRel(h))
	tmp := tempName(dst)
	var n int64
	if err := writeNew(tmp, ctxio.Reader(ctx, sec), h, sec.Size(), func(k int64) {
		n += k
		p.Event(bundle.Event{Kind: bundle.EventBytes, Digest: h, Bytes: k})
	}); err != nil {
		return n, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return n, fmt.Errorf("%w: %v", ErrTree, err)
	}
	// No stamp: the rename, and the links placeRepo makes next, move the
	// ctime after the bytes were checked; the next run hashes the blob
	// once and records it then (see stamp).
	t.forget(storeRel(h))
	return n, nil
}

func manifestList(c serve.Content) []v1.Hash {
	out := make([]v1.Hash, 0, len(c.Manifests))
	for h := range c.Manifests {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// placeRepo links one repository's files to the store: every blob and
// manifest under blobs/, every manifest under manifests/ by digest, then
// the tags (each replaced atomically when it moves), then the referrers
// indexes of the tag schema.
func placeRepo(ctx context.Context, t *tree, c serve.Content, sum *Summary) error {
	base := "v2/" + c.Name + "/"
	size := func(h v1.Hash) int64 {
		st, err := os.Stat(t.root + "/" + storeRel(h))
		if err != nil {
			return -1
		}
		return st.Size()
	}
	put := func(rel string, h v1.Hash) (bool, error) {
		wrote, err := t.place(ctx, rel, h, size(h))
		if wrote {
			sum.FilesWritten++
		}
		return wrote, err
	}
	ms := manifestList(c)
	all := make([]v1.Hash, 0, len(c.Blobs)+len(ms)+len(c.Missing))
	all = append(append(append(all, c.Blobs...), ms...), c.Missing...)
	for _, h := range all {
		if _, err := put(base+"blobs/"+h.String(), h); err != nil {
			return err
		}
	}
	for _, h := range ms {
		if _, err := put(base+"manifests/"+h.String(), h); err != nil {
			return err
		}
	}
	tags := make([]string, 0, len(c.Tags))
	for tag := range c.Tags {
		tags = append(tags, tag)
	}
	sort.Strings(tags)
	for _, tag := range tags {
		wrote, err := put(base+"manifests/"+tag, c.Tags[tag])
		if err != nil {
			return err
		}
		if wrote {
			sum.TagsChanged++
		}
	}
	sum.Tags += len(tags)
	for _, h := range ms {
		idx, ok := c.Tags[oci.DigestTag(h)]
		if !ok || idx == h || c.Manifests[idx] != types.OCIImageIndex {
			continue
		}
		if _, err := put(base+"referrers/"+h.String(), idx); err != nil {
			return err
		}
	}
	t.mu.Lock()
	sum.Copied = t.copying
	t.mu.Unlock()
	return nil
}
