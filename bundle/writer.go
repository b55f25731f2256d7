package bundle

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/internal/atomicfile"
	"github.com/ferry-airgap/ferry/internal/defaults"
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
	// Have names the inventories the plan was cut against (export --have).
	Have []HaveRef
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
	// BlobOffsets says where each stored blob's bytes start, counted from
	// the bundle's first byte (across volumes): a cache can read them back.
	BlobOffsets map[v1.Hash]int64
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
	partial      func(paths []string)
	// dockerPlatform: the platform manifest.json takes from indexes; ""
	// writes no manifest.json.
	dockerPlatform string
	deep           *DeepLimits // check layers against diff_ids (nil: no)
}

// WithDockerPlatform chooses the platform (os/arch[/variant]) whose
// manifest manifest.json takes from each multi-platform index, for docker
// load (default DefaultDockerPlatform); "" writes no manifest.json.
// Single-platform images are in it whatever their platform.
func WithDockerPlatform(p string) WriteOption {
	return func(o *writeOptions) { o.dockerPlatform = p }
}

// WithDeepCheck decompresses every layer once it is written and checks it
// against its image config's rootfs.diff_ids, within lim (see DeepLimits):
// an image whose layer does not match fails, as if the layer could not be
// fetched (with keep-going, the bundle holds the rest).
func WithDeepCheck(lim DeepLimits) WriteOption {
	return func(o *writeOptions) { o.deep = &lim }
}

// WithKeepPartial reports the temporary files of the bundle as soon as they
// are created, and leaves them in place (closed) when the write fails or is
// cancelled, instead of removing them: a cache can then take the blobs that
// were complete from them on the next run (see PartialBlobs). The caller
// removes them. After a successful write no temporary file is left.
func WithKeepPartial(created func(paths []string)) WriteOption {
	return func(o *writeOptions) { o.partial = created }
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

// WithClock fixes the creation time. Without it Write uses
// SOURCE_DATE_EPOCH when that is set (see SourceDateEpoch), else the
// current time.
func WithClock(now func() time.Time) WriteOption { return func(o *writeOptions) { o.now = now } }

// WithID fixes the bundle id (tests). Without it the id is derived from the
// bundle's content (see contentID): the same images and blobs give the same
// id, whoever writes them and whenever.
func WithID(id string) WriteOption { return func(o *writeOptions) { o.id = id } }

// WithFerryVersion records the writing ferry's version in ferry.json.
func WithFerryVersion(v string) WriteOption { return func(o *writeOptions) { o.ferryVersion = v } }

// Write writes plan as a bundle at path, atomically: the bundle is built in a
// temporary file beside path and renamed only when complete and verified,
// then path+".sha256" is written in sha256sum format. After a failure no file
// is left at path (an existing one is left as it was).
//
// The bytes written are a function of the plan's content, the creation time
// and the ferry version only: images, tags and blobs are put in a canonical
// order, the id is derived from the content, and every timestamp is the
// creation time (SOURCE_DATE_EPOCH, when set). Neither the jobs limit, nor
// the order in which blobs arrive, nor the order of the plan changes a byte.
func Write(ctx context.Context, path string, plan *Plan, opts ...WriteOption) (*Result, error) {
	o, err := newWriteOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := validatePlan(plan); err != nil {
		return nil, err
	}
	plan = canonicalPlan(plan)
	created := o.now().UTC().Truncate(time.Second)
	tb, plan, failures, err := writeKeepingGoing(ctx, path, plan, created, o)
	if err != nil {
		return &Result{Failures: failures}, err
	}
	res, err := finish(path, tb, plan, created, o)
	if err != nil {
		return nil, err
	}
	if len(failures) > 0 {
		res.Failures = failures
		return res, &partialFailure{failures: failures}
	}
	return res, nil
}

// newWriteOptions applies opts over the defaults.
func newWriteOptions(opts []WriteOption) (*writeOptions, error) {
	o := &writeOptions{jobs: defaults.Jobs, dockerPlatform: DefaultDockerPlatform, logger: slog.New(slog.DiscardHandler), progress: ProgressFunc(func(Event) {})}
	for _, opt := range opts {
		opt(o)
	}
	if o.jobs < 1 {
		o.jobs = 1
	}
	if o.dockerPlatform != "" {
		if _, err := parseDockerPlatform(o.dockerPlatform); err != nil {
			return nil, err
		}
	}
	if o.now == nil {
		epoch, ok, err := SourceDateEpoch()
		switch {
		case err != nil:
			return nil, err
		case ok:
			o.now = func() time.Time { return epoch }
		default:
			o.now = time.Now
		}
	}
	return o, nil
}

// writeKeepingGoing writes the temporary bundle. When images fail and
// keep-going is on, it writes the bundle again from what arrived intact,
// without the failed images, and returns the reduced plan with the failures.
func writeKeepingGoing(ctx context.Context, path string, plan *Plan, created time.Time, o *writeOptions) (*tempBundle, *Plan, []Failure, error) {
	tb, err := writeTemp(ctx, path, plan, created, o)
	if err == nil {
		return tb, plan, nil, nil
	}
	var pf *partialFailure
	if !errors.As(err, &pf) {
		return nil, nil, nil, err
	}
	defer tb.remove()
	if !o.keepGoing {
		return nil, nil, pf.failures, err
	}
	// The blobs are read back from the first file, so nothing is fetched twice.
	reduced, rerr := reducePlan(plan, pf.failedBlobs, tb)
	if rerr != nil {
		return nil, nil, pf.failures, fmt.Errorf("%w (%v)", err, rerr)
	}
	o.logger.Info("rewriting bundle without failed images", "failed", len(pf.failures), "kept", len(reduced.Images))
	quiet := *o
	quiet.progress = ProgressFunc(func(Event) {})
	// Shortcut: no second deep check. Premise: the kept layers are read
	// back from the first attempt's file, where they passed it, and the
	// rewrite checks their digests again as they are copied.
	quiet.deep = nil
	tb2, err := writeTemp(ctx, path, reduced, created, &quiet)
	if err != nil {
		return nil, nil, pf.failures, fmt.Errorf("rewriting bundle without failed images: %w", err)
	}
	return tb2, reduced, pf.failures, nil
}

// finish installs the finished bundle at path, writes the .sha256 and .sig
// sidecars, and describes the result.
func finish(path string, tb *tempBundle, plan *Plan, created time.Time, o *writeOptions) (*Result, error) {
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
	return describeResult(path, tb, plan, created, o), nil
}

// describeResult is the Result of the bundle tb installed at path.
func describeResult(path string, tb *tempBundle, plan *Plan, created time.Time, o *writeOptions) *Result {
	rec := buildRecord(plan, created, o)
	res := &Result{Path: path, Sidecar: path + ".sha256", Size: tb.total, Record: rec, Volumes: tb.finalNames(path), BlobOffsets: tb.offsets}
	if tb.sig != nil {
		res.Signature, res.SigSidecar = tb.sig, path+".sig"
	}
	if len(tb.sums) == 1 {
		res.SHA256 = tb.sums[0]
	}
	for _, b := range rec.Blobs {
		res.BlobBytes += b.Size
	}
	return res
}
