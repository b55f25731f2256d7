package bundle

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/inflate"
	"github.com/ferry-airgap/ferry/internal/oci"
)

// Defaults of DeepLimits.
const (
	// DefaultDeepMaxRatio: a layer may decompress to 2000 times its
	// compressed size. Most layers stay far below (text-heavy ones reach
	// 10–20×), but a file of zeros (a useradd lastlog) reaches gzip's own
	// ceiling, about 1032×: no well-formed gzip layer is refused for its
	// ratio, while a zstd bomb (zstd can exceed a million) is.
	DefaultDeepMaxRatio = 2000
	// DefaultDeepMaxSize: and to 64 GiB at most, whatever its ratio.
	DefaultDeepMaxSize = 64 << 30
	// deepRatioFloor: the ratio is not applied below 16 MiB of output, so
	// that a tiny layer of empty files (all tar headers) passes.
	deepRatioFloor = 16 << 20
	// zstdMaxWindow bounds the memory one zstd layer may make the decoder
	// hold (zstd --long=27; default levels use 8 MiB or less).
	zstdMaxWindow = 128 << 20
	// maxConfigSize bounds an image config read into memory.
	maxConfigSize = 16 << 20
)

// DeepLimits bound what one layer may decompress to, against decompression
// bombs: at most MaxRatio times its compressed size (or 16 MiB, whichever
// is more), and never more than MaxSize bytes.
type DeepLimits struct {
	MaxRatio int64
	MaxSize  int64
}

// DefaultDeepLimits are the limits verify --deep and export --deep use
// unless told otherwise.
func DefaultDeepLimits() DeepLimits {
	return DeepLimits{MaxRatio: DefaultDeepMaxRatio, MaxSize: DefaultDeepMaxSize}
}

// limit is how many bytes a layer of compressed size n may decompress to.
func (l DeepLimits) limit(n int64) int64 {
	out := l.MaxSize
	if l.MaxRatio > 0 && n <= l.MaxSize/l.MaxRatio {
		out = min(out, max(l.MaxRatio*n, deepRatioFloor))
	}
	return out
}

// Errors of the deep check.
var (
	// ErrDiffID: a layer's uncompressed content does not hash to the
	// diff_id its image config lists for it (containerd would refuse to
	// unpack it).
	ErrDiffID = errors.New("layer does not match its diff_id")
	// ErrUndecodable: a layer's compressed stream is not valid (a wrong
	// CRC-32, a cut or damaged stream): containerd could not unpack it.
	ErrUndecodable = errors.New("layer cannot be decompressed")
	// ErrBomb: a layer decompresses to more than DeepLimits allow.
	ErrBomb = errors.New("layer decompresses beyond the limits")
)

// layerExpect is one diff_id an image config expects of a layer, and the
// images (TARGET:TAGS) whose configs expect it.
type layerExpect struct {
	diffID v1.Hash
	config v1.Hash
	images []string
}

// deepSource reads what the deep check needs: small blobs (manifests,
// configs), verified, and which blobs are stored.
type deepSource interface {
	small(h v1.Hash, max int64) ([]byte, error)
	stored(h v1.Hash) bool
}

func (s readerSource) small(h v1.Hash, max int64) ([]byte, error) { return s.r.ReadBlob(h, max) }

// deepPlan is what the deep check must do: for each stored layer, the
// diff_ids expected of it; and the configs that cannot be paired with
// their layers.
type deepPlan struct {
	layers map[v1.Hash][]*layerExpect
	bad    map[v1.Hash]error    // config → why its diff_ids are unusable
	users  map[v1.Hash][]string // config → images
	memo   map[v1.Hash][]pairing
}

// pairing is one layer of a manifest and the diff_id its config lists.
type pairing struct {
	layer, diffID, config v1.Hash
}

// planDeep walks every image and pairs each stored layer with the diff_id
// its config lists. A manifest or config that cannot be read is left out
// (the digest check reports it); an image config whose diff_ids cannot be
// paired with the layers is recorded in bad. Artifacts (configs that are
// not image configs: charts, signatures) are not checked.
func planDeep(images []Image, src deepSource) *deepPlan {
	dp := &deepPlan{layers: map[v1.Hash][]*layerExpect{}, bad: map[v1.Hash]error{}, users: map[v1.Hash][]string{}, memo: map[v1.Hash][]pairing{}}
	for _, im := range images {
		name := im.Target + ":" + strings.Join(im.Tags, ",")
		h, err := ParseDigest(im.Digest)
		if err != nil {
			continue
		}
		var pairs []pairing
		dp.walk(h, types.MediaType(im.MediaType), 0, src, &pairs)
		for _, p := range pairs {
			dp.expect(p, name)
		}
	}
	return dp
}

func (dp *deepPlan) expect(p pairing, image string) {
	for _, e := range dp.layers[p.layer] {
		if e.diffID == p.diffID && e.config == p.config {
			if !slices.Contains(e.images, image) {
				e.images = append(e.images, image)
			}
			return
		}
	}
	dp.layers[p.layer] = append(dp.layers[p.layer], &layerExpect{diffID: p.diffID, config: p.config, images: []string{image}})
}

// walk collects the pairings of the manifest or index h (an image's root
// or an index's child).
func (dp *deepPlan) walk(h v1.Hash, mt types.MediaType, depth int, src deepSource, out *[]pairing) {
	if depth > maxDepth || !src.stored(h) {
		return
	}
	if memo, ok := dp.memo[h]; ok {
		*out = append(*out, memo...)
		return
	}
	data, err := src.small(h, MaxManifestSize)
	if err != nil {
		return
	}
	if mt == "" {
		if mt, err = oci.MediaTypeOf(data); err != nil {
			return
		}
	}
	switch oci.KindOf(mt) {
	case oci.KindIndex:
		idx, err := oci.Index(data)
		if err != nil {
			return
		}
		for _, c := range idx.Manifests {
			dp.walk(c.Digest, c.MediaType, depth+1, src, out)
		}
	case oci.KindManifest:
		m, err := oci.Manifest(data)
		if err != nil {
			return
		}
		pairs := dp.pairs(m, src)
		dp.memo[h] = pairs
		*out = append(*out, pairs...)
	}
}

// pairs pairs the stored layers of image manifest m with its config's
// diff_ids, by position (foreign layers and layers left to a base bundle
// count, but are not checked).
func (dp *deepPlan) pairs(m *v1.Manifest, src deepSource) []pairing {
	switch m.Config.MediaType {
	case types.DockerConfigJSON, types.OCIConfigJSON:
	default:
		return nil // an artifact, not an image
	}
	data, err := src.small(m.Config.Digest, maxConfigSize)
	if err != nil {
		return nil
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []v1.Hash `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		dp.bad[m.Config.Digest] = fmt.Errorf("%w: config %s: reading rootfs.diff_ids: %v", ErrDiffID, m.Config.Digest, err)
		return nil
	}
	ids := cfg.RootFS.DiffIDs
	if len(ids) != len(m.Layers) {
		dp.bad[m.Config.Digest] = fmt.Errorf("%w: config %s lists %d diff_ids for the manifest's %d layers", ErrDiffID, m.Config.Digest, len(ids), len(m.Layers))
		return nil
	}
	var out []pairing
	for i, l := range m.Layers {
		if !oci.IsForeign(l) && src.stored(l.Digest) {
			out = append(out, pairing{layer: l.Digest, diffID: ids[i], config: m.Config.Digest})
		}
	}
	return out
}

// mismatches compares a layer's actual diff_id with what each config
// expects, returning one error per expectation it fails (naming the
// images, the layer, the expected and the actual diff_id).
func mismatches(layer v1.Hash, actual v1.Hash, expects []*layerExpect) []deepProblem {
	var out []deepProblem
	for _, e := range expects {
		if e.diffID != actual {
			err := fmt.Errorf("%w: image %s: layer %s decompresses to %s, but config %s expects diff_id %s",
				ErrDiffID, strings.Join(e.images, ", "), layer, actual, e.config, e.diffID)
			out = append(out, deepProblem{images: e.images, err: err})
		}
	}
	return out
}

// deepProblem is one failed expectation of a layer.
type deepProblem struct {
	images []string
	err    error
}

// deepResult is what decompressing one layer found.
type deepResult struct {
	digest       string // hex SHA-256 of the compressed bytes
	diffID       v1.Hash
	uncompressed int64
}

// inflateLayer reads a layer's compressed bytes from r (size bytes) once:
// it hashes them (the blob's digest) and decompresses them, by their magic
// bytes as docker and containerd do (gzip, zstd, else a plain tar), into
// a second hash (the diff_id), stopping at lim's limit. progress, when
// not nil, receives the compressed bytes as they are read. Both hashes
// run on a helper goroutine while cores are idle (hashPipe).
func inflateLayer(ctx context.Context, r io.Reader, size int64, lim DeepLimits, progress io.Writer) (deepResult, error) {
	pipe := newHashPipe()
	defer pipe.close()
	ch := &pipedHash{p: pipe, h: sha256.New()}
	var tee io.Writer = ch
	if progress != nil {
		tee = io.MultiWriter(ch, progress)
	}
	br := bufio.NewReaderSize(io.TeeReader(ctxio.Reader(ctx, r), tee), 256<<10)
	head, _ := br.Peek(4)
	uh := &pipedHash{p: pipe, h: sha256.New()}
	var res deepResult
	var err error
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		res, err = inflateGzip(br, uh, size, lim)
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		res, err = inflateZstd(br, uh, size, lim)
	default:
		// A plain tar is its own uncompressed content: its diff_id is its
		// digest, so it is hashed once.
		var n int64
		n, err = io.Copy(io.Discard, br)
		res.uncompressed = n
	}
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, err
	}
	// What follows the compressed stream still belongs to the blob.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return res, fmt.Errorf("%w: reading: %v", ErrCorrupt, err)
	}
	res.digest = ch.sum()
	if res.diffID.Hex == "" {
		res.diffID = v1.Hash{Algorithm: "sha256", Hex: res.digest}
	}
	return res, nil
}

func inflateGzip(br *bufio.Reader, uh *pipedHash, size int64, lim DeepLimits) (deepResult, error) {
	return inflated(gunzipper{br}, uh, "gzip", size, lim)
}

// gunzipper decompresses a gzip layer with ferry's own inflater
// (internal/inflate), which accepts exactly what compress/gzip does, in
// about 0.7 of the time klauspost's inflater takes.
type gunzipper struct{ r io.Reader }

func (g gunzipper) WriteTo(w io.Writer) (int64, error) { return inflate.Gunzip(w, g.r) }

func inflateZstd(br *bufio.Reader, uh *pipedHash, size int64, lim DeepLimits) (deepResult, error) {
	// One goroutine per layer: the layers are decompressed in parallel. The
	// window (memory a frame may ask for) is capped at zstdMaxWindow.
	zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
	if err != nil {
		return deepResult{}, fmt.Errorf("%w: zstd: %v", ErrUndecodable, err)
	}
	defer zr.Close()
	return inflated(zr, uh, "zstd", size, lim)
}

// inflated hashes what the decompressor zr yields into uh, up to lim's
// limit for a layer of size compressed bytes. zr writes straight from its
// window (io.WriterTo, gzip's and zstd's): no copy but uh's own.
func inflated(zr io.WriterTo, uh *pipedHash, kind string, size int64, lim DeepLimits) (deepResult, error) {
	cw := &cappedWriter{w: uh, left: lim.limit(size)}
	n, err := zr.WriteTo(cw)
	if errors.Is(err, errCapped) {
		return deepResult{}, fmt.Errorf("%w: more than %d bytes from %d compressed; limits: %d× the compressed size (at least %d bytes) and %d bytes in all",
			ErrBomb, lim.limit(size), size, lim.MaxRatio, deepRatioFloor, lim.MaxSize)
	}
	if err != nil {
		return deepResult{}, fmt.Errorf("%w: %s: after %d bytes: %v", ErrUndecodable, kind, n, err)
	}
	return deepResult{diffID: v1.Hash{Algorithm: "sha256", Hex: uh.sum()}, uncompressed: n}, nil
}

var errCapped = errors.New("capped")

// cappedWriter writes at most left bytes into w, then fails.
type cappedWriter struct {
	w    io.Writer
	left int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, errCapped
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// planDeep plans the deep check of the bundle's images, recording a
// problem for every config whose diff_ids cannot be paired with its
// layers.
func (r *Reader) planDeep(rep *Report, probs problems, users map[v1.Hash][]string) *deepPlan {
	rep.Deep = true
	dp := planDeep(r.record.Images, readerSource{r})
	for cfg, err := range dp.bad {
		if len(users[cfg]) == 0 {
			probs.add(BlobName(cfg), "", err)
		}
		for _, name := range users[cfg] {
			probs.add(BlobName(cfg), name, err)
		}
	}
	return dp
}

// deepBlob reads layer h once: checks its digest, decompresses it within
// lim and compares its diff_id with what each config expects.
func (r *Reader) deepBlob(ctx context.Context, h v1.Hash, expects []*layerExpect, lim DeepLimits, p Progress) (deepResult, []deepProblem, error) {
	sr, err := r.Section(h)
	if err != nil {
		return deepResult{}, nil, err
	}
	pw := &progressWriter{w: io.Discard, h: h, p: p}
	res, err := inflateLayer(ctx, sr, sr.Size(), lim, pw)
	pw.flush()
	if err != nil {
		return res, nil, err
	}
	if res.digest != h.Hex {
		return res, nil, fmt.Errorf("%w: content is sha256:%s", ErrDigestMismatch, res.digest)
	}
	p.Event(Event{Kind: EventBlobDone, Digest: h})
	return res, mismatches(h, res.diffID, expects), nil
}
