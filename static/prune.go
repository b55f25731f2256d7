package static

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/serve"
)

// pruneOptions: WithPrune was given.
type pruneOptions struct {
	keep []*regexp.Regexp
	// base are the images the bundles carry by reference: a delta's (or
	// an inventory-cut bundle's) BaseImages, which it leaves out because
	// the tree already holds them (see baseClaims).
	base map[baseKey]bool
}

// baseKey is one tag of a base image under the name its target is
// served at (digest ""), or, for its source names, which a base image
// does not record, under any name with its digest (name "").
type baseKey struct{ name, tag, digest string }

// baseClaims lists the tags the bundles carry by reference: every tag of
// every BaseImage, under the name the tree serves its target at. A delta
// leaves out the images its base chain carried unchanged, so a prune with
// a delta keeps them when the tree holds them with the same digest.
func baseClaims(readers []*bundle.Reader, prefix string, sourceNames bool) map[baseKey]bool {
	prefix = strings.Trim(prefix, "/")
	out := map[baseKey]bool{}
	for _, rd := range readers {
		for _, bi := range rd.Record().BaseImages {
			name := bi.Target
			if prefix != "" {
				name = prefix + "/" + name
			}
			for _, tag := range bi.Tags {
				out[baseKey{name, tag, ""}] = true
				if sourceNames {
					out[baseKey{"", tag, bi.Digest}] = true
				}
			}
		}
	}
	return out
}

// WithPrune makes Unpack leave the tree holding exactly the tags the
// bundles carry, plus the tags a keep pattern matches, and remove what
// only the other tags referenced; see Prune in the package documentation.
// Each pattern is a Go regular expression matched against the whole tag
// and against the whole REPO:TAG (REPO as the tree serves it, prefix
// included): a tag is kept when it matches either, anchored at both ends.
// A pattern that does not compile wraps ErrOptions.
func WithPrune(keep ...string) Option {
	return func(o *options) {
		o.prune = &pruneOptions{}
		for _, k := range keep {
			re, err := regexp.Compile(`^(?:` + k + `)$`)
			if err != nil {
				o.err = fmt.Errorf("%w: --keep %q is not a regular expression: %v", ErrOptions, k, err)
				return
			}
			o.prune.keep = append(o.prune.keep, re)
		}
	}
}

// WithDryRun makes a pruning Unpack only say what would go: it writes
// nothing, removes nothing. Without WithPrune it is refused.
func WithDryRun(on bool) Option { return func(o *options) { o.dryRun = on } }

// PruneSummary says what a pruning Unpack removed (or, with DryRun, would
// remove). Names are REPO:TAG; manifests REPO@DIGEST; blobs the digests
// whose one copy in DIR/blobs/ goes.
type PruneSummary struct {
	DryRun bool `json:"dryRun"`
	// Tags are the tags removed; Kept those a --keep pattern kept that no
	// bundle carries.
	Tags []string `json:"tags"`
	Kept []string `json:"kept"`
	// Repositories are those left without tags: gone from the catalog.
	Repositories []string `json:"repositories"`
	Manifests    []string `json:"manifests"`
	Blobs        []string `json:"blobs"`
	// Files counts the files removed; BytesFreed the bytes of those whose
	// every link goes (a hard link's bytes are freed with its last name).
	Files      int   `json:"files"`
	BytesFreed int64 `json:"bytesFreed"`
	// Unknown are files under v2/ and blobs/ that ferry did not write:
	// left alone.
	Unknown []string `json:"unknown"`
}

// ErrNotFerryTree: --prune was given a DIR that holds files but no sign
// that ferry wrote it. It wraps ErrOptions (bad input, nothing done).
var ErrNotFerryTree = fmt.Errorf("%w: not a ferry tree", ErrOptions)

// checkPruneDir refuses to prune a DIR that holds something but neither
// ferry's journal nor ferry's nginx.conf: its files may be anyone's. A
// missing or empty DIR has nothing to prune.
func checkPruneDir(dir string) error {
	es, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(es) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotFerryTree, dir, err)
	}
	if st, err := os.Lstat(filepath.Join(dir, journalFile)); err == nil && st.Mode().IsRegular() {
		return nil
	}
	if _, ours, err := ferryConf(filepath.Join(dir, NginxConf)); err == nil && ours {
		return nil
	}
	return fmt.Errorf("%w: %s has no %s and no nginx.conf of ferry's: --prune removes files only from a tree ferry unpack --static wrote", ErrNotFerryTree, dir, journalFile)
}

// keptSets are what a repository keeps: its tags after the prune, and the
// manifests and blobs they reach.
type keptSets struct {
	tags      map[string]bool
	manifests map[v1.Hash]bool
	blobs     map[v1.Hash]bool // configs, layers, and manifests (placed under blobs/ too)
}

// prunePlan is what a prune removes, in the order it removes it: the tag
// files (after the tag lists were rewritten without them), then, once
// nginx.conf no longer names them, the files nothing kept references.
type prunePlan struct {
	kept     map[string]*keptSets
	tagFiles []string
	gcFiles  []string
	sum      PruneSummary
}

// planPrune decides what goes, reading the tree (inventory and manifests)
// and nothing else; it writes nothing. contents are the bundles'; held are
// the digests the nginx.conf on disk maps each tag to (heldDigests).
func planPrune(ctx context.Context, t *tree, contents []serve.Content, po *pruneOptions, held map[string]map[string]v1.Hash) (*prunePlan, error) {
	tf, err := inventory(t)
	if err != nil {
		return nil, err
	}
	tf.checkTags(t)
	pl := &prunePlan{kept: map[string]*keptSets{}}
	pl.sum.Unknown = tf.unknown
	byName := map[string]serve.Content{}
	for _, c := range contents {
		byName[c.Name] = c
	}
	names := map[string]bool{}
	for n := range tf.repos {
		names[n] = true
	}
	for n := range byName {
		names[n] = true
	}
	for _, n := range sortedSet(names) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k, err := pl.keepRepo(t, n, byName[n], tf.repos[n], po, held[n])
		if err != nil {
			return nil, err
		}
		pl.kept[n] = k
	}
	pl.listFiles(tf)
	if err := pl.count(t); err != nil {
		return nil, err
	}
	return pl, nil
}

// checkTags moves to unknown the files named like tags that are not
// ferry's: a tag file ferry writes holds a manifest the repository's
// manifests folder holds by digest (scanTree's rule). A README in a
// manifests folder is a name the tag grammar allows; it is not removed.
func (tf *treeFiles) checkTags(t *tree) {
	for _, rf := range tf.repos {
		for tag, rel := range rf.tags {
			p, err := t.abs(rel)
			if err == nil {
				var data []byte
				if data, err = readSmall(p, bundle.MaxManifestSize); err == nil {
					sum := sha256.Sum256(data)
					h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
					if _, ok := rf.manifests[h]; ok {
						rf.tagDigests[tag] = h
						continue
					}
				}
			}
			delete(rf.tags, tag)
			tf.unknown = append(tf.unknown, rel)
		}
	}
	sort.Strings(tf.unknown)
}

// keepRepo decides what repository n keeps. Its tags after the prune are
// those the bundles carry (c) and those of the tree (rf) a keep pattern
// matches; the manifests and blobs kept are the bundles' for their tags
// and, for the tree's kept tags, what walking their manifests reaches.
func (pl *prunePlan) keepRepo(t *tree, n string, c serve.Content, rf *repoFiles, po *pruneOptions, held map[string]v1.Hash) (*keptSets, error) {
	k := &keptSets{tags: map[string]bool{}, manifests: map[v1.Hash]bool{}, blobs: map[v1.Hash]bool{}}
	for tag := range c.Tags {
		k.tags[tag] = true
	}
	for h := range c.Manifests {
		k.manifests[h], k.blobs[h] = true, true
	}
	for _, h := range append(append([]v1.Hash{}, c.Blobs...), c.Missing...) {
		k.blobs[h] = true
	}
	if rf == nil {
		return k, nil
	}
	w := walker{t: t, repo: n, rf: rf, k: k}
	// A tag a delta carries by reference (its base carried it) stays as
	// the tree holds it; under a source name (--source-names), only while
	// it names the digest the base carried, since a base image records no
	// source. TestPruneWithDelta.
	for _, tag := range sortedKeysOf(rf.tags) {
		if k.tags[tag] {
			continue
		}
		d := rf.tagDigests[tag].String()
		byRef := po.base[baseKey{n, tag, ""}] || po.base[baseKey{"", tag, d}]
		if byRef || keepMatch(po.keep, n, tag) {
			k.tags[tag] = true
			if !byRef {
				pl.sum.Kept = append(pl.sum.Kept, n+":"+tag)
			}
			if err := w.walkFile(rf.tags[tag]); err != nil {
				return nil, err
			}
		}
	}
	// Premise: nginx serves a tag from the digest its loaded nginx.conf
	// maps the tag to, and nginx was reloaded after the previous run, so
	// that the map it has loaded is the one on disk now (held). A kept tag
	// that moves in this run is served from its old manifest until nginx
	// reloads: that manifest, and what it reaches, stay until the next
	// prune. Broken by TestPruneMovedTagKeepsOldManifest.
	for tag, h := range held {
		if k.tags[tag] {
			if err := w.walk(h); err != nil {
				return nil, err
			}
		}
	}
	// The referrers of a kept manifest stay with it: a tag sha256-HEX
	// (the referrers tag schema) is kept while manifest HEX is, and the
	// referrers index it names is walked, until nothing more is added.
	for changed := true; changed; {
		changed = false
		for _, tag := range sortedKeysOf(rf.tags) {
			h, err := bundle.ParseDigest(strings.Replace(tag, "-", ":", 1))
			if k.tags[tag] || err != nil || oci.DigestTag(h) != tag || !k.manifests[h] {
				continue
			}
			k.tags[tag], changed = true, true
			if err := w.walkFile(rf.tags[tag]); err != nil {
				return nil, err
			}
		}
	}
	return k, nil
}

// keepMatch: a pattern matches the whole tag, or the whole REPO:TAG.
func keepMatch(keep []*regexp.Regexp, repo, tag string) bool {
	for _, re := range keep {
		if re.MatchString(tag) || re.MatchString(repo+":"+tag) {
			return true
		}
	}
	return false
}

// walker marks what a repository's kept manifests reach, reading them
// from the tree.
type walker struct {
	t    *tree
	repo string
	rf   *repoFiles
	k    *keptSets
	seen map[v1.Hash]bool
}

// walkFile walks the manifest a tag file holds.
func (w *walker) walkFile(rel string) error {
	p, err := w.t.abs(rel)
	if err != nil {
		return err
	}
	data, err := readSmall(p, bundle.MaxManifestSize)
	if err != nil {
		return fmt.Errorf("%w: reading kept tag %s: %v; nothing was removed", ErrTree, rel, err)
	}
	sum := sha256.Sum256(data)
	return w.walkData(v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, data)
}

// walk marks manifest h and walks it, when the repository holds it. A
// manifest the tree does not hold reaches nothing the tree holds through
// it. Premise: the tree's manifests/sha256:HEX file, if there, is manifest
// HEX (it is read and hashed: a damaged one stops the prune).
func (w *walker) walk(h v1.Hash) error {
	if w.seen[h] {
		return nil
	}
	w.k.manifests[h], w.k.blobs[h] = true, true
	rel, ok := w.rf.manifests[h]
	if !ok {
		return nil
	}
	p, err := w.t.abs(rel)
	if err != nil {
		return err
	}
	data, err := readSmall(p, bundle.MaxManifestSize)
	if err != nil {
		return fmt.Errorf("%w: reading kept manifest %s of %s: %v; nothing was removed", ErrTree, h, w.repo, err)
	}
	return w.walkData(h, data)
}

// refsDoc is every field of a manifest, index or artifact manifest that
// names another blob or manifest.
type refsDoc struct {
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Blobs     []v1.Descriptor `json:"blobs"`
	Manifests []v1.Descriptor `json:"manifests"`
	Subject   *v1.Descriptor  `json:"subject"`
}

// walkData marks what manifest h (its bytes: data) references: config,
// layers and blobs as blobs; index children and the subject as manifests,
// walked in turn.
func (w *walker) walkData(h v1.Hash, data []byte) error {
	if w.seen == nil {
		w.seen = map[v1.Hash]bool{}
	}
	sum := sha256.Sum256(data)
	if h.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != h.Hex {
		return fmt.Errorf("%w: kept manifest %s of %s is damaged (its content is sha256:%s); nothing was removed: unpack a bundle that holds it to repair it", ErrTree, h, w.repo, hex.EncodeToString(sum[:]))
	}
	w.seen[h] = true
	w.k.manifests[h], w.k.blobs[h] = true, true
	var d refsDoc
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("%w: kept manifest %s of %s: %v; nothing was removed", ErrTree, h, w.repo, err)
	}
	if d.Config != nil {
		w.k.blobs[d.Config.Digest] = true
	}
	for _, l := range append(d.Layers, d.Blobs...) {
		w.k.blobs[l.Digest] = true
	}
	children := append([]v1.Descriptor{}, d.Manifests...)
	if d.Subject != nil {
		children = append(children, *d.Subject)
	}
	for _, c := range children {
		if err := w.walk(c.Digest); err != nil {
			return err
		}
	}
	return nil
}

// listFiles lists the files to remove: tag files and their pages, then
// referrers, manifests and blob links the kept sets do not name, then the
// store's copies no repository keeps. A repository left without tags
// loses its tag list and pages too.
func (pl *prunePlan) listFiles(tf *treeFiles) {
	storeKept := map[v1.Hash]bool{}
	for _, n := range sortedKeysOf(tf.repos) {
		rf, k := tf.repos[n], pl.kept[n]
		for _, tag := range sortedKeysOf(rf.tags) {
			if !k.tags[tag] {
				pl.sum.Tags = append(pl.sum.Tags, n+":"+tag)
				pl.tagFiles = append(pl.tagFiles, rf.tags[tag])
				pl.tagFiles = append(pl.tagFiles, rf.pages[tag]...)
			}
		}
		if len(k.tags) == 0 {
			pl.sum.Repositories = append(pl.sum.Repositories, n)
			pl.tagFiles = appendNew(pl.tagFiles, rf.lists)
		}
		for _, h := range sortedHashes(rf.referrers) {
			if !k.tags[oci.DigestTag(h)] {
				pl.gcFiles = append(pl.gcFiles, rf.referrers[h])
			}
		}
		for _, h := range sortedHashes(rf.manifests) {
			if !k.manifests[h] {
				pl.sum.Manifests = append(pl.sum.Manifests, n+"@"+h.String())
				pl.gcFiles = append(pl.gcFiles, rf.manifests[h])
			}
		}
		for _, h := range sortedHashes(rf.blobs) {
			if !k.blobs[h] {
				pl.gcFiles = append(pl.gcFiles, rf.blobs[h])
			}
		}
	}
	for _, k := range pl.kept {
		for h := range k.blobs {
			storeKept[h] = true
		}
	}
	// Premise: a blob is unreferenced when no kept manifest of any
	// repository names it (nor any bundle of this run): the store's copy
	// is only ever reached through a repository's files. Broken by
	// TestPruneSharedBlobStays (a layer two repositories share).
	for _, h := range sortedHashes(tf.store) {
		if !storeKept[h] {
			pl.sum.Blobs = append(pl.sum.Blobs, h.String())
			pl.gcFiles = append(pl.gcFiles, tf.store[h])
		}
	}
}

// appendNew appends the paths of add that out does not hold yet.
func appendNew(out, add []string) []string {
	have := map[string]bool{}
	for _, p := range out {
		have[p] = true
	}
	for _, p := range add {
		if !have[p] {
			have[p] = true
			out = append(out, p)
		}
	}
	return out
}

// count fills Files and BytesFreed: a file's bytes are freed when every
// link of its inode is among the files removed.
func (pl *prunePlan) count(t *tree) error {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]int{}
	for _, rel := range append(append([]string{}, pl.tagFiles...), pl.gcFiles...) {
		p, err := t.abs(rel)
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrTree, err)
		}
		pl.sum.Files++
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			pl.sum.BytesFreed += st.Size()
			continue
		}
		id := inode{uint64(sys.Dev), uint64(sys.Ino)} //nolint:unconvert // types differ by platform
		seen[id]++
		if uint64(seen[id]) == uint64(sys.Nlink) { //nolint:unconvert // types differ by platform
			pl.sum.BytesFreed += st.Size()
		}
	}
	return nil
}

// heldDigests reads the tag map of the nginx.conf on disk: for each
// repository, the digest each tag is served from. Lines it cannot read
// are skipped (a conf ferry did not write names nothing).
func heldDigests(t *tree) map[string]map[string]v1.Hash {
	out := map[string]map[string]v1.Hash{}
	f, err := os.Open(filepath.Join(t.root, NginxConf))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := heldLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		key := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(m[1], "~^"), "$"), `\`, "")
		rest, ok := strings.CutPrefix(key, "/v2/")
		i := strings.LastIndex(rest, "/manifests/")
		h, err := bundle.ParseDigest(m[2])
		if !ok || i < 0 || err != nil {
			continue
		}
		name, tag := rest[:i], rest[i+len("/manifests/"):]
		if out[name] == nil {
			out[name] = map[string]v1.Hash{}
		}
		out[name][tag] = h
	}
	return out
}

// heldLine is one line of the tag map: "KEY" "sha256:HEX"; (a regex key
// starts with ~^ and ends with $, its dots escaped).
var heldLine = regexp.MustCompile(`^\s*"(~?\^?/v2/[^"]+)" "(sha256:[0-9a-f]{64})";\s*$`)

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedHashes(m map[v1.Hash]string) []v1.Hash {
	out := make([]v1.Hash, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
