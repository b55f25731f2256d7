package static

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/atomicfile"
	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/writeback"
)

// Where things live inside DIR.
const (
	storeDir    = "blobs/sha256"
	stateDir    = ".ferry"
	journalFile = ".ferry/journal.json"
	lockFile    = ".ferry/lock"
	tmpPrefix   = ".ferry-tmp-"
	// NginxConf is the name of the generated nginx configuration in DIR.
	NginxConf = "nginx.conf"
)

// ErrTree: DIR cannot take the bundles as they are (a symbolic link in the
// way, names that collide, a base blob a delta needs that DIR lacks).
var ErrTree = errors.New("static tree")

// stamp identifies a file's state cheaply. The journal records a stamp
// only where hashed took it: a stat of the open file taken before its bytes
// were read and found to hash to the digest, at least settle after the
// file's last change. A later run trusts the file without reading it when
// its stamp is the same in every field.
//
// Premise (the shortcut the journal takes): the file's content cannot
// change without its size, modification time, change time (ctime), inode
// or device changing. The modification time alone proves nothing (touch
// -r, rsync --inplace -t and os.Chtimes put it back); the ctime is set by
// the kernel on every write, truncation, link, rename and utimes, and no
// program can set it. Where the platform gives no ctime or inode
// (stamp_other.go), or the filesystem keeps no change time (FAT, exFAT:
// fsKeepsCtime), the journal vouches for nothing and every file is hashed.
// Tests that break the premise: TestJournalSameSizeEdit and
// TestJournalSameSizeEditCopies (same size, mtime put back),
// TestJournalDeletedTruncatedMoved, TestJournalWithoutCtime, and
// test/TestStaticShortcutJournal through the binary and nginx.
type stamp struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	MTime  int64  `json:"mtime"` // nanoseconds
	CTime  int64  `json:"ctime,omitempty"`
	Inode  uint64 `json:"inode,omitempty"`
	Device uint64 `json:"device,omitempty"`
}

// usable: the stamp can vouch for a file (it has the fields that change
// with the content; a journal of an older ferry has no ctime).
func (s stamp) usable() bool { return s.Inode != 0 && s.CTime != 0 }

// settleTime is how long after its last change a file's stamp may be
// recorded. Filesystems keep times at a coarse grain (the kernel's tick;
// one or two seconds on some), so a change made in the same grain as the
// stat that preceded the hash would leave the ctime as it was: a file
// changed less than settleTime before it is hashed is hashed again on the
// next run instead (git calls such entries racily clean).
const settleTime = 2 * time.Second

// journal is DIR/.ferry/journal.json: files verified, and the media type
// of each manifest (which its bytes may not declare).
type journal struct {
	Version    int               `json:"version"`
	Files      map[string]stamp  `json:"files"`
	MediaTypes map[string]string `json:"mediaTypes"`
}

// tree is an open DIR: locked, with its journal in memory.
type tree struct {
	root string
	lock *os.File

	mu      sync.Mutex
	j       journal
	dirs    map[string]bool // relative directories known to be real
	copying bool            // hard links failed once: copy from then on
	// trust: the journal may vouch for files (fsKeepsCtime); settle is
	// settleTime (tests shorten it).
	trust  bool
	settle time.Duration
}

// openTree creates DIR if needed, takes its lock and reads its journal. A
// journal that cannot be read is started afresh: files are then checked by
// hashing, which is slower but as sound.
func openTree(dir string) (*tree, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("%w: creating %s: %v", ErrTree, root, err)
	}
	t := &tree{root: root, dirs: map[string]bool{"": true}, trust: fsKeepsCtime(root), settle: settleTime}
	for _, d := range []string{stateDir, "v2", "blobs", storeDir} {
		if err := t.mkdirs(d); err != nil {
			return nil, err
		}
	}
	lf, err := os.OpenFile(filepath.Join(root, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTree, err)
	}
	if err := lockFileNB(lf); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("%w: %s is being written by another ferry unpack (%v)", ErrTree, root, err)
	}
	t.lock = lf
	for _, d := range []string{"", stateDir, storeDir} {
		removeTemps(filepath.Join(root, d))
	}
	t.j = journal{Version: 1, Files: map[string]stamp{}, MediaTypes: map[string]string{}}
	if data, err := os.ReadFile(filepath.Join(root, journalFile)); err == nil {
		var j journal
		if json.Unmarshal(data, &j) == nil && j.Version == 1 && j.Files != nil {
			if j.MediaTypes == nil {
				j.MediaTypes = map[string]string{}
			}
			t.j = j
		}
	}
	return t, nil
}

// close saves the journal (what was verified stays verified, even after a
// failure) and releases the lock.
func (t *tree) close() error {
	t.mu.Lock()
	data, err := json.Marshal(t.j)
	t.mu.Unlock()
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(t.root, journalFile), data, 0o644)
	}
	if cerr := t.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// release gives up the lock without saving the journal (nothing changed).
func (t *tree) release() { _ = t.lock.Close() }

// abs turns a relative path built from checked components into a path
// under the root, refusing anything that would leave it.
func (t *tree) abs(rel string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(rel))
	if rel == "" || filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: path %q leaves the tree", ErrTree, rel)
	}
	return filepath.Join(t.root, clean), nil
}

// mkdirs creates the directory rel and its parents, refusing a symbolic
// link or a file on the way, so that nothing is written outside the root.
func (t *tree) mkdirs(rel string) error {
	t.mu.Lock()
	known := t.dirs[rel]
	t.mu.Unlock()
	if known {
		return nil
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		p, err := t.abs(sub)
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: %v", ErrTree, err)
			}
			continue
		case err != nil:
			return fmt.Errorf("%w: %v", ErrTree, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %s is a symbolic link; ferry does not follow links inside the tree", ErrTree, p)
		case !st.IsDir():
			return fmt.Errorf("%w: %s is a file where a directory is needed (a tag and a repository path collide?)", ErrTree, p)
		}
	}
	t.mu.Lock()
	t.dirs[rel] = true
	t.mu.Unlock()
	return nil
}

// storeRel is where blob h's one copy lives.
func storeRel(h v1.Hash) string { return storeDir + "/" + h.Hex }

// current reports whether the file at rel holds exactly blob h of size
// bytes: its stamp matches the journal's, or else its content hashes to h
// (then the stamp is recorded). A missing file is not current.
func (t *tree) current(ctx context.Context, rel string, h v1.Hash, size int64) (bool, error) {
	if ok, err := t.stamped(rel, h, size); err != nil || ok {
		return ok, err
	}
	return t.hashed(ctx, rel, h, size)
}

// stamped reports whether the journal vouches for the file at rel: the
// stamp it recorded when ferry last verified the file is unchanged.
func (t *tree) stamped(rel string, h v1.Hash, size int64) (bool, error) {
	p, err := t.abs(rel)
	if err != nil {
		return false, err
	}
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrTree, err)
	}
	if !st.Mode().IsRegular() || st.Size() != size {
		return false, nil
	}
	now := stampOf(st, h)
	t.mu.Lock()
	was, ok := t.j.Files[rel]
	t.mu.Unlock()
	return t.trust && ok && was == now && now.usable(), nil
}

// hashed reports whether the file at rel hashes to h, recording its stamp
// when it does. A missing or damaged file is not current (it is written
// again); only an error of the tree itself is returned.
func (t *tree) hashed(ctx context.Context, rel string, h v1.Hash, size int64) (bool, error) {
	p, err := t.abs(rel)
	if err != nil {
		return false, err
	}
	if st, err := os.Lstat(p); err != nil || !st.Mode().IsRegular() {
		return false, nil // missing, or a link or folder: written again
	}
	f, err := os.OpenFile(p, os.O_RDONLY|openNoFollow, 0)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	// The stat comes before the read: a change made while the bytes are
	// read moves the ctime past the one recorded.
	before := time.Now()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() != size {
		return false, nil
	}
	if _, err := io.Copy(io.Discard, ctxio.Reader(ctx, bundle.NewVerifier(f, h, size))); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	if s := stampOf(st, h); s.usable() && time.Unix(0, s.CTime).Before(before.Add(-t.settle)) {
		t.record(rel, s)
	} else {
		t.forget(rel) // changed too recently to be sure of: hashed next time
	}
	return true, nil
}

func (t *tree) record(rel string, s stamp) {
	t.mu.Lock()
	t.j.Files[rel] = s
	t.mu.Unlock()
}

func (t *tree) forget(rel string) {
	t.mu.Lock()
	delete(t.j.Files, rel)
	t.mu.Unlock()
}

// tempName is a fresh name beside rel that no tag or digest can take
// (neither starts with a dot).
func tempName(p string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(filepath.Dir(p), tmpPrefix+hex.EncodeToString(b[:]))
}

// place makes rel hold blob h, linked to its copy in the store (copied
// where the filesystem has no hard links). It reports whether it wrote.
func (t *tree) place(ctx context.Context, rel string, h v1.Hash, size int64) (bool, error) {
	src, _ := t.abs(storeRel(h))
	dst, err := t.abs(rel)
	if err != nil {
		return false, err
	}
	if st, err := os.Lstat(dst); err == nil {
		if st.IsDir() {
			return false, fmt.Errorf("%w: %s is a directory where a file is needed (a tag and a repository path collide?)", ErrTree, dst)
		}
		if sst, err := os.Lstat(src); err == nil && os.SameFile(st, sst) {
			return false, nil
		}
		// Where links work, anything else is linked again (cheaper than
		// hashing it); a copy is kept if it is current.
		t.mu.Lock()
		copying := t.copying
		t.mu.Unlock()
		if copying && st.Mode().IsRegular() {
			if ok, err := t.current(ctx, rel, h, size); err != nil || ok {
				return false, err
			}
		}
	}
	if err := t.mkdirs(filepath.ToSlash(filepath.Dir(rel))); err != nil {
		return false, err
	}
	tmp := tempName(dst)
	t.mu.Lock()
	copying := t.copying
	t.mu.Unlock()
	if !copying {
		err := os.Link(src, tmp)
		if err == nil {
			return true, t.rename(tmp, dst, rel)
		}
		if !linkUnsupported(err) {
			return false, fmt.Errorf("%w: linking %s: %v", ErrTree, rel, err)
		}
		t.mu.Lock()
		t.copying = true
		t.mu.Unlock()
	}
	if err := copyFile(ctx, src, tmp, h, size); err != nil {
		return false, fmt.Errorf("copying %s to %s: %w", h, rel, err)
	}
	// No stamp is recorded for what was just written: the rename moved
	// its ctime after the bytes were checked (see stamp).
	return true, t.rename(tmp, dst, rel)
}

func (t *tree) rename(tmp, dst, rel string) error {
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%w: writing %s: %v", ErrTree, rel, err)
	}
	t.forget(rel)
	return nil
}

// linkUnsupported tells the errors of a filesystem (or a link count) that
// cannot take one more hard link, where a copy will do.
func linkUnsupported(err error) bool {
	for _, e := range []error{syscall.EPERM, syscall.ENOTSUP, syscall.EOPNOTSUPP, syscall.EMLINK, syscall.EXDEV, syscall.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// copyFile copies src (blob h) to a new file dst, checking the digest on
// the way; dst is removed after a failure.
func copyFile(ctx context.Context, src, dst string, h v1.Hash, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeNew(dst, ctxio.Reader(ctx, in), h, size, nil)
}

// writeNew writes r, which must be the size bytes of blob h, to a new file
// at p (mode 0644), synced, checking the digest as it goes
// (bundle.CopyVerified); it removes the file after a failure. counted, if
// not nil, receives byte counts.
func writeNew(p string, r io.Reader, h v1.Hash, size int64, counted func(int64)) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(p)
		return err
	}
	if err := f.Chmod(0o644); err != nil { // whatever the umask
		return fail(err)
	}
	// The kernel writes the file out while it is copied (every
	// writeback.Chunk bytes), so the Sync below has little left to do.
	var w io.Writer = &writeback.Writer{F: f}
	if counted != nil {
		w = countWriter{w, counted}
	}
	if _, err := bundle.CopyVerified(w, r, h, size); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(p)
		return err
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n func(int64)
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n(int64(n))
	return n, err
}

// writeIfChanged writes small generated files (tags/list, the catalog,
// nginx.conf) atomically, and only when their bytes change.
func (t *tree) writeIfChanged(rel string, data []byte) (bool, error) {
	p, err := t.abs(rel)
	if err != nil {
		return false, err
	}
	if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && st.Size() == int64(len(data)) {
		if old, err := os.ReadFile(p); err == nil && string(old) == string(data) {
			return false, nil
		}
	}
	if err := t.mkdirs(filepath.ToSlash(filepath.Dir(rel))); err != nil {
		return false, err
	}
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return false, fmt.Errorf("%w: writing %s: %v", ErrTree, rel, err)
	}
	return true, nil
}

// Name grammar of the distribution spec, checked again here whatever the
// bundle reader checked: these strings become paths.
var (
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

func validName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for _, c := range strings.Split(name, "/") {
		if !componentRE.MatchString(c) {
			return false
		}
	}
	return true
}

func validTag(tag string) bool { return tagRE.MatchString(tag) }
