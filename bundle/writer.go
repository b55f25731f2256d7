package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

// BlobKind orders blobs inside the bundle: manifests, then configs, then layers.
type BlobKind int

// Kinds of blob.
const (
	KindManifest BlobKind = iota
	KindConfig
	KindLayer
)

// Opener opens a blob's bytes. The writer checks size and digest itself, so
// an opener need not verify anything. If the returned reader also
// implements Committer, the writer calls Commit once the bytes are verified
// (a cache can keep them then), before Close.
type Opener func(ctx context.Context) (io.ReadCloser, error)

// Committer is told that the bytes read were complete and verified.
type Committer interface{ Commit() error }

// Fetcher writes a blob's bytes into w, which places them in the bundle.
// It may call w.Reset to start again from the first byte (the source sent
// bytes of another digest): what was written is then forgotten, also by
// the bundle's checksum. The writer checks size and digest at the end.
type Fetcher func(ctx context.Context, w Sink) error

// Sink receives a blob's bytes; Reset starts the blob again.
type Sink interface {
	io.Writer
	Reset() error
}

// PlannedBlob is a blob the writer must store.
type PlannedBlob struct {
	Digest    v1.Hash
	Size      int64
	MediaType types.MediaType
	Kind      BlobKind
	// Data holds the bytes of small blobs already in memory (manifests).
	Data []byte
	// Open streams the bytes when Data is nil.
	Open Opener
	// Fetch, when set, is used instead of Open: a source that may have to
	// start a blob again writes into a restartable Sink.
	Fetch Fetcher
	// Verified says Fetch checks the digest of what it writes itself (and
	// fails otherwise), so the writer checks only the size and does not
	// hash the bytes a second time.
	Verified bool
	// Origin names where the bytes come from (a registry, a file), for errors.
	Origin string
}

// PlannedImage is an image the writer must record, with every blob it
// needs (its manifest or index, child manifests, configs and layers).
type PlannedImage struct {
	Image
	Blobs []v1.Hash
}

// Plan is everything a bundle will hold, known before any layer moves.
type Plan struct {
	Images []PlannedImage
	Blobs  []PlannedBlob
	// Base is the id of the bundle this one is a delta of.
	Base string
	// BaseBlobs are blobs the images need that the base carries; they are
	// recorded, not stored.
	BaseBlobs []Blob
	// BaseImages are the images of the base chain, recorded for later deltas.
	BaseImages []BaseImage
}

// Failure is one image that could not be written, and why.
type Failure struct {
	Image  string // TARGET:TAG[,TAG...] (source)
	Digest string // the blob that failed, if one did
	Err    error
}

func (f Failure) Error() string { return f.Image + ": " + f.Err.Error() }

// Result describes a written bundle.
type Result struct {
	Path string
	// Volumes are the files written: Path alone, or Path.000, Path.001, ...
	Volumes []string
	Sidecar string
	SHA256  string
	// Signature is the raw signature stored as ferry.sig and SigSidecar the
	// base64 copy beside the bundle (PATH.sig); both empty when unsigned.
	Signature  []byte
	SigSidecar string
	Size       int64
	Record     *Record
	BlobBytes  int64
	Failures   []Failure
}

// EventKind says what a progress event reports.
type EventKind int

// Progress event kinds.
const (
	// EventPlanned: the bundle's size is known; Total is the bytes to fetch.
	EventPlanned EventKind = iota
	// EventBytes: Bytes more bytes of blob Digest were written.
	EventBytes
	// EventBlobDone: blob Digest is complete and verified.
	EventBlobDone
	// EventBlobFailed: blob Digest failed with Err.
	EventBlobFailed
)

// Event is a progress report. Handlers are called from several goroutines.
type Event struct {
	Kind   EventKind
	Digest v1.Hash
	Bytes  int64
	Total  int64
	Err    error
}

// Progress receives events; it must be safe for concurrent use.
type Progress interface{ Event(Event) }

// ProgressFunc adapts a function to Progress.
type ProgressFunc func(Event)

// Event implements Progress.
func (f ProgressFunc) Event(e Event) { f(e) }

type writeOptions struct {
	jobs         int
	keepGoing    bool
	progress     Progress
	logger       *slog.Logger
	now          func() time.Time
	id           string
	ferryVersion string
	split        int64
	signer       crypto.Signer
}

// WithSplit writes the bundle as volumes PATH.000, PATH.001, ... each
// smaller than size bytes (0: one file).
func WithSplit(size int64) WriteOption { return func(o *writeOptions) { o.split = size } }

// WriteOption configures Write.
type WriteOption func(*writeOptions)

// WithJobs bounds parallel blob transfers (default 4).
func WithJobs(n int) WriteOption { return func(o *writeOptions) { o.jobs = n } }

// WithKeepGoing keeps what succeeded when some images fail; the result lists
// the failures. Without it any failure fails the whole bundle.
func WithKeepGoing(b bool) WriteOption { return func(o *writeOptions) { o.keepGoing = b } }

// WithProgress sets the progress receiver.
func WithProgress(p Progress) WriteOption { return func(o *writeOptions) { o.progress = p } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) WriteOption { return func(o *writeOptions) { o.logger = l } }

// WithClock fixes the creation time (tests, reproducible bundles).
func WithClock(now func() time.Time) WriteOption { return func(o *writeOptions) { o.now = now } }

// WithID fixes the bundle id (tests, reproducible bundles).
func WithID(id string) WriteOption { return func(o *writeOptions) { o.id = id } }

// WithFerryVersion records the writing ferry's version in ferry.json.
func WithFerryVersion(v string) WriteOption { return func(o *writeOptions) { o.ferryVersion = v } }

// entry is one tar entry at a fixed place in the output.
type entry struct {
	name   string
	header []byte // tar header block(s), PAX records included
	offset int64  // where the header starts
	size   int64
	data   []byte       // in-memory content, or nil
	blob   *PlannedBlob // streamed content, or nil

	written atomic.Int64 // streamed bytes in place so far
	done    atomic.Bool  // all bytes in place and verified
}

func (e *entry) dataOffset() int64 { return e.offset + int64(len(e.header)) }

func padded(n int64) int64 { return (n + 511) &^ 511 }

// Write writes plan as a bundle at path, atomically: the bundle is built in a
// temporary file beside path and renamed only when complete and verified,
// then path+".sha256" is written in sha256sum format. After a failure no file
// is left at path (an existing one is left as it was).
func Write(ctx context.Context, path string, plan *Plan, opts ...WriteOption) (*Result, error) {
	o := writeOptions{jobs: 4, logger: slog.New(slog.DiscardHandler), now: time.Now, progress: ProgressFunc(func(Event) {})}
	for _, opt := range opts {
		opt(&o)
	}
	if o.jobs < 1 {
		o.jobs = 1
	}
	if o.id == "" {
		o.id = newID()
	}
	if err := validatePlan(plan); err != nil {
		return nil, err
	}
	created := o.now().UTC().Truncate(time.Second)

	tb, err := writeTemp(ctx, path, plan, created, &o)
	var failures []Failure
	if err != nil {
		var pf *partialFailure
		if !errors.As(err, &pf) {
			return nil, err
		}
		failures = pf.failures
		if !o.keepGoing {
			tb.remove()
			return &Result{Failures: failures}, err
		}
		// Rebuild from what arrived intact, without the failed images. The
		// blobs are read back from the first file, so nothing is fetched twice.
		reduced, rerr := reducePlan(plan, pf.failedBlobs, tb)
		if rerr != nil {
			tb.remove()
			return &Result{Failures: failures}, fmt.Errorf("%w (%v)", err, rerr)
		}
		o.logger.Info("rewriting bundle without failed images", "failed", len(failures), "kept", len(reduced.Images))
		quiet := o
		quiet.progress = ProgressFunc(func(Event) {})
		tb2, err2 := writeTemp(ctx, path, reduced, created, &quiet)
		tb.remove()
		if err2 != nil {
			return &Result{Failures: failures}, fmt.Errorf("rewriting bundle without failed images: %w", err2)
		}
		tb, plan = tb2, reduced
	}
	sidecar := path + ".sha256"
	var lines strings.Builder
	for i, name := range tb.finalNames(path) {
		lines.WriteString(tb.sums[i] + "  " + filepath.Base(name) + "\n")
	}
	if err := tb.install(path); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(sidecar, []byte(lines.String()), 0o644); err != nil {
		return nil, fmt.Errorf("writing checksum file: %w", err)
	}
	if err := writeSigSidecar(path+".sig", tb.sig); err != nil {
		return nil, fmt.Errorf("writing signature file: %w", err)
	}
	rec := buildRecord(plan, created, &o)
	res := &Result{Path: path, Sidecar: sidecar, Size: tb.total, Record: rec, Failures: failures, Volumes: tb.finalNames(path)}
	if tb.sig != nil {
		res.Signature, res.SigSidecar = tb.sig, path+".sig"
	}
	if len(tb.sums) == 1 {
		res.SHA256 = tb.sums[0]
	}
	for _, b := range rec.Blobs {
		res.BlobBytes += b.Size
	}
	if len(failures) > 0 {
		return res, &partialFailure{failures: failures}
	}
	return res, nil
}

// tempBundle is a bundle being written: one temporary file, or one per
// volume, beside the output.
type tempBundle struct {
	names []string // temporary names
	vs    *volumeSet
	total int64
	sums  []string // SHA-256 of each file, once complete
	sig   []byte   // ferry.sig, when signed
}

func (tb *tempBundle) remove() {
	if tb == nil {
		return
	}
	if tb.vs != nil {
		_ = tb.vs.close()
	}
	for _, n := range tb.names {
		_ = os.Remove(n)
	}
}

// finalNames are the names the files get: path, or path.000, path.001, ...
func (tb *tempBundle) finalNames(path string) []string {
	if len(tb.names) == 1 {
		return []string{path}
	}
	out := make([]string, len(tb.names))
	for i := range out {
		out[i] = VolumeName(path, i)
	}
	return out
}

// install renames the finished files into place and removes what an
// earlier bundle of the same name left that the new one does not replace
// (a single file where volumes now are, or surplus volumes), so that a
// reader never mixes two bundles.
func (tb *tempBundle) install(path string) error {
	final := tb.finalNames(path)
	for i, n := range tb.names {
		if err := os.Chmod(n, 0o644); err != nil {
			tb.remove()
			return err
		}
		if err := os.Rename(n, final[i]); err != nil {
			tb.remove()
			return fmt.Errorf("renaming bundle into place: %w", err)
		}
	}
	if len(final) > 1 {
		_ = os.Remove(path)
	}
	start := len(final)
	if len(final) == 1 {
		start = 0
	}
	for i := start; ; i++ {
		if err := os.Remove(VolumeName(path, i)); err != nil {
			break
		}
	}
	return nil
}

// partialFailure reports images that failed; with keep-going the bundle
// holds the rest.
type partialFailure struct {
	failures    []Failure
	failedBlobs map[v1.Hash]error
}

func (p *partialFailure) Error() string {
	if len(p.failures) == 1 {
		return p.failures[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d images failed:", len(p.failures))
	for _, f := range p.failures {
		b.WriteString("\n  ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap exposes each failure's cause to errors.Is.
func (p *partialFailure) Unwrap() []error {
	out := make([]error, 0, len(p.failures))
	for _, f := range p.failures {
		out = append(out, f.Err)
	}
	return out
}

// Failures returns the per-image failures inside err, if any.
func Failures(err error) []Failure {
	var pf *partialFailure
	if errors.As(err, &pf) {
		return pf.failures
	}
	return nil
}

func validatePlan(plan *Plan) error {
	if len(plan.Images) == 0 {
		return errors.New("nothing to write: no images")
	}
	have := make(map[v1.Hash]*PlannedBlob, len(plan.Blobs))
	for i := range plan.Blobs {
		b := &plan.Blobs[i]
		if b.Digest.Algorithm != "sha256" || !isLowerHex(b.Digest.Hex, 64) {
			return fmt.Errorf("blob %q: only sha256 digests can be stored", b.Digest)
		}
		if b.Size < 0 {
			return fmt.Errorf("blob %s: negative size", b.Digest)
		}
		if _, dup := have[b.Digest]; dup {
			return fmt.Errorf("blob %s planned twice", b.Digest)
		}
		if b.Data == nil && b.Open == nil && b.Fetch == nil {
			return fmt.Errorf("blob %s has no content", b.Digest)
		}
		have[b.Digest] = b
	}
	base := map[v1.Hash]bool{}
	for _, b := range plan.BaseBlobs {
		h, err := ParseDigest(b.Digest)
		if err != nil {
			return fmt.Errorf("base blob: %w", err)
		}
		if _, dup := have[h]; dup {
			return fmt.Errorf("blob %s is both stored and left to the base", h)
		}
		base[h] = true
	}
	if len(plan.BaseBlobs) > 0 && plan.Base == "" {
		return errors.New("base blobs without a base bundle id")
	}
	for _, im := range plan.Images {
		d, err := ParseDigest(im.Digest)
		if err != nil {
			return fmt.Errorf("image %s: %w", im.Source, err)
		}
		if b, ok := have[d]; !ok || b.Kind != KindManifest {
			return fmt.Errorf("image %s: its manifest %s is not planned", im.Source, d)
		}
		for _, h := range im.Blobs {
			if _, ok := have[h]; !ok && !base[h] {
				return fmt.Errorf("image %s: blob %s is not planned", im.Source, h)
			}
		}
	}
	return nil
}

// layout computes every entry and its offset. The whole file is a pure
// function of the plan, the creation time and the id.
func layout(plan *Plan, created time.Time, o *writeOptions) ([]*entry, int64, error) {
	rec := buildRecord(plan, created, o)
	recJSON, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, 0, err
	}
	recJSON = append(recJSON, '\n')
	// index.json is what ferry.json implies, and nothing else: a reader
	// checks that, so a signature over ferry.json pins index.json too.
	idxJSON, err := json.MarshalIndent(expectedIndex(rec), "", "  ")
	if err != nil {
		return nil, 0, err
	}
	entries := []*entry{
		{name: LayoutFile, data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: IndexFile, data: append(idxJSON, '\n')},
		{name: RecordFile, data: recJSON},
	}
	if o.signer != nil {
		sig, err := sign(o.signer, recJSON)
		if err != nil {
			return nil, 0, err
		}
		entries = append(entries, &entry{name: SigFile, data: sig})
	}
	blobs := make([]*PlannedBlob, len(plan.Blobs))
	for i := range plan.Blobs {
		blobs[i] = &plan.Blobs[i]
	}
	sort.SliceStable(blobs, func(i, j int) bool { return blobs[i].Kind < blobs[j].Kind })
	for _, b := range blobs {
		e := &entry{name: BlobName(b.Digest), size: b.Size, blob: b}
		if b.Data != nil {
			if int64(len(b.Data)) != b.Size {
				return nil, 0, fmt.Errorf("blob %s: %d bytes in memory, %d planned", b.Digest, len(b.Data), b.Size)
			}
			e.data = b.Data
		}
		entries = append(entries, e)
	}
	var off int64
	for _, e := range entries {
		if e.blob == nil {
			e.size = int64(len(e.data))
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     e.name,
			Size:     e.size,
			Mode:     0o644,
			ModTime:  created,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, fmt.Errorf("tar header for %s: %w", e.name, err)
		}
		e.header = buf.Bytes()
		e.offset = off
		off += int64(len(e.header)) + padded(e.size)
	}
	return entries, off + 1024, nil // two zero blocks end the archive
}

func buildRecord(plan *Plan, created time.Time, o *writeOptions) *Record {
	rec := &Record{
		FormatVersion: FormatVersion,
		FerryVersion:  o.ferryVersion,
		Created:       created,
		ID:            o.id,
		Base:          plan.Base,
		Images:        make([]Image, 0, len(plan.Images)),
		Blobs:         make([]Blob, 0, len(plan.Blobs)),
		BaseBlobs:     plan.BaseBlobs,
		BaseImages:    plan.BaseImages,
	}
	sizes := make(map[v1.Hash]int64, len(plan.Blobs))
	for _, b := range plan.BaseBlobs {
		if h, err := ParseDigest(b.Digest); err == nil {
			sizes[h] = b.Size
		}
	}
	for _, b := range plan.Blobs {
		sizes[b.Digest] = b.Size
		rec.Blobs = append(rec.Blobs, Blob{Digest: b.Digest.String(), Size: b.Size, MediaType: string(b.MediaType)})
	}
	for _, pi := range plan.Images {
		im := pi.Image
		im.Size = 0
		seen := map[v1.Hash]bool{}
		for _, h := range pi.Blobs {
			if !seen[h] {
				seen[h] = true
				im.Size += sizes[h]
			}
		}
		im.Tags = append([]string(nil), im.Tags...)
		rec.Images = append(rec.Images, im)
	}
	return rec
}

// writeTemp writes the bundle into new temporary files beside path (one,
// or one per volume with WithSplit). Blobs are fetched in parallel straight
// into their final place: every offset is known in advance, so nothing is
// spooled. The files' checksums are computed while the blobs arrive, by a
// reader that follows the contiguous written prefix, so no second pass is
// needed. On error the temporary files are removed, except for a
// *partialFailure, whose files the caller may rebuild from.
func writeTemp(ctx context.Context, path string, plan *Plan, created time.Time, o *writeOptions) (*tempBundle, error) {
	entries, total, err := layout(plan, created, o)
	if err != nil {
		return nil, err
	}
	tb, err := createTemp(path, total, o.split)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.name == SigFile {
			tb.sig = e.data
		}
	}
	fail := func(err error) (*tempBundle, error) {
		tb.remove()
		return nil, err
	}
	dst := tb.vs

	// Headers and in-memory content first.
	var streamTotal int64
	var streamed []*entry
	for _, e := range entries {
		if _, err := dst.WriteAt(e.header, e.offset); err != nil {
			return fail(fmt.Errorf("writing bundle: %w", err))
		}
		if e.data != nil {
			if e.blob != nil {
				if got := sha256Hex(e.data); got != e.blob.Digest.Hex {
					return fail(fmt.Errorf("blob %s from %s: content has digest sha256:%s: %w", e.blob.Digest, e.blob.Origin, got, ErrDigestMismatch))
				}
			}
			if _, err := dst.WriteAt(e.data, e.dataOffset()); err != nil {
				return fail(fmt.Errorf("writing bundle: %w", err))
			}
		} else {
			streamed = append(streamed, e)
			streamTotal += e.size
		}
	}
	o.progress.Event(Event{Kind: EventPlanned, Total: streamTotal})

	fh := &frontierHasher{r: dst, total: total, part: dst.part, streamed: streamed, notify: make(chan struct{}, 1), abort: make(chan struct{})}
	hashed := make(chan error, 1)
	go func() { hashed <- fh.run(ctx) }()

	failed := streamAll(ctx, dst, streamed, fh, o)
	if len(failed) > 0 || ctx.Err() != nil {
		close(fh.abort)
	}
	herr := <-hashed
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if len(failed) > 0 {
		return tb, newPartialFailure(plan, failed)
	}
	if herr != nil {
		return fail(fmt.Errorf("checksumming bundle: %w", herr))
	}
	if err := dst.sync(); err != nil {
		return fail(fmt.Errorf("syncing bundle: %w", err))
	}
	if err := dst.close(); err != nil {
		return fail(fmt.Errorf("closing bundle: %w", err))
	}
	tb.vs = nil
	tb.sums = fh.sums
	return tb, nil
}

// createTemp creates the temporary files for a bundle of total bytes, split
// into volumes of fewer than split bytes when split > 0.
func createTemp(path string, total, split int64) (*tempBundle, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	part, count := total, 1
	if split > 0 {
		if split < 2048 {
			return nil, fmt.Errorf("volume size %d is too small", split)
		}
		part = split - 1 // each volume strictly below the size asked for
		count = int((total + part - 1) / part)
		if count > 999 {
			return nil, fmt.Errorf("a %d-byte bundle in volumes below %d bytes needs %d volumes; at most 999", total, split, count)
		}
	}
	tb := &tempBundle{total: total, vs: &volumeSet{part: part, total: total}}
	for i := 0; i < count; i++ {
		pattern := "." + base + ".tmp-*"
		if count > 1 {
			pattern = "." + filepath.Base(VolumeName(base, i)) + ".tmp-*"
		}
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			tb.remove()
			return nil, fmt.Errorf("creating bundle: %w", err)
		}
		tb.names = append(tb.names, f.Name())
		tb.vs.files = append(tb.vs.files, f)
		size := min(part, total-int64(i)*part)
		if err := f.Truncate(size); err != nil {
			tb.remove()
			return nil, fmt.Errorf("sizing bundle file to %d bytes: %w", size, err)
		}
	}
	return tb, nil
}

// frontierHasher computes the SHA-256 of each bundle file while blobs are
// still arriving: it reads (from the page cache, just written) up to the
// end of the contiguous prefix that is final.
type frontierHasher struct {
	r        io.ReaderAt
	total    int64
	part     int64    // volume size: a new sum starts at each multiple
	streamed []*entry // in file order
	notify   chan struct{}
	abort    chan struct{}
	sums     []string

	mu       sync.Mutex
	rewindAt int64 // valid when rewound: the earliest offset restarted
	rewound  bool
}

// rewind makes the hasher forget what it hashed from off on: a streamed
// entry starting there is being written again. The volume that holds off
// is hashed again from its start (rare: only a source that sent wrong bytes
// restarts a blob).
func (fh *frontierHasher) rewind(off int64) {
	fh.mu.Lock()
	if !fh.rewound || off < fh.rewindAt {
		fh.rewindAt, fh.rewound = off, true
	}
	fh.mu.Unlock()
	fh.poke()
}

func (fh *frontierHasher) takeRewind() (int64, bool) {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	at, ok := fh.rewindAt, fh.rewound
	fh.rewound = false
	return at, ok
}

func (fh *frontierHasher) poke() {
	select {
	case fh.notify <- struct{}{}:
	default:
	}
}

func (fh *frontierHasher) run(ctx context.Context) error {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var pos int64
	next := 0
	for pos < fh.total {
		if at, ok := fh.takeRewind(); ok && at < pos {
			vol := at / fh.part
			pos, fh.sums, next = vol*fh.part, fh.sums[:vol], 0
			h = sha256.New()
		}
		for next < len(fh.streamed) && fh.streamed[next].done.Load() {
			next++
		}
		frontier := fh.total
		if next < len(fh.streamed) {
			e := fh.streamed[next]
			frontier = e.dataOffset() + e.written.Load()
		}
		if frontier <= pos {
			select {
			case <-fh.notify:
			case <-fh.abort:
				return errors.New("aborted")
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		// Never hash across a volume boundary in one read.
		partEnd := (pos/fh.part + 1) * fh.part
		n := min(frontier, partEnd) - pos
		n = min(n, int64(len(buf)))
		m, err := fh.r.ReadAt(buf[:n], pos)
		h.Write(buf[:m])
		pos += int64(m)
		if err != nil && !(err == io.EOF && pos == fh.total) {
			return err
		}
		if pos == partEnd || pos == fh.total {
			fh.sums = append(fh.sums, hex.EncodeToString(h.Sum(nil)))
			h = sha256.New()
		}
	}
	return nil
}

// streamAll fetches every streamed entry under the jobs limit. Without
// keep-going the first failure cancels the rest.
func streamAll(ctx context.Context, f io.WriterAt, streamed []*entry, fh *frontierHasher, o *writeOptions) map[v1.Hash]error {
	var mu sync.Mutex
	failed := map[v1.Hash]error{}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(gctx)
	g.SetLimit(o.jobs)
	bufs := sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
	for _, e := range streamed {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			bp := bufs.Get().(*[]byte)
			defer bufs.Put(bp)
			err := streamBlob(gctx, f, e, *bp, fh, o.progress)
			if err == nil {
				e.done.Store(true)
				fh.poke()
				o.progress.Event(Event{Kind: EventBlobDone, Digest: e.blob.Digest})
				return nil
			}
			if gctx.Err() != nil && ctx.Err() == nil && !o.keepGoing {
				return nil // cancelled because another blob failed
			}
			o.progress.Event(Event{Kind: EventBlobFailed, Digest: e.blob.Digest, Err: err})
			mu.Lock()
			failed[e.blob.Digest] = err
			mu.Unlock()
			if !o.keepGoing {
				cancel()
			}
			return nil
		})
	}
	_ = g.Wait()
	return failed
}

type progressWriter struct {
	w    io.Writer
	h    v1.Hash
	p    Progress
	n    int64
	last int64
}

func (pw *progressWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.n += int64(n)
	if pw.n-pw.last >= 256<<10 {
		pw.p.Event(Event{Kind: EventBytes, Digest: pw.h, Bytes: pw.n - pw.last})
		pw.last = pw.n
	}
	return n, err
}

func (pw *progressWriter) flush() {
	if pw.n > pw.last {
		pw.p.Event(Event{Kind: EventBytes, Digest: pw.h, Bytes: pw.n - pw.last})
		pw.last = pw.n
	}
}

// streamBlob copies one blob into its place, checking size and digest as
// the bytes pass.
func streamBlob(ctx context.Context, f io.WriterAt, e *entry, buf []byte, fh *frontierHasher, p Progress) (err error) {
	b := e.blob
	if b.Fetch != nil {
		return fetchBlob(ctx, f, e, fh, p)
	}
	rc, err := b.Open(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("blob %s from %s: %w", b.Digest, b.Origin, cerr)
		}
	}()
	h := sha256.New()
	placed := &placeWriter{w: io.NewOffsetWriter(f, e.dataOffset()), e: e, fh: fh}
	pw := &progressWriter{w: io.MultiWriter(placed, h), h: b.Digest, p: p}
	n, err := io.CopyBuffer(pw, io.LimitReader(ctxReader{ctx, rc}, b.Size), buf)
	pw.flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("blob %s from %s: after %d of %d bytes: %w", b.Digest, b.Origin, n, b.Size, err)
	}
	if n < b.Size {
		return fmt.Errorf("blob %s from %s: %w: got %d of %d bytes", b.Digest, b.Origin, ErrShortBlob, n, b.Size)
	}
	var one [1]byte
	if m, _ := io.ReadFull(rc, one[:]); m > 0 {
		return fmt.Errorf("blob %s from %s: %w: more than the %d bytes its descriptor gives", b.Digest, b.Origin, ErrDigestMismatch, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Hex {
		return fmt.Errorf("blob %s from %s: %w: content is sha256:%s", b.Digest, b.Origin, ErrDigestMismatch, got)
	}
	if c, ok := rc.(Committer); ok {
		if err := c.Commit(); err != nil {
			return fmt.Errorf("blob %s: %w", b.Digest, err)
		}
	}
	return nil
}

// placeWriter writes a blob into its place and tells the hasher how far
// the bytes in place reach.
type placeWriter struct {
	w  io.Writer
	e  *entry
	fh *frontierHasher
}

func (pw *placeWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.e.written.Add(int64(n))
	pw.fh.poke()
	return n, err
}

// Errors for content that does not match its descriptor.
var (
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrShortBlob      = errors.New("blob shorter than its descriptor")
)

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func newPartialFailure(plan *Plan, failed map[v1.Hash]error) *partialFailure {
	pf := &partialFailure{failedBlobs: failed}
	for _, im := range plan.Images {
		for _, h := range im.Blobs {
			if err, bad := failed[h]; bad {
				pf.failures = append(pf.failures, Failure{Image: describe(im.Image), Digest: h.String(), Err: err})
				break
			}
		}
	}
	if len(pf.failures) == 0 { // a blob no image needs failed
		for h, err := range failed {
			pf.failures = append(pf.failures, Failure{Image: "(unreferenced)", Digest: h.String(), Err: err})
		}
	}
	return pf
}

func describe(im Image) string {
	return im.Target + ":" + strings.Join(im.Tags, ",") + " (" + im.Source + ")"
}

// reducePlan drops the images that need a failed blob, and every blob only
// they needed; the kept blobs are read back from the first attempt's file.
func reducePlan(plan *Plan, failed map[v1.Hash]error, tb *tempBundle) (*Plan, error) {
	entries := map[v1.Hash]int64{}
	r, err := scan(tb.vs, tb.total)
	if err != nil {
		return nil, err
	}
	for name, e := range r {
		if h, err := ParseDigest("sha256:" + strings.TrimPrefix(name, BlobPrefix)); err == nil {
			entries[h] = e.offset
		}
	}
	out := &Plan{Base: plan.Base, BaseBlobs: plan.BaseBlobs, BaseImages: plan.BaseImages}
	keep := map[v1.Hash]bool{}
	for _, im := range plan.Images {
		ok := true
		for _, h := range im.Blobs {
			if _, bad := failed[h]; bad {
				ok = false
				break
			}
		}
		if ok {
			out.Images = append(out.Images, im)
			for _, h := range im.Blobs {
				keep[h] = true
			}
		}
	}
	if len(out.Images) == 0 {
		return nil, errors.New("no image could be exported")
	}
	for _, b := range plan.Blobs {
		if !keep[b.Digest] {
			continue
		}
		nb := b
		if nb.Data == nil {
			off, ok := entries[b.Digest]
			if !ok {
				return nil, fmt.Errorf("blob %s missing from the first attempt", b.Digest)
			}
			size := b.Size
			nb.Origin = "the first attempt"
			nb.Fetch = nil
			src := tb.vs
			nb.Open = func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(src, off, size)), nil
			}
		}
		out.Blobs = append(out.Blobs, nb)
	}
	return out, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
